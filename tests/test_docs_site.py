"""The documentation reads right both ways: as raw Markdown (on GitHub, in an editor) and
as the built site, opened from the file system without a server."""

from __future__ import annotations

import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
_SNIPPET = re.compile(r"^\s*-+8<-+\s")


def code_blocks(document: Path) -> list[tuple[int, list[str]]]:
    """Each fenced block of ``document``: the line of its opening fence and its lines."""
    blocks: list[tuple[int, list[str]]] = []
    opening: tuple[int, str] | None = None
    body: list[str] = []
    for number, line in enumerate(document.read_text(encoding="utf-8").splitlines(), 1):
        fence = _FENCE.match(line)
        if opening is None:
            if fence:
                opening, body = (number, fence[1]), []
        elif fence and line.strip() == fence[1] and fence[1].startswith(opening[1]):
            blocks.append((opening[0], body))
            opening = None
        else:
            body.append(line)
    return blocks


def test_no_code_block_includes_a_file() -> None:
    """Read raw, an include line (``--8<-- "path"``) shows as the code itself."""
    for document in DOCUMENTS:
        for line, body in code_blocks(document):
            assert not any(_SNIPPET.match(text) for text in body), (
                f"{document.relative_to(ROOT)}:{line}: a code block includes a file; "
                "write the code out (and test that it matches the file)"
            )


def test_the_complete_test_file_on_the_testing_page_is_examples_test_lobby() -> None:
    """docs/testing.md shows examples/test_lobby.py written out; the suite runs the file
    (tests/test_examples.py) and the copy (tests/test_docs.py), and this keeps the two one."""
    page = (ROOT / "docs/testing.md").read_text(encoding="utf-8")
    section = page.partition("\n## A complete test file\n")[2].partition("\n## ")[0]
    shown = re.search(r"^```python\n(.*?)^```$", section, re.S | re.M)
    assert shown, "docs/testing.md: no python block under 'A complete test file'"
    example = (ROOT / "examples/test_lobby.py").read_text(encoding="utf-8")
    assert shown[1] == example, "docs/testing.md and examples/test_lobby.py differ"


class Links(HTMLParser):
    """The addresses a page links to or loads (href and src)."""

    def __init__(self) -> None:
        super().__init__()
        self.addresses: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.addresses += [value for name, value in attrs if name in ("href", "src") and value]


def test_the_built_site_works_from_the_file_system(tmp_path: Path) -> None:
    """Every page links to files, not to directories (which file:// shows as listings)."""
    pytest.importorskip("mkdocs", reason="the docs extra: python -m pip install '.[docs]'")
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(site)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=300,
    )
    # (404.html is what a web server answers for an unknown address, never opened as a file)
    pages = sorted(page for page in site.rglob("*.html") if page.name != "404.html")
    assert len(pages) > 10
    broken = []
    for page in pages:
        links = Links()
        links.feed(page.read_text(encoding="utf-8"))
        for address in links.addresses:
            parts = urlsplit(address)
            if parts.scheme or parts.netloc or not parts.path:
                continue  # another site, or an anchor on this page
            target = (page.parent / unquote(parts.path)).resolve()
            if not target.is_file():
                broken.append(f"{page.relative_to(site)}: {address}")
    assert not broken, f"links that are no file: {broken[:20]}"
