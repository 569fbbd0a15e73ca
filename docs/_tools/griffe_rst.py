"""A griffe extension for the API reference: the docstrings are written for Sphinx-style
readers (``:class:`Relay```, ``text::`` before a literal block, as trio's are), and
mkdocstrings renders Markdown. This turns the roles into inline code and ``::`` into
``:`` so that the reference reads cleanly; the docstrings themselves stay as they are.
Nothing here is part of the package: mkdocs.yml loads it by path.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

# :class:`~trio_wsproxy.relay.relay.Relay` -> `Relay`; :meth:`Client.send` -> `Client.send`
_ROLE = re.compile(r":(?:py:)?(?:class|exc|func|meth|attr|data|mod|obj|const):`(~?)([^`]+)`")
# "...an ``async with`` block::" ends a paragraph that introduces a literal block.
_LITERAL_INTRO = re.compile(r"(\S)::$", re.MULTILINE)
_LONE_LITERAL_MARK = re.compile(r"^[ \t]*::[ \t]*$", re.MULTILINE)


def _role(match: re.Match[str]) -> str:
    target = match.group(2)
    if match.group(1):  # "~" shows the last component only, as Sphinx does
        target = target.rsplit(".", 1)[-1]
    return f"`{target}`"


def markdown_docstring(text: str) -> str:
    """The docstring ``text`` with Sphinx roles and literal-block markers made Markdown."""
    text = _ROLE.sub(_role, text)
    text = _LONE_LITERAL_MARK.sub("", text)
    return _LITERAL_INTRO.sub(r"\1:", text)


class SphinxRolesToMarkdown(griffe.Extension):
    """Rewrite every loaded object's docstring with :func:`markdown_docstring`."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = markdown_docstring(obj.docstring.value)
