"""Every fenced code block of README.md and docs/*.md is run or checked, so that the
examples cannot rot. The rules, by language tag, are written down for contributors in
docs/contributing.md ("How the examples are checked"); keep the two in step.

One test per block, named after its file and the line of its opening fence
(``docs/client.md:17``). Python examples run as programs of their own, several at once
(each in its own subprocess), so the file takes seconds rather than a minute.
"""

from __future__ import annotations

import argparse
import configparser
import contextlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

import trio_wsproxy
from trio_wsproxy import RelayConfig, decode_envelope, encode_envelope, open_relay
from trio_wsproxy._cli import build_parser, config_from_args

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# Generous for one example (they take about a second), short enough that a hang fails
# the run instead of stalling it.
EXAMPLE_TIMEOUT = 30.0

# Tags whose blocks are shown, not run, and why (docs/contributing.md lists the same).
NOT_EXECUTABLE = {
    "text": "diagrams and program output",
    "csharp": "needs .NET, which the test machine does not have",
    "yaml": "no YAML parser among the test dependencies",
}
SHELL = frozenset({"sh", "bash", "shell", "console"})
EXECUTED = frozenset({"python", "pycon"})
CHECKED = frozenset({"json", "ini", "prometheus", "toml", "js"}) | SHELL

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_NOT_RUN = re.compile(r"^<!--\s*not-run:\s*(?P<reason>.*?)\s*-->$")
_SNIPPET = re.compile(r'^[ \t]*-+8<-+[ \t]+"(?P<path>[^"]+)"[ \t]*$')
_TEST_FUNCTION = re.compile(r"^(async )?def test_\w+", re.MULTILINE)


@attrs.frozen
class Block:
    """One fenced code block: where it is, its language tag and its code."""

    path: str  # relative to the repository root, e.g. docs/client.md
    line: int  # 1-based line of the opening fence
    language: str
    code: str
    not_run: str | None = None  # the reason given by a <!-- not-run: ... --> marker

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


def _blocks(document: Path) -> Iterator[Block]:
    """The fenced blocks of ``document``; an unfenced (indented) code block, or a fence
    without a language tag, is an error: the rules go by the tag."""
    name = document.relative_to(ROOT).as_posix()
    lines = document.read_text(encoding="utf-8").splitlines()
    index = 0
    previous = ""  # the last non-blank line outside a block
    blank_before = True
    while index < len(lines):
        line = lines[index]
        opening = _FENCE.match(line)
        if opening is None:
            if blank_before and re.match(r"^( {4}|\t)\S", line):
                raise ValueError(f"{name}:{index + 1}: an indented code block; use a fence")
            if line.strip():
                previous = line.strip()
            blank_before = not line.strip()
            index += 1
            continue
        fence, indent = opening["fence"], opening["indent"]
        tag = opening["info"].strip().split(" ")[0].strip("{}.").lower()
        if not tag:
            raise ValueError(f"{name}:{index + 1}: a code block without a language tag")
        body: list[str] = []
        end = index + 1
        while end < len(lines):
            closing = lines[end].strip()
            if closing.startswith(fence[0] * len(fence)) and not closing.strip(fence[0]):
                break
            body.append(lines[end][len(indent) :] if lines[end].startswith(indent) else lines[end])
            end += 1
        else:
            raise ValueError(f"{name}:{index + 1}: a code block that is never closed")
        marker = _NOT_RUN.match(previous)
        code = _include_snippets("\n".join(body) + "\n")
        yield Block(name, index + 1, tag, code, marker["reason"] if marker else None)
        previous, blank_before, index = "", False, end + 1


def _include_snippets(code: str) -> str:
    """Replace ``--8<-- "path"`` lines with the file they name, as the docs build does."""

    def include(match: re.Match[str]) -> str:
        return (ROOT / match["path"]).read_text(encoding="utf-8").rstrip("\n")

    return re.sub(_SNIPPET.pattern, include, code, flags=re.MULTILINE)


BLOCKS = [block for document in DOCUMENTS for block in _blocks(document)]


def _tally(request: pytest.FixtureRequest, kind: str, count: int = 1) -> None:
    """Counts what the run checked, by kind, for the summary at its end (conftest.py)."""
    request.node.user_properties.append(("documentation examples", (kind, count)))


# -- programs, several at once -------------------------------------------------------------


@attrs.frozen
class Ran:
    """How an example's subprocess ended: its exit status and everything it wrote."""

    returncode: int
    output: str


class Runner:
    """Runs the subprocesses the examples need in a small pool: one example mostly waits
    on its own imports, so two or more at a time use the machine's cores."""

    def __init__(self, scratch: pytest.TempPathFactory) -> None:
        self._scratch = scratch
        self._pool = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2))
        self._runs: dict[Block, Future[Ran]] = {}
        self._scripts: Future[dict[str, str]] | None = None

    def start(self, blocks: list[Block]) -> None:
        self.scripts()  # first: every shell block waits for it
        for block in blocks:
            self.run(block)

    def run(self, block: Block) -> Future[Ran]:
        if block not in self._runs:
            # Made here, in the calling thread: pytest's TempPathFactory is not
            # thread-safe (two threads numbering directories at once collide).
            directory = self._scratch.mktemp("example")
            self._runs[block] = self._pool.submit(self._run, block, directory)
        return self._runs[block]

    def _run(self, block: Block, directory: Path) -> Ran:
        if block.language == "pycon":
            path = directory / "example.txt"
            argv = [sys.executable, "-m", "doctest", "-o", "ELLIPSIS", str(path)]
        elif _TEST_FUNCTION.search(block.code):
            path = directory / "test_example.py"
            # A pytest.ini of its own: the repository's settings (trio_mode) do not apply,
            # as they would not in a reader's project.
            (directory / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
            argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
            argv += ["-p", "no:schemathesis", str(path)]  # (the suite's, no reader's)
        else:
            path = directory / "example.py"
            argv = [sys.executable, str(path)]
        path.write_text(block.code, encoding="utf-8")
        try:
            done = subprocess.run(
                argv,
                cwd=directory,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=EXAMPLE_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired as expired:
            output = expired.output.decode(errors="replace") if expired.output else ""
            return Ran(-1, f"timed out after {EXAMPLE_TIMEOUT:g}s\n{output}")
        return Ran(done.returncode, done.stdout.decode(errors="replace"))

    def scripts(self) -> Future[dict[str, str]]:
        """Whether each ``python examples/...`` or ``python benchmarks/...`` command line
        of the documents is accepted by the script's argument parser: one subprocess runs
        every script up to its ``parse_args`` and stops it there."""
        if self._scripts is None:
            jobs: list[list[str]] = []
            for block in BLOCKS:
                if block.language not in SHELL | {"ini"}:
                    continue
                for _line, argv in _commands(block):
                    script = _script(argv)
                    if script is not None:
                        jobs.append(script)
            self._scripts = self._pool.submit(_parse_script_arguments, jobs)
        return self._scripts

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


@pytest.fixture(scope="session")
def runner(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Runner]:
    pool = Runner(tmp_path_factory)
    # Start every example this session will check, not only the first one asked for.
    chosen = [getattr(item, "callspec", None) for item in request.session.items]
    blocks = [spec.params.get("block") for spec in chosen if spec is not None]
    pool.start([b for b in blocks if isinstance(b, Block) and _runs_as_program(b)])
    try:
        yield pool
    finally:
        pool.close()


def _runs_as_program(block: Block) -> bool:
    return block.language in EXECUTED and block.not_run is None


# Runs each script as __main__ with ArgumentParser.parse_args replaced: the real one
# parses (and exits 2 on a usage error, as the program would), then the program stops.
_PARSE_ONLY = r"""
import argparse, contextlib, io, json, os, runpy, sys

class Parsed(BaseException):
    pass

real_parse_args = argparse.ArgumentParser.parse_args

def parse_args(self, args=None, namespace=None):
    real_parse_args(self, args, namespace)
    raise Parsed

argparse.ArgumentParser.parse_args = parse_args

def only_parsed(error):
    if isinstance(error, BaseExceptionGroup):
        return all(only_parsed(inner) for inner in error.exceptions)
    return isinstance(error, Parsed)

results = {}
for script, *args in json.load(sys.stdin):
    key = json.dumps([script, *args])
    sys.argv = [script, *args]
    sys.path.insert(0, os.path.dirname(script))
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said), contextlib.redirect_stdout(io.StringIO()):
            runpy.run_path(script, run_name="__main__")
    except SystemExit as exit:
        results[key] = f"refused its arguments (exit status {exit.code}): {said.getvalue()}"
    except BaseException as error:
        if only_parsed(error):
            results[key] = ""
        else:
            results[key] = f"{type(error).__name__}: {error}"
    else:
        results[key] = "ended without parsing its arguments with argparse"
    finally:
        sys.path.pop(0)
print(json.dumps(results))
"""


def _parse_script_arguments(jobs: list[list[str]]) -> dict[str, str]:
    if not jobs:
        return {}
    done = subprocess.run(
        [sys.executable, "-c", _PARSE_ONLY],
        input=json.dumps(jobs).encode(),
        cwd=ROOT,
        capture_output=True,
        timeout=EXAMPLE_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr.decode(errors="replace"))
    results: dict[str, str] = json.loads(done.stdout)
    return results


# -- commands --------------------------------------------------------------------------------


def _commands(block: Block) -> Iterator[tuple[int, list[str]]]:
    """Each command of a shell block (or of an ini block's ExecStart lines), with its
    line in the document, as argv lists; variables set in the block are expanded."""
    if block.language == "ini":
        yield from _exec_starts(block)
        return
    variables: dict[str, str] = {}
    for line, text in _logical_lines(block):
        text = _expand(text, variables, f"{block.path}:{line}")
        lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        command: list[str] = []
        for token in [*lexer, ";"]:
            if token not in {"&&", "||", ";", "|", "&"}:
                command.append(token)
                continue
            while command and re.fullmatch(r"[A-Za-z_]\w*=.*", command[0]):
                name, _, value = command.pop(0).partition("=")
                if not command:  # an assignment on its own sets a variable
                    variables[name] = value
            if command:
                yield line, command
            command = []


def _expand(text: str, variables: dict[str, str], where: str) -> str:
    """``text`` with ``$NAME`` and ``${NAME}`` replaced by the block's own variables."""

    def value(match: re.Match[str]) -> str:
        if match[1] not in variables:
            raise AssertionError(f"{where}: ${match[1]} is not set in the block")
        return variables[match[1]]

    return re.sub(r"\$\{?(\w+)\}?", value, text)


def _logical_lines(block: Block) -> Iterator[tuple[int, str]]:
    """Lines of a shell block with backslash continuations joined and comments left out;
    in a console block only the commands after a ``$ `` prompt."""
    pending: list[str] = []
    start = 0
    for offset, raw in enumerate(block.code.splitlines(), start=1):
        if not pending:
            if block.language == "console":
                if not raw.startswith("$ "):
                    continue  # the output of the command above
                raw = raw[2:]
            if not raw.strip() or raw.lstrip().startswith("#"):
                continue
            start = block.line + offset
        if raw.endswith("\\"):
            pending.append(raw[:-1])
            continue
        pending.append(raw)
        yield start, " ".join(pending)
        pending = []


def _exec_starts(block: Block) -> Iterator[tuple[int, list[str]]]:
    unit = configparser.ConfigParser(interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    unit.read_string(block.code)
    lines = {raw.partition("=")[0]: i for i, raw in enumerate(block.code.splitlines(), 1)}
    for section in unit.sections():
        for key, value in unit[section].items():
            if key.startswith("ExecStart"):
                # configparser keeps a continued line's backslash and newline
                yield block.line + lines.get(key, 0), shlex.split(value.replace("\\\n", " "))


def _program(argv: list[str]) -> str:
    return os.path.basename(argv[0])


def _is_python(argv: list[str]) -> bool:
    return re.fullmatch(r"python(3(\.\d+)?)?", _program(argv)) is not None


def _script(argv: list[str]) -> list[str] | None:
    """``[script path, args...]`` for ``python examples/x.py ...`` or benchmarks/, else None."""
    if _is_python(argv) and len(argv) > 1 and argv[1].endswith(".py"):
        parts = Path(argv[1]).parts
        if parts and parts[0] in {"examples", "benchmarks"}:
            return [str(ROOT / argv[1]), *argv[2:]]
    return None


def _check_cli(args: list[str]) -> str | None:
    """Parse ``trio-wsproxy`` arguments as the command does; the problem, or None."""
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said), contextlib.redirect_stdout(io.StringIO()):
            parsed = build_parser().parse_args(args)
    except SystemExit as exit:
        return f"trio-wsproxy refuses it (exit status {exit.code}): {said.getvalue().strip()}"
    if parsed.command == "serve":
        try:
            config_from_args(parsed, environ={})
        except ValueError as error:
            return f"RelayConfig refuses it: {error}"
    return None


def _extras() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return set(project["project"]["optional-dependencies"])


def _check_command(argv: list[str], scripts: dict[str, str]) -> str | None:
    """The problem with one command line, or None; ``scripts`` holds the outcome of the
    argument checks of examples/ and benchmarks/ scripts (see Runner.scripts)."""
    program = _program(argv)
    if program == "trio-wsproxy":
        return _check_cli(argv[1:])
    if program == "mkdocs":
        # The documentation build (the docs extra); CI runs it, strictly, on its own.
        return None if argv[1:2] in (["build"], ["serve"]) else "only mkdocs build or serve"
    if program in {".", "source"}:
        return None if argv[1:] == [".venv/bin/activate"] else "sources an unknown file"
    if program == "run.py" or (_is_python(argv) and argv[1:2] == ["run.py"]):
        # The side-by-side benchmark's runner (its own folder, not this repository's):
        # the relay command lines it is given must be valid.
        relays = [arg.partition("=")[2] for arg in argv if "trio-wsproxy serve" in arg]
        for relay in relays:
            problem = _check_command(shlex.split(relay.replace("{port}", "8765")), scripts)
            if problem:
                return problem
        return None
    if not _is_python(argv) or len(argv) < 2:
        return f"no rule checks {program!r} commands: add one to tests/test_docs.py"
    if argv[1] == "-m":
        module, args = argv[2], argv[3:]
        if module == "trio_wsproxy":
            return _check_cli(args)
        if module == "pip":
            return _check_pip(args)
        if module == "pytest":
            missing = [a for a in args if not a.startswith("-") and not (ROOT / a).exists()]
            return f"no such test path: {missing}" if missing else None
        if module == "venv":
            return None
        return f"no rule checks python -m {module}: add one to tests/test_docs.py"
    script = _script(argv)
    if script is None:
        return f"{argv[1]} is not a script of examples/ or benchmarks/"
    if not Path(script[0]).is_file():
        return f"{argv[1]} does not exist"
    return scripts.get(json.dumps(script), "was not checked") or None


def _check_pip(args: list[str]) -> str | None:
    if args[:1] != ["install"]:
        return "only pip install is documented"
    for requirement in (a for a in args[1:] if not a.startswith("-")):
        local = re.fullmatch(r"\.(?:\[(?P<extras>[\w,-]+)\])?", requirement)
        if local is not None:
            unknown = set((local["extras"] or "").split(",")) - _extras() - {""}
            if unknown:
                return f"pyproject.toml has no extra {sorted(unknown)}"
        elif not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement):
            return f"not a requirement: {requirement!r}"
    return None


# -- the other languages ---------------------------------------------------------------------


def _check_json(block: Block) -> None:
    document = json.loads(block.code)
    if isinstance(document, dict) and "MessageType" in document:
        text = block.code.strip()
        envelope = decode_envelope(text)
        assert encode_envelope(envelope) == text, (
            f"{block.where}: the envelope is not written as it travels (compact JSON, keys "
            f"Id, MessageType, Message, ReplyId); it travels as {encode_envelope(envelope)}"
        )


async def _metrics_text() -> str:
    async with open_relay(RelayConfig(port=0)) as relay:
        stream = await trio.open_tcp_stream("127.0.0.1", relay.port)
        async with stream:
            await stream.send_all(b"GET /metrics HTTP/1.0\r\nHost: docs\r\n\r\n")
            response = b""
            with trio.fail_after(10):
                while chunk := await stream.receive_some():
                    response += chunk
    head, _, body = response.decode().partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 200"), head
    return body


def _check_js(block: Block) -> None:
    """A JavaScript block parses as an ES module (``node --check``; imports unresolved)."""
    from browserdriver import node_path

    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "block.mjs"
        script.write_text(block.code, encoding="utf-8")
        checked = subprocess.run(
            [node_path(), "--check", str(script)], capture_output=True, text=True, check=False
        )
    assert checked.returncode == 0, f"{block.where}: {checked.stderr[-2000:]}"


def _check_prometheus(block: Block) -> None:
    served = {
        family.name: family.type
        for family in text_string_to_metric_families(trio.run(_metrics_text))
    }
    shown = list(text_string_to_metric_families(block.code))
    assert shown, f"{block.where}: no metrics in the block"
    for family in shown:
        assert family.name in served, f"{block.where}: the relay serves no {family.name}"
        assert family.type == served[family.name], (
            f"{block.where}: {family.name} is a {served[family.name]}, not a {family.type}"
        )


# -- the tests ---------------------------------------------------------------------------------


@pytest.mark.parametrize("block", BLOCKS, ids=[block.where for block in BLOCKS])
def test_block(block: Block, runner: Runner, request: pytest.FixtureRequest) -> None:
    if block.not_run is not None:
        assert block.language in EXECUTED, f"{block.where}: only examples that run opt out"
        assert block.not_run, f"{block.where}: say why the example does not run"
        # Not run, but read: it must at least be valid code of its language.
        if block.language in ("python", "py"):
            compile(block.code, block.where, "exec")
        _tally(request, "opted out (compiled only)")
        return
    if block.language in EXECUTED:
        ran = runner.run(block).result()
        assert ran.returncode == 0, f"{block.where} failed:\n{ran.output[-4000:]}"
        _tally(request, _kind(block))
    elif block.language in SHELL or block.language == "ini":
        scripts = runner.scripts().result()
        problems = []
        count = 0
        for line, argv in _commands(block):
            count += 1
            problem = _check_command(argv, scripts)
            if problem:
                problems.append(f"{block.path}:{line}: {shlex.join(argv)}\n    {problem}")
        assert not problems, "\n".join(problems)
        assert count, f"{block.where}: no command in the block"
        _tally(request, "commands checked", count)
    elif block.language == "json":
        _check_json(block)
        _tally(request, "json blocks checked")
    elif block.language == "prometheus":
        _check_prometheus(block)
        _tally(request, "prometheus blocks checked")
    elif block.language == "toml":
        tomllib.loads(block.code)
        _tally(request, "toml blocks checked")
    elif block.language == "js":
        _check_js(block)
        _tally(request, "js blocks checked")
    elif block.language in NOT_EXECUTABLE:
        _tally(request, f"{block.language} blocks not executable")
    else:
        pytest.fail(
            f"{block.where}: no rule for {block.language!r} blocks: add one to "
            "tests/test_docs.py and docs/contributing.md, or use a listed tag"
        )


def _kind(block: Block) -> str:
    if block.language == "pycon":
        return "doctest blocks run"
    return "pytest files run" if _TEST_FUNCTION.search(block.code) else "python blocks run"


def test_every_serve_flag_is_in_the_table_with_its_default() -> None:
    """docs/relay.md's flag table lists exactly the flags of ``trio-wsproxy serve``, and
    a default written as one literal is what the parser has."""
    serve = _serve_parser()
    flags: dict[str, argparse.Action] = {}
    for action in serve._actions:
        if action.help != argparse.SUPPRESS and "-h" not in action.option_strings:
            flags.update(dict.fromkeys(action.option_strings, action))
    rows = re.findall(
        r"^\| (`--[^|]+) \| ([^|]+) \|",
        (ROOT / "docs/relay.md").read_text(encoding="utf-8"),
        re.MULTILINE,
    )
    documented: set[str] = set()
    for names, default in rows:
        for flag in re.findall(r"`(--[a-z-]+)`", names):
            documented.add(flag)
            if flag in flags:
                _check_default(flag, flags[flag], default.strip())
    assert documented == set(flags), (
        f"missing from the table: {sorted(set(flags) - documented)}; "
        f"not flags: {sorted(documented - set(flags))}"
    )


def _serve_parser() -> argparse.ArgumentParser:
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            serve: argparse.ArgumentParser = action.choices["serve"]
            return serve
    raise AssertionError("trio-wsproxy has no serve command")


def _check_default(flag: str, action: argparse.Action, cell: str) -> None:
    if cell in {"none", "off"}:
        assert action.default in (None, "", False), f"{flag}: the default is {action.default!r}"
        return
    literal = re.fullmatch(r"`([^`]+)`", cell)
    if literal is None:
        return  # a default explained in words
    value: Any = literal[1]
    if callable(action.type):
        value = action.type(value)
    assert value == action.default, f"{flag}: documented {cell}, the parser has {action.default!r}"


def test_the_api_reference_has_every_public_name() -> None:
    reference = (ROOT / "docs/reference.md").read_text(encoding="utf-8")
    entries = set(re.findall(r"^::: (trio_wsproxy[\w.]*)$", reference, re.MULTILINE))
    public = {f"trio_wsproxy.{name}" for name in trio_wsproxy.__all__ if not name.startswith("__")}
    assert public | {"trio_wsproxy.testing"} <= entries, sorted(public - entries)


def test_the_readme_links_to_files_that_exist() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
    local = [link for link in links if not re.match(r"[a-z]+:", link)]
    assert local, "the README links to the documentation pages"
    missing = [link for link in local if not (ROOT / link).exists()]
    assert not missing, missing


def test_the_readme_introduces_the_api_history_and_the_protocol() -> None:
    # A reader of the README alone learns that they exist, and where to read on.
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    sections = dict(re.findall(r"^## ([^\n]+)\n(.*?)(?=^## |\Z)", readme, re.MULTILINE | re.DOTALL))
    for heading, page in [
        ("An HTTP API for your back end", "docs/api.md"),
        ("History and recovery", "docs/protocol.md#history-and-recovery"),
        ("The protocol", "docs/protocol.md"),
    ]:
        assert heading in sections, f"no section {heading!r}"
        assert f"]({page}" in sections[heading], f"{heading!r} does not link to {page}"


def test_every_block_has_a_rule() -> None:
    """Unknown tags fail in test_block too; this names them all at once."""
    known = EXECUTED | CHECKED | set(NOT_EXECUTABLE)
    unknown = [
        f"{block.where} ({block.language})" for block in BLOCKS if block.language not in known
    ]
    assert not unknown, unknown
