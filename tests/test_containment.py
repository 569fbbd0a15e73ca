"""One message never takes the relay down: inputs that once crashed it get their close
code or status, and a bug in the relay's own code ends only the session (or connection)
it met, logged once, counted, with the listener and every other member going on.

The crash inputs run against the relay as a process (a crash is about the process); the
injected bugs against a relay in the test's own process, where a function can be made to
fail."""

from __future__ import annotations

import base64
import logging

import pytest
import trio

from relayproc import Output, start_relay
from test_hostile import scrape
from test_v1 import V1_OFFER, next_event, next_message, v1_member
from trio_wsproxy import RelayConfig, open_relay
from trio_wsproxy.protocol import encoding as encoding_module
from trio_wsproxy.protocol import v1
from trio_wsproxy.protocol.encoding import V1Encoding
from trio_wsproxy.protocol.message import Message
from trio_wsproxy.relay import listeners as listeners_module
from trio_wsproxy.relay.session import Session
from wsraw import OP_TEXT, RawClient

POLLER = pytest.mark.parametrize("poller", ["--shared-poller", "--no-shared-poller"])


async def healthz(port: int) -> int:
    client = RawClient(await trio.open_tcp_stream("127.0.0.1", port))
    await client.send(b"GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n")
    status, _headers, _body = await client.read_response()
    await client.aclose()
    return status


async def v1_raw(port: int, ident: str, group: str = "g", extra: str = "") -> RawClient:
    client = RawClient(await trio.open_tcp_stream("127.0.0.1", port))
    status, _headers, body = await client.handshake(
        f"/ws?id={ident}&groupName={group}", V1_OFFER + extra
    )
    assert status == 101, (status, body)
    welcome = await next_event(client)
    assert isinstance(welcome, v1.Welcome)
    return client


async def still_relays(port: int, group: str) -> None:
    """A new pair joins ``group`` and relays a message: the listener and fan-out live."""
    assert await healthz(port) == 200
    alice = await v1_raw(port, "alice-" + group, group)
    bob = await v1_raw(port, "bob-" + group, group)
    await alice.send_frame(OP_TEXT, b"\nhello")
    _opcode, header, payload = await next_message(bob)
    assert (header.sender, payload) == ("alice-" + group, b"hello")
    await alice.aclose()
    await bob.aclose()


@POLLER
async def test_hostile_v1_headers_and_positions_get_their_answer_and_the_relay_serves_on(
    poller: str,
) -> None:
    process, _url, port = await start_relay(poller, "--max-id-length", "6000")
    assert process.stderr is not None
    log = Output()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(log.pump, process.stderr)
            with trio.fail_after(30):
                # A member of another group, there all along, keeps its session.
                witness = await v1_raw(port, "witness", "other")
                peer = await v1_raw(port, "peer", "other")
                for header in (b"[" * 3000, b'{"to":"\\ud800"}', b'{"to":' * 1000):
                    mallory = await v1_raw(port, "mallory")
                    await mallory.send_frame(OP_TEXT, header + b"\nboom")
                    code, reason = await mallory.expect_close()
                    assert code == 1002, (header[:20], code, reason)
                    assert reason.startswith("wsproxy.v1: "), reason
                    await mallory.aclose()
                # An offset past int()'s 4,300 digits is a bad position, not a crash.
                refused = RawClient(await trio.open_tcp_stream("127.0.0.1", port))
                status, _headers, body = await refused.handshake(
                    "/ws?id=late&groupName=g&since=e:" + "9" * 5000, V1_OFFER
                )
                assert status == 400, (status, body)
                assert b"offset has at most 20 digits" in body
                await refused.aclose()
                await still_relays(port, "after")
                await witness.send_frame(OP_TEXT, b"\nstill here")
                _opcode, header, payload = await next_message(peer)
                assert (header.sender, payload) == ("witness", b"still here")
                assert process.poll() is None
                # (Closed here, so that the relay's shutdown need not wait out close_timeout.)
                await witness.aclose()
                await peer.aclose()
            process.terminate()
    finally:
        process.kill()
    assert "Traceback" not in log.text, log.text


async def test_a_token_whose_jose_header_nests_too_deeply_is_refused_401() -> None:
    secret = "s" * 32
    process, _url, port = await start_relay(env={"TRIO_WSPROXY_TOKEN_SECRET": secret})
    try:
        with trio.fail_after(30):
            segment = base64.urlsafe_b64encode(b"[" * 3000).rstrip(b"=").decode()
            token = f"{segment}.e30.c2ln"
            client = RawClient(await trio.open_tcp_stream("127.0.0.1", port))
            status, _headers, body = await client.handshake(
                f"/ws?id=m&groupName=g&access_token={token}"
            )
            assert (status, body) == (401, b"invalid access token\n")
            await client.aclose()
            assert await healthz(port) == 200
            assert process.poll() is None
    finally:
        process.kill()


def test_the_token_check_refuses_what_an_older_pyjwt_let_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # PyJWT 2.8 to 2.13 raised RecursionError for such a header; the check contains it
    # whatever version is installed.
    import jwt

    from trio_wsproxy.protocol.tokens import check_token

    def deep(*_args: object, **_kwargs: object) -> object:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(jwt, "decode", deep)
    verdict = check_token("a.b.c", "s" * 32, "m", "g")
    assert verdict is not None
    assert (verdict.status, verdict.kind) == (401, "token_invalid")


@pytest.fixture
def caplog_relay(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="trio_wsproxy.relay")
    return caplog


@pytest.mark.parametrize("shared_poller", [True, False])
async def test_a_bug_met_relaying_a_message_closes_that_member_1011_and_nothing_else(
    shared_poller: bool,
    monkeypatch: pytest.MonkeyPatch,
    caplog_relay: pytest.LogCaptureFixture,
) -> None:
    # The bug is met while the message is offered to the group (in Sender.offer): in
    # framing it for bob, whose encoding is a Python subclass of v1's in either hot path
    # (compiled classes and functions cannot be patched from here).
    class Buggy(V1Encoding):
        def message(self, message: Message) -> bytes:
            if message.payload == b"boom":
                raise RuntimeError("injected")
            return super().message(message)

    monkeypatch.setitem(encoding_module.SUBPROTOCOLS, v1.SUBPROTOCOL, Buggy())
    config = RelayConfig(port=0, shared_poller=shared_poller, close_timeout=2)
    async with open_relay(config) as relay:
        with trio.fail_after(20):
            mallory, _ = await v1_member(relay, "mallory")
            bob, _ = await v1_member(relay, "bob")
            other, _ = await v1_member(relay, "other", "g2")
            await mallory.send_frame(OP_TEXT, b"\nboom")
            assert await mallory.expect_close() == (1011, "the relay failed serving this member")
            # bob hears that mallory left, and the group and the relay go on.
            await relay.wait_members(2)
            carol, _ = await v1_member(relay, "carol")
            await carol.send_frame(OP_TEXT, b"\nfine")
            _opcode, header, payload = await next_message(bob)
            assert (header.sender, payload) == ("carol", b"fine")
            assert await healthz(relay.port) == 200
            samples = await scrape(relay.port)
            # (Closed here, so that the relay's shutdown need not wait out close_timeout.)
            for client in (mallory, bob, other, carol):
                await client.aclose()
    assert samples[("trio_wsproxy_internal_errors_total", (("where", "session"),))] == 1
    assert samples[("trio_wsproxy_closes_total", (("code", "1011"),))] == 1
    failures = [r for r in caplog_relay.records if r.levelno == logging.ERROR]
    assert len(failures) == 1, [r.getMessage() for r in failures]
    assert failures[0].exc_info is not None
    assert "RuntimeError: injected" in caplog_relay.text


async def test_a_bug_met_in_the_handshake_ends_that_connection_alone(
    monkeypatch: pytest.MonkeyPatch, caplog_relay: pytest.LogCaptureFixture
) -> None:
    join = Session.join

    async def buggy(self: Session) -> object:
        if self.id == "mallory":
            raise RuntimeError("injected")
        return await join(self)

    monkeypatch.setattr(Session, "join", buggy)
    async with open_relay(RelayConfig(port=0)) as relay:
        with trio.fail_after(20):
            client = RawClient(await trio.open_tcp_stream("127.0.0.1", relay.port))
            with pytest.raises((AssertionError, EOFError)):
                await client.handshake("/ws?id=mallory&groupName=g")
            await still_relays(relay.port, "g")
            samples = await scrape(relay.port)
    assert samples[("trio_wsproxy_internal_errors_total", (("where", "connection"),))] == 1
    assert "RuntimeError: injected" in caplog_relay.text


async def test_a_relay_whose_listener_fails_ends_promptly_closing_its_members(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broken = trio.Event()
    accept = listeners_module.PacedListener.accept

    async def failing(self: listeners_module.PacedListener) -> trio.abc.Stream:
        stream = await accept(self)
        if broken.is_set():
            await trio.aclose_forcefully(stream)
            raise OSError(9, "the listener broke (injected)")
        return stream

    monkeypatch.setattr(listeners_module.PacedListener, "accept", failing)
    with trio.fail_after(20):
        with pytest.raises(OSError, match="injected"):
            async with open_relay(RelayConfig(port=0, close_timeout=2)) as relay:
                alice, _ = await v1_member(relay, "alice")
                broken.set()
                with trio.move_on_after(1):  # (the connection that breaks the listener)
                    await trio.open_tcp_stream("127.0.0.1", relay.port)
                # Without the fix the members were served on, shielded, with no
                # listener: the relay would never end while alice stayed.
                assert await alice.expect_close() == (1001, "relay shutting down")
                await alice.aclose()  # (the relay need not wait out close_timeout for it)
                await trio.sleep_forever()
