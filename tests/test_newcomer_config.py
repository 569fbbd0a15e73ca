"""What a new user trips over (issue 34): a flag's value the relay cannot use is refused
naming the flag, a start-up failure says what to change, and ``/healthz`` says whether the
relay can admit members (``/livez`` whether the process serves at all)."""

from __future__ import annotations

import configparser
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
import trio

import test_workers
from relayproc import start_relay
from trio_wsproxy import RelayConfig, open_client, open_relay
from trio_wsproxy._cli import build_parser, config_from_args, shown_default
from wsraw import RawClient

ROOT = Path(__file__).parent.parent
SERVE = (sys.executable, "-m", "trio_wsproxy", "serve")
# Nothing listens on port 1: every connection to it is refused at once.
UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"


def serve(*flags: str) -> subprocess.CompletedProcess[str]:
    """``trio-wsproxy serve FLAGS`` run to its end (a relay that starts after all is
    killed after 30 s, and the test fails)."""
    return subprocess.run([*SERVE, *flags], capture_output=True, text=True, timeout=30)


def usage_error(result: subprocess.CompletedProcess[str]) -> str:
    """The error line of a usage error of ``serve``: exit status 2, ``serve``'s usage
    above it (not the top level's), no traceback."""
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("usage: trio-wsproxy serve "), result.stderr
    [line] = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert line.startswith("trio-wsproxy serve: error: "), line
    return line.removeprefix("trio-wsproxy serve: error: ")


def start_failure(result: subprocess.CompletedProcess[str]) -> str:
    """The one line of a relay that could not start: exit status 1, no traceback."""
    assert result.returncode == 1, result
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("trio-wsproxy: cannot serve: "), line
    return line.removeprefix("trio-wsproxy: cannot serve: ")


# -- 1. ports are 0-65535 ------------------------------------------------------------------


@pytest.mark.parametrize("port", [65536, 70000, -1])
def test_a_port_out_of_range_is_refused_naming_the_field(port: int) -> None:
    with pytest.raises(ValueError, match=rf"^port must be a TCP port from 0 to 65535.*{port}"):
        RelayConfig(port=port)


def test_every_port_in_range_is_one() -> None:
    assert RelayConfig(port=0).port == 0
    assert RelayConfig(port=65535).port == 65535


@pytest.mark.parametrize("port", ["65536", "70000"])
def test_serve_refuses_a_port_out_of_range_instead_of_listening_on_another(port: str) -> None:
    # (70000 listened on 4464, its value modulo 65536; 65536 on a random free port.)
    line = usage_error(serve("--port", port))
    assert line.startswith("--port must be a TCP port from 0 to 65535") and port in line


# -- 2. /healthz answers whether the relay can admit members; /livez whether it serves ----


async def get(port: int, target: str) -> tuple[int, dict[str, str], bytes]:
    """``GET target`` on a connection of its own: (status, headers, body)."""
    client = RawClient(await trio.open_tcp_stream("127.0.0.1", port))
    try:
        await client.send(f"GET {target} HTTP/1.1\r\nHost: relay\r\n\r\n".encode())
        with trio.fail_after(10):
            return await client.read_response()
    finally:
        await client.aclose()


async def join_status(port: int, group: str = "g") -> int:
    client = RawClient(await trio.open_tcp_stream("127.0.0.1", port))
    try:
        with trio.fail_after(10):
            status, _headers, _body = await client.handshake(f"/ws?id=m&groupName={group}")
        return status
    finally:
        await client.aclose()


def one_line_of_text(headers: dict[str, str], body: bytes) -> str:
    assert headers["content-type"] == "text/plain"
    text = body.decode()
    assert text.endswith("\n") and text.count("\n") == 1, text
    return text.strip()


async def test_healthz_is_503_with_the_reason_while_redis_is_unreachable(prefix: str) -> None:
    config = RelayConfig(port=0, backplane=UNREACHABLE_REDIS, backplane_prefix=prefix)
    async with open_relay(config) as relay:
        assert await join_status(relay.port) == 503  # so a load balancer must not send it any
        status, headers, body = await get(relay.port, "/healthz")
        assert status == 503
        reason = one_line_of_text(headers, body)
        assert reason.startswith("backplane unavailable: cannot reach Redis at 127.0.0.1:1")
        # The process serves: restarting it would not bring Redis back.
        status, headers, body = await get(relay.port, "/livez")
        assert (status, one_line_of_text(headers, body)) == (200, "ok")


async def test_healthz_is_200_while_redis_is_reachable(redis_url: str, prefix: str) -> None:
    config = RelayConfig(port=0, backplane=redis_url, backplane_prefix=prefix)
    async with open_relay(config) as relay:
        assert relay.registry.up  # nursery.start returns once the first attempt ended
        for path in ("/healthz", "/livez"):
            status, headers, body = await get(relay.port, path)
            assert (status, one_line_of_text(headers, body)) == (200, "ok"), path
        async with open_client(relay.url, group="g"):
            assert relay.group_size("g") == 1


async def test_healthz_is_503_while_shutting_down_and_livez_stays_200() -> None:
    async with open_relay(RelayConfig(port=0)) as relay:
        assert (await get(relay.port, "/healthz"))[0] == 200
        relay.closing = True  # what shutting down sets first, while the listener is open
        status, headers, body = await get(relay.port, "/healthz")
        assert (status, one_line_of_text(headers, body)) == (503, "shutting down")
        assert (await get(relay.port, "/livez"))[0] == 200


async def test_the_probe_paths_are_flags_and_none_turns_them_off() -> None:
    config = RelayConfig(port=0, healthz_path="/ready", livez_path=None)
    async with open_relay(config) as relay:
        assert (await get(relay.port, "/ready"))[0] == 200
        assert (await get(relay.port, "/livez"))[0] == 404
        assert (await get(relay.port, "/healthz"))[0] == 404
    args = build_parser().parse_args(["serve", "--livez-path", "none", "--healthz-path", "/r"])
    assert config_from_args(args) == RelayConfig(livez_path=None, healthz_path="/r")
    assert shown_default("livez_path", RelayConfig().livez_path) == "/livez"


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"livez_path": "/healthz"}, "healthz_path and livez_path are both '/healthz'"),
        ({"healthz_path": "/ws"}, "path and healthz_path are both '/ws'"),
        ({"livez_path": "livez"}, "livez_path must start with '/'"),
    ],
)
def test_two_endpoints_on_one_path_are_refused(fields: dict[str, str], words: str) -> None:
    with pytest.raises(ValueError, match=re.escape(words)):
        RelayConfig(**fields)


async def test_the_command_line_relay_says_it_is_not_ready_while_redis_is_unreachable(
    prefix: str,
) -> None:
    process, _url, port = await start_relay(
        "--backplane", UNREACHABLE_REDIS, "--backplane-prefix", prefix
    )
    try:
        status, headers, body = await get(port, "/healthz")
        assert status == 503 and "cannot reach Redis" in one_line_of_text(headers, body)
        assert (await get(port, "/livez"))[0] == 200
        assert await join_status(port) == 503
    finally:
        process.kill()
        await process.wait()


async def test_every_worker_says_it_is_not_ready_while_redis_is_unreachable(
    prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        test_workers, "BACKPLANE", ("--backplane", UNREACHABLE_REDIS, "--backplane-prefix", prefix)
    )
    async with test_workers.supervisor() as relay:
        await relay.worker_pids()  # both listen
        # Each connection goes to one worker or the other (SO_REUSEPORT): all say so.
        for _ in range(8):
            status, headers, body = await get(relay.port, "/healthz")
            assert status == 503 and "cannot reach Redis" in one_line_of_text(headers, body)
            assert (await get(relay.port, "/livez"))[0] == 200


# -- 3. an unknown log level is a usage error -------------------------------------------


def test_an_unknown_log_level_is_a_usage_error_naming_the_flag() -> None:
    line = usage_error(serve("--port", "0", "--log-level", "verbose"))
    assert line.startswith("--log-level must be one of DEBUG, INFO, WARNING") and "verbose" in line
    with pytest.raises(ValueError, match=r"^log_level must be one of"):
        RelayConfig(log_level="verbose")
    assert RelayConfig(log_level="debug").log_level == "debug"  # any case, as before


# -- 4. an allowed origin is scheme://host[:port] ----------------------------------------


@pytest.mark.parametrize(
    ("origin", "problem"),
    [
        ("example.com", "has no scheme"),
        ("localhost:3000", "has no scheme"),
        ("https://example.com/app", "has a path"),
        ("https://example.com?x=1", "has a path or query"),
        ("https://user@example.com", "has no valid host"),
        ("https://:8080", "has no valid host"),
        ("https://example.com:99999", "has a port that is not one"),
        ("https://example.com:443", "names its scheme's default port"),
        ("*", "has no scheme"),
    ],
)
def test_an_origin_no_browser_sends_is_refused(origin: str, problem: str) -> None:
    with pytest.raises(ValueError, match=r"^allowed_origins must be origins") as info:
        RelayConfig(allowed_origins=f"https://fine.example,{origin}")
    assert repr(origin) in str(info.value) and problem in str(info.value)


def test_origins_are_kept_as_browsers_send_them() -> None:
    config = RelayConfig(
        allowed_origins="https://example.com/, HTTPS://Chat.Example.com:8443,http://[::1]:3000"
    )
    assert config.allowed_origins == (
        "https://example.com",
        "https://chat.example.com:8443",
        "http://[::1]:3000",
    )


def test_serve_refuses_an_origin_without_a_scheme() -> None:
    line = usage_error(serve("--port", "0", "--allowed-origins", "example.com"))
    assert line.startswith("--allowed-origins must be origins") and "'example.com'" in line


async def test_an_origin_given_in_capitals_admits_the_browser() -> None:
    async with open_relay(RelayConfig(port=0, allowed_origins="HTTPS://Example.com")) as relay:
        client = RawClient(await trio.open_tcp_stream("127.0.0.1", relay.port))
        try:
            with trio.fail_after(10):
                status, _headers, _body = await client.handshake(
                    "/ws?id=m&groupName=g", "Origin: https://example.com\r\n"
                )
        finally:
            await client.aclose()
        assert status == 101


# -- 5. start-up errors name what is wrong and the flag to change ------------------------


async def test_a_port_in_use_names_the_address_and_the_flag() -> None:
    with trio.socket.socket() as taken:
        await taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = await trio.to_thread.run_sync(serve, "--port", str(port))
    line = start_failure(result)
    assert f"cannot listen on 127.0.0.1:{port}" in line and "in use" in line
    assert "--port" in line


def test_a_host_that_does_not_resolve_names_the_host_and_the_flag() -> None:
    line = start_failure(serve("--port", "0", "--host", "999.1.1.1"))
    assert "--host '999.1.1.1'" in line


@pytest.mark.parametrize("flag", ["--api-key-file", "--token-secret-file"])
def test_a_missing_secret_file_names_the_flag_and_the_file(flag: str, tmp_path: Path) -> None:
    missing = tmp_path / "nonexistent"
    line = usage_error(serve("--port", "0", flag, str(missing)))
    assert line.startswith(f"{flag}: ") and repr(str(missing)) in line
    assert "No such file or directory" in line


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--max-history-bytes", "1024"], "--max-history-bytes must be at least 65536"),
        (["--certfile", "cert.pem"], "certfile and keyfile go together"),
        (["--healthz-path", "/metrics"], "--healthz-path and --metrics-path are both '/metrics'"),
    ],
)
def test_config_errors_show_the_usage_of_serve(flags: Sequence[str], words: str) -> None:
    assert words in usage_error(serve("--port", "0", *flags))


# -- 11. what the documents say is what the relay does --------------------------------


def flag_row(flag: str) -> str:
    relay_md = (ROOT / "docs/relay.md").read_text(encoding="utf-8")
    [row] = re.findall(rf"^\| `{flag}` \|.*$", relay_md, re.MULTILINE)
    return row


def test_the_documents_turn_pings_off_as_the_help_does() -> None:
    serve_help = subprocess.run(
        [*SERVE, "--help"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    assert "none: no pings" in " ".join(serve_help.split())
    assert "`none`" in flag_row("--ping-interval")
    args = build_parser().parse_args(["serve", "--ping-interval", "none"])
    assert config_from_args(args).ping_interval is None


async def test_a_client_whose_connect_returned_is_counted() -> None:
    async with open_relay(RelayConfig(port=0)) as relay:
        async with open_client(relay.url, group="lobby"):
            # No waiting: the relay registers a member before it sends the 101.
            assert relay.stats.members == 1 and relay.group_size("lobby") == 1


def test_the_systemd_unit_passes_the_credentials_a_dynamic_user_can_read() -> None:
    production = (ROOT / "docs/production.md").read_text(encoding="utf-8")
    [block] = re.findall(r"```ini\n(.*?)```", production, re.DOTALL)
    unit = configparser.ConfigParser(interpolation=None, strict=False)
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    unit.read_string(block)
    service = unit["Service"]
    command = service["ExecStart"].replace("\\\n", " ")
    assert service["DynamicUser"] == "yes"
    credentials = [
        line.split("=", 1)[1].split(":", 1)
        for line in block.splitlines()
        if line.startswith("LoadCredential=")
    ]
    assert credentials
    for name, source in credentials:
        # A DynamicUser cannot read the file itself; systemd copies it to %d.
        assert source not in command, f"ExecStart reads {source} itself"
        assert f"%d/{name}" in command, name
    assert "/etc/trio-wsproxy/secret" not in command
