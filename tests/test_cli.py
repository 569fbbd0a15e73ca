"""The ``trio-wsproxy`` command: flags map onto RelayConfig, signals close members with 1001."""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import attrs
import pytest
import trio
import trio_websocket as tw

import trio_wsproxy
from relayproc import Output, first_line, start_relay
from trio_wsproxy import CloseCode, RelayConfig
from trio_wsproxy._cli import (
    DEFAULT_LOG_LEVEL,
    build_parser,
    config_from_args,
    format_size,
    parse_duration,
    parse_size,
)
from wsraw import RawClient


def test_every_config_field_has_a_flag_and_defaults_agree() -> None:
    args = build_parser().parse_args(["serve"])
    assert config_from_args(args) == RelayConfig()
    help_text = subcommand("serve").format_help()
    for field in attrs.fields(RelayConfig):
        if field.metadata.get("file_only"):  # (the config file's tables: namespaces)
            assert "--" + field.name.replace("_", "-") not in help_text
            continue
        assert "--" + field.name.replace("_", "-") in help_text


def test_flags_set_their_fields() -> None:
    args = build_parser().parse_args(
        [
            "serve",
            "--host", "0.0.0.0",
            "--port", "9000",
            "--path", "/relay",
            "--max-message-size", "16MiB",
            "--mailbox-bytes", "64k",
            "--slow-member-timeout", "2.5",
            "--ping-interval", "off",
            "--log-level", "debug",
        ]
    )  # fmt: skip
    config = config_from_args(args)
    assert config == RelayConfig(
        host="0.0.0.0",
        port=9000,
        path="/relay",
        max_message_size=16 * 1024 * 1024,
        mailbox_bytes=64 * 1024,
        slow_member_timeout=2.5,
        ping_interval=None,
        log_level="debug",
    )


@pytest.mark.parametrize(
    ("text", "value"), [("65536", 65536), ("64KiB", 65536), ("1M", 1 << 20), ("2 GiB", 2 << 30)]
)
def test_sizes_take_binary_units(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("size", [1, 1000, 16384, 4 << 20, 512 << 20, 3 << 30, (1 << 40) + 1])
def test_sizes_are_shown_as_parse_size_reads_them(size: int) -> None:
    assert parse_size(format_size(size)) == size


def test_bad_values_are_refused_with_a_message() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "trio_wsproxy", "serve", "--mailbox-bytes", "lots"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "not a size in bytes" in result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "trio_wsproxy", "serve", "--certfile", "only-a-cert.pem"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "certfile and keyfile go together" in result.stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_a_signal_closes_every_member_with_1001_and_exits_0(signum: int) -> None:
    process, base, _port = await start_relay()
    try:
        async with tw.open_websocket_url(f"{base}?id=a&groupName=g") as a:
            async with tw.open_websocket_url(f"{base}?id=b&groupName=g") as b:
                await a.send_message("hi")
                with trio.fail_after(5):
                    assert await b.get_message() == "hi"
                process.send_signal(signum)
                for ws in (a, b):
                    with pytest.raises(tw.ConnectionClosed) as info, trio.fail_after(10):
                        await ws.get_message()
                    assert info.value.reason is not None
                    assert info.value.reason.code == CloseCode.GOING_AWAY
        with trio.fail_after(10):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


# Far longer than any bound below: a relay still waiting on a member's close answer when
# the test's bound runs out was not cut off by the second signal.
PATIENT = ("--close-timeout", "120")


def cut_short(name: str) -> str:
    """The one line a relay or supervisor prints when a second signal ``name`` ends it."""
    return (
        f"trio-wsproxy: {name} during shutdown: exiting at once; members not yet closed are cut off"
    )


def running(pid: int) -> bool:
    """Whether process ``pid`` exists (running, or exited and not yet reaped)."""
    return Path(f"/proc/{pid}").exists()


async def cut_off(member: RawClient) -> None:
    """Wait for ``member``'s connection to end with no more frames: cut off, not closed."""
    with trio.fail_after(10):
        try:
            frame = await member.recv_frame()
        except (EOFError, trio.BrokenResourceError):
            return
    raise AssertionError(f"a frame after the close: {frame}")


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (signal.SIGTERM, signal.SIGTERM),
        (signal.SIGINT, signal.SIGINT),
        (signal.SIGINT, signal.SIGTERM),
    ],
    ids=["TERM-TERM", "INT-INT", "INT-TERM"],
)
async def test_a_second_signal_during_shutdown_exits_at_once_without_a_traceback(
    first: int, second: int
) -> None:
    process, base, port = await start_relay(*PATIENT)
    assert process.stderr is not None
    stderr = Output()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stderr.pump, process.stderr)
            # One member answers the relay's close frame, one never does.
            silent = await RawClient.open(port, "/ws?id=silent&groupName=g")
            async with tw.open_websocket_url(f"{base}?id=polite&groupName=g") as polite:
                process.send_signal(first)
                with trio.fail_after(10):
                    assert await silent.expect_close() == (1001, "relay shutting down")
                with pytest.raises(tw.ConnectionClosed) as info, trio.fail_after(10):
                    await polite.get_message()
                assert info.value.reason is not None
                assert info.value.reason.code == CloseCode.GOING_AWAY
            # The relay now waits close_timeout for the silent member's answer.
            process.send_signal(second)
            with trio.fail_after(10):
                status = await process.wait()
            await cut_off(silent)
            await silent.aclose()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert status == 128 + second  # 143 after SIGTERM, 130 after SIGINT
    name = signal.Signals(second).name
    assert stderr.text.splitlines() == [cut_short(name)]


async def test_a_second_signal_kills_every_worker_and_the_supervisor_at_once(
    redis_url: str, prefix: str
) -> None:
    backplane = ("--backplane", redis_url, "--backplane-prefix", prefix)
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "trio_wsproxy", "serve", "--port", "0", "--workers", "2",
         *backplane, *PATIENT, "--log-level", "info"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None and process.stderr is not None
    stderr = Output()
    pids: list[int] = []
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stderr.pump, process.stderr)
            line = await first_line(process.stdout, stderr)
            port = int(re.findall(rb":(\d+)/ws", line)[0])
            pids = [int(pid) for pid in re.findall(r"worker \d started \(pid (\d+)\)", stderr.text)]
            assert len(pids) == 2, stderr.text
            members = [await RawClient.open(port, f"/ws?id=m{n}&groupName=g") for n in range(4)]
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(10):
                for member in members:
                    assert (await member.expect_close())[0] == 1001
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(10):
                status = await process.wait()
            for member in members:
                await cut_off(member)
                await member.aclose()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        for pid in pids:
            if running(pid):
                os.kill(pid, signal.SIGKILL)
    assert status == 143
    # Killed and reaped by the supervisor before it exited.
    assert not [pid for pid in pids if running(pid)]
    assert "Traceback" not in stderr.text
    assert stderr.text.splitlines()[-1] == cut_short("SIGTERM")


def test_an_unusable_token_secret_file_is_a_usage_error(tmp_path: Path) -> None:
    empty = tmp_path / "secret"
    empty.write_text("\n")
    for path, words in ((empty, "is empty"), (tmp_path / "missing", "No such file")):
        result = subprocess.run(
            [sys.executable, "-m", "trio_wsproxy", "serve", "--token-secret-file", str(path)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 2
        assert words in result.stderr and "Traceback" not in result.stderr


SHORT_SECRET = "s3cret"


def usage_error(result: subprocess.CompletedProcess[str]) -> str:
    """The one-line error of a usage error (exit status 2, argparse's usage lines above)."""
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    [line] = [line for line in result.stderr.splitlines() if ": error: " in line]
    return line


@pytest.mark.parametrize("how", ["file", "environment", "flag"])
@pytest.mark.parametrize(
    ("setting", "variable", "too_short"),
    [
        ("token-secret", "TRIO_WSPROXY_TOKEN_SECRET", "an HS256 secret needs at least 32"),
        ("api-key", "TRIO_WSPROXY_API_KEY", "is 6 bytes; an API key needs at least 16"),
        ("webhook-secret", "TRIO_WSPROXY_WEBHOOK_SECRET",
         "is 6 bytes; a webhook secret needs at least 16"),
    ],
)  # fmt: skip
def test_a_secret_too_short_is_refused_at_start_up_and_never_a_flag(
    how: str, setting: str, variable: str, too_short: str, tmp_path: Path
) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(SHORT_SECRET + "\n")
    environment = {k: v for k, v in os.environ.items() if k != variable}
    flags = ["--port", "0"]
    if how == "file":
        flags += [f"--{setting}-file", str(secret_file)]
    elif how == "environment":
        environment[variable] = SHORT_SECRET
    else:
        flags += [f"--{setting}", SHORT_SECRET]
    result = subprocess.run(
        [sys.executable, "-m", "trio_wsproxy", "serve", *flags],
        capture_output=True,
        text=True,
        timeout=30,
        env=environment,
        cwd=tmp_path,
    )
    line = usage_error(result)
    if how == "flag":
        assert f"--{setting} is not a flag" in line and variable in line
    else:
        assert too_short in line
    assert SHORT_SECRET not in result.stderr


def test_a_token_secret_of_32_bytes_is_enough() -> None:
    assert RelayConfig(token_secret="x" * 32).token_secret == "x" * 32
    with pytest.raises(ValueError, match="31 bytes long"):
        RelayConfig(token_secret="x" * 31)
    # Bytes, not characters: 16 two-byte characters are 32 bytes.
    assert RelayConfig(token_secret="é" * 16).token_secret == "é" * 16


def mint_from(secret_file: Path) -> subprocess.CompletedProcess[str]:
    """``trio-wsproxy token --secret-file SECRET_FILE`` for alice in lobby."""
    return subprocess.run(
        [sys.executable, "-m", "trio_wsproxy", "token", "--secret-file", str(secret_file),
         "--id", "alice", "--group", "lobby"],
        capture_output=True,
        text=True,
        timeout=30,
    )  # fmt: skip


def test_minting_with_a_short_secret_is_a_usage_error(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(SHORT_SECRET)
    result = mint_from(secret_file)
    assert "needs at least 32" in usage_error(result)
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("content", "says"), [(None, "cannot read token secret file"), ("\n", "is empty")]
)
def test_minting_reads_the_secret_file_as_the_relay_does(
    tmp_path: Path, content: str | None, says: str
) -> None:
    secret_file = tmp_path / "secret"
    if content is not None:
        secret_file.write_text(content)
    result = mint_from(secret_file)
    error = usage_error(result)
    assert says in error and str(secret_file) in error
    assert result.stdout == ""


async def test_a_port_in_use_is_a_one_line_error() -> None:
    with trio.socket.socket() as taken:
        await taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = await trio.run_process(
            [sys.executable, "-m", "trio_wsproxy", "serve", "--port", str(port)],
            capture_stderr=True,
            check=False,
        )
    assert result.returncode == 1
    assert b"cannot serve" in result.stderr
    assert b"Traceback" not in result.stderr


def subcommand(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    [commands] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    chosen: argparse.ArgumentParser = commands.choices[name]
    return chosen


def flag_defaults(name: str) -> dict[str, str]:
    """Each flag of ``trio-wsproxy NAME --help`` and the default its help shows."""
    shown = {}
    for action in subcommand(name)._actions:
        found = re.search(r"\(default: ([^)]+)\)$", action.help or "")
        if found:
            shown[action.option_strings[0]] = found[1]
    return shown


def test_serve_help_shows_each_default_as_the_flag_takes_it() -> None:
    shown = flag_defaults("serve")
    for field in attrs.fields(RelayConfig):
        flag = "--" + field.name.replace("_", "-")
        if field.metadata.get("env") or field.metadata.get("file_only"):
            continue  # never a flag
        default = shown[flag]
        if field.name == "log_level":
            # RelayConfig's None leaves logging alone; the command line logs at WARNING.
            assert default == "WARNING" == DEFAULT_LOG_LEVEL
        elif default == "not set":
            assert getattr(RelayConfig(), field.name) in (None, ())
        elif isinstance(field.default, bool):
            assert default == ("on" if field.default else "off")
        else:
            # Giving the default shown changes nothing: it is the true default.
            args = build_parser().parse_args(["serve", flag, default])
            assert config_from_args(args) == RelayConfig(), (flag, default)
    assert shown["--mailbox-bytes"] == "4MiB"
    assert shown["--max-message-size"] == "none"
    assert shown["--slow-member-timeout"] == "10"
    help_text = subcommand("serve").format_help()
    assert "(default: None)" not in help_text
    for flag, default in shown.items():
        assert f"(default: {default})" in " ".join(help_text.split()), flag


def test_the_command_line_logs_at_warning_without_log_level() -> None:
    # The level main gives logging.basicConfig when --log-level is not given.
    code = (
        "import logging, sys; from trio_wsproxy import _cli; "
        "_cli.trio.run = lambda *a: print(logging.getLogger().level); "
        "_cli.main(['serve', '--port', '0'])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30
    )
    assert result.stdout.strip() == str(logging.WARNING), result.stderr


def test_token_help_shows_its_defaults() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "trio_wsproxy", "token", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    shown = flag_defaults("token")
    assert "(default: 1h)" in result.stdout
    assert shown["--ttl"] == "1h"
    args = build_parser().parse_args(["token", "--id", "a", "--group", "g"])
    assert args.ttl == parse_duration(shown["--ttl"]) == 3600
    assert shown["--secret-file"] == "the TRIO_WSPROXY_TOKEN_SECRET variable"
    assert "(default: None)" not in result.stdout


def test_version_prints_the_installed_version_and_exits_0() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "trio_wsproxy", "--version"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"trio-wsproxy {importlib.metadata.version('trio_wsproxy')}\n"
    assert trio_wsproxy.__version__ == importlib.metadata.version("trio_wsproxy")
    assert "__version__" not in trio_wsproxy.__all__  # metadata, as in trio


def test_a_source_tree_never_installed_has_an_unknown_version() -> None:
    code = (
        "import importlib.metadata as m\n"
        "real = m.version\n"
        "def version(name):\n"
        "    if name == 'trio_wsproxy': raise m.PackageNotFoundError(name)\n"
        "    return real(name)\n"
        "m.version = version\n"
        "import trio_wsproxy; print(trio_wsproxy.__version__)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30
    )
    assert result.stdout.strip() == "0+unknown", result.stderr
