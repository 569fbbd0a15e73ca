"""The ``trio-wsproxy`` command: flags map onto RelayConfig, signals close members with 1001."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import attrs
import pytest
import trio
import trio_websocket as tw

from relayproc import start_relay
from trio_wsproxy import CloseCode, RelayConfig
from trio_wsproxy._cli import build_parser, config_from_args, parse_size


def test_every_config_field_has_a_flag_and_defaults_agree() -> None:
    args = build_parser().parse_args(["serve"])
    assert config_from_args(args) == RelayConfig()
    help_text = build_parser()._subparsers._group_actions[0].choices["serve"].format_help()  # type: ignore[union-attr]
    for field in attrs.fields(RelayConfig):
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
                    assert info.value.reason.code == CloseCode.GOING_AWAY
        with trio.fail_after(10):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


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
