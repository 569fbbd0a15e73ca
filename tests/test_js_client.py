"""The JavaScript client (clients/js/wsproxy.js) against the real relay, beside Python
clients in one group: its codecs against the shared vectors, then a Node member
(tests/js/peer.mjs, on Node's own WebSocket) talking with Python members."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

import trio_wsproxy
from browserdriver import NodeScript, missing, node_path, running
from demotypes import Answer, Ask, Command, Say
from relaynode import RestartableRelay
from trio_wsproxy import (
    ClientConfig,
    CloseCode,
    Relay,
    RelayConfig,
    open_client,
    open_relay,
    serve_relay,
)
from trio_wsproxy.client.config import DEFAULT_RECONNECT_CODES
from trio_wsproxy.client.policy import close_meaning
from trio_wsproxy.testing import wait_for_member

ROOT = Path(__file__).parent.parent
PLAIN = trio_wsproxy.ClientConfig(offer_v1=False)
PEER = ROOT / "tests" / "js" / "peer.mjs"


class NodePeer(NodeScript):
    """A running tests/js/peer.mjs: the JSON lines it printed, to wait for."""

    def __init__(self, process: trio.Process) -> None:
        super().__init__(process)
        self.events: list[dict[str, Any]] = []
        self._grew = trio.Event()

    async def received(self, message: dict[str, Any]) -> None:
        self.events.append(message)
        self._grew.set()
        self._grew = trio.Event()

    async def wait_for(
        self, event: str, where: Callable[[dict[str, Any]], bool] = lambda e: True
    ) -> dict[str, Any]:
        """The first event named ``event`` (that ``where`` accepts), once printed (within
        10 s)."""
        timeout = 10
        with trio.move_on_after(timeout):
            while True:
                for seen in self.events:
                    if seen["event"] == event and where(seen):
                        self.events.remove(seen)
                        return seen
                await self._grew.wait()
        raise AssertionError(
            f"no {event!r} from the JS peer within {timeout} s; it said {self.events}, "
            f"stderr {self.stderr.decode(errors='replace')[-2000:]}"
        )


@asynccontextmanager
async def js_peer(urls: list[str], **options: Any) -> AsyncIterator[NodePeer]:
    argv = [node_path(), "--experimental-websocket", "--no-warnings", str(PEER)]
    async with running(NodePeer, [*argv, json.dumps({"urls": urls, **options})]) as peer:
        await peer.wait_for("ready")
        yield peer


async def test_the_typescript_declarations_fit_a_use_of_every_name() -> None:
    tsc = ROOT / "tests/browser/node_modules/.bin/tsc"
    if not tsc.exists():
        missing("typescript is not installed: npm install in tests/browser (.ci/run does)")
    result = await trio.run_process(
        [node_path(), str(tsc), "--noEmit", "--strict", "--target", "es2022",
         "--module", "nodenext", "--moduleResolution", "nodenext",
         "--lib", "es2022,dom,dom.iterable",
         str(ROOT / "clients/js/test/usage.mts")],
        capture_stdout=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout.decode()[-4000:]


async def test_the_js_codec_passes_the_shared_vectors() -> None:
    result = await trio.run_process(
        [node_path(), "--test", str(ROOT / "clients/js/test/")], capture_stdout=True, check=False
    )
    output = result.stdout.decode()
    assert result.returncode == 0, output[-4000:]
    passed = re.search(r"^# pass (\d+)$", output, re.MULTILINE)
    assert "# fail 0" in output and passed is not None and int(passed[1]) > 0, output[-4000:]


async def test_the_js_client_reads_close_codes_and_reconnects_as_the_python_one_does() -> None:
    """The two clients' tables of close codes (what each means, which ones reconnect),
    their backoff defaults and the bounds of what they report of a lost connection's
    messages are one contract, written in two languages."""
    result = await trio.run_process(
        [node_path(), "--input-type=module", "-e",
         f"import * as w from {json.dumps(str(ROOT / 'clients/js/wsproxy.js'))};"
         "const c = new w.Client('ws://relay/ws?groupName=g', {WebSocket: class {}});"
         "console.log(JSON.stringify({meanings: w.CLOSE_MEANINGS, codes: w.DEFAULT_RECONNECT_CODES,"
         " delays: [c.options.reconnectMinDelay, c.options.reconnectMaxDelay,"
         " c.options.reconnectJitter],"
         " unconfirmed: [c.options.unconfirmedLimit, c.options.unconfirmedBytes]}))"],
        capture_stdout=True,
    )  # fmt: skip
    js = json.loads(result.stdout)
    meanings = {int(code): text for code, text in js["meanings"].items()}
    for code in {*CloseCode, 1006, *meanings}:
        assert meanings.get(code, "no meaning known") == close_meaning(code), code
    assert set(js["codes"]) == DEFAULT_RECONNECT_CODES
    config = ClientConfig()
    assert js["delays"] == [
        config.reconnect_min_delay * 1000,
        config.reconnect_max_delay * 1000,
        config.reconnect_jitter,
    ]
    # What each keeps of the messages sent on a connection, to report should it be lost.
    assert js["unconfirmed"] == [config.unconfirmed_limit, config.unconfirmed_bytes]


@pytest.fixture
async def relay() -> AsyncIterator[Relay]:
    async with open_relay(RelayConfig(port=0)) as relay:
        yield relay


async def test_a_js_and_a_python_member_talk_both_ways(relay: Relay) -> None:
    async with open_client(relay.url, group="mixed", id="py") as py:
        async with js_peer([relay.url], group="mixed", id="js") as js:
            await wait_for_member(py, "js")
            # Python -> JS: a typed message, with its sender.
            await py.send(Say("hi from python"))
            said = await js.wait_for("said")
            assert said == {
                "event": "said",
                "value": {"text": "hi from python"},
                "sender": "py",
                "direct": False,
            }
            # Python asks, JS answers (to the requester only).
            assert await py.request(Ask("question"), Answer, timeout=5) == Answer("QUESTION")
            # JS asks, Python answers.

            @py.on(Ask)
            async def answer(ask: Ask, incoming: trio_wsproxy.Incoming[Ask]) -> None:
                await incoming.reply(Answer(f"python says {ask.text}"))

            await py.send(Command("ask", text="hello"))
            assert (await js.wait_for("answered"))["value"] == {"text": "python says hello"}
            # JS -> Python: typed, and binary.
            async with py.subscribe(Say) as says, py.subscribe(bytes) as binaries:
                await py.send(Command("say", text="hi from js"))
                incoming = await says.receive()
                assert (incoming.value, incoming.sender) == (Say("hi from js"), "js")
                await py.send(Command("binary", size=300_000))
                sent = await js.wait_for("sent_binary")
                data = (await binaries.receive()).value
            assert hashlib.sha256(data).hexdigest() == sent["sha256"] and len(data) == 300_000
            # Python -> JS binary.
            await py.send(bytes(range(256)) * 10)
            got = await js.wait_for("binary")
            assert got["size"] == 2560 and got["sender"] == "py"
            assert got["sha256"] == hashlib.sha256(bytes(range(256)) * 10).hexdigest()


async def test_presence_and_direct_messages_reach_the_js_member(relay: Relay) -> None:
    async with open_client(relay.url, group="room", id="py") as py:
        async with js_peer([relay.url], group="room", id="js") as js:
            await wait_for_member(py, "js")
            async with open_client(relay.url, group="room", id="carol") as carol:
                assert (await js.wait_for("joined"))["id"] in {"py", "carol"}
                await wait_for_member(carol, "js")
                # A direct message from JS reaches carol only.
                async with carol.subscribe(Say) as at_carol, py.subscribe(Say) as at_py:
                    await py.send(Command("say", text="just for carol", to="carol"))
                    incoming = await at_carol.receive()
                    assert (incoming.value, incoming.direct) == (Say("just for carol"), True)
                    await py.send(Command("members"))
                    members = await js.wait_for("members", lambda e: "carol" in e["members"])
                    assert members["members"] == ["carol", "py"] and members["count"] == 3
                    # Messages from one sender arrive in order: had the direct message
                    # reached py, it would come before this one.
                    await py.send(Command("say", text="for everyone"))
                    assert (await at_py.receive()).value == Say("for everyone")
                await carol.send_to("js", Say("whisper"))
                assert (await js.wait_for("said")) == {
                    "event": "said",
                    "value": {"text": "whisper"},
                    "sender": "carol",
                    "direct": True,
                }
            await js.wait_for("left", lambda e: e["id"] == "carol")
            # A request to a member that is not there is refused at once, not timed out.
            await py.send(Command("ask", text="anyone?", to="nobody"))
            failed = await js.wait_for("failed")
            assert failed["error"] == "MemberNotFound"


@pytest.mark.alone
async def test_the_js_member_fails_over_and_recovers_what_it_missed(
    redis_url: str, prefix: str
) -> None:
    """Two nodes sharing history in Redis; the node the JS member is on stops (1001): it
    reconnects to the other one, names its position, and gets every message it missed,
    in order."""
    settings = dict(
        host="127.0.0.1", backplane=redis_url, backplane_prefix=prefix, history_size=1000
    )
    async with trio.open_nursery() as nursery:
        b = await nursery.start(serve_relay, RelayConfig(port=0, **settings))
        node_a = RestartableRelay(nursery)
        a = await node_a.start(**settings)
        async with open_client(b.url, group="h", id="py") as py:
            async with js_peer([a.url, b.url], group="h", id="js", reconnectMinDelay=300) as js:
                await wait_for_member(py, "js")
                await py.send(Say("before"))
                await js.wait_for("said", lambda e: e["value"]["text"] == "before")
                started = time.monotonic()
                await node_a.stop()  # node a stops: its members get 1001
                await js.wait_for("disconnected")
                for n in range(20):  # while the JS member is away
                    await py.send(Say(f"missed {n}"))
                resumed = await js.wait_for("resumed")
                # All 20 are missed when they are sent before it is back, as they are on a
                # quiet machine; on a busy one, the last may come live: either way every
                # message comes once, in order.
                assert resumed["recovered"] is True and 1 <= resumed["missed"] <= 20, resumed
                for n in range(20):
                    said = await js.wait_for("said")
                    assert said["value"]["text"] == f"missed {n}"
                recovered_after = time.monotonic() - started
                state = await js.wait_for("state", lambda e: e["state"] == "connected")
                assert state["url"].startswith(b.url)
                await py.send(Say("after"))
                assert (await js.wait_for("said"))["value"]["text"] == "after"
        assert recovered_after < 5
        nursery.cancel_scope.cancel()


async def test_a_js_member_started_from_a_saved_position_gets_exactly_what_it_missed() -> None:
    """A JS member saves its position (as a page does before a reload) and goes; a new
    one started with that position (connect(url, {since})) gets every message sent
    meanwhile, in order, after a resumed event — though it registers its handlers and
    listeners only a while after connect resolved: they were held for them."""
    async with open_relay(RelayConfig(port=0, history_size=1000)) as relay:
        async with open_client(relay.url, group="s", id="py") as py:
            async with js_peer([relay.url], group="s", id="js") as js:
                await wait_for_member(py, "js")
                for text in ("one", "two"):
                    await py.send(Say(text))
                said = [await js.wait_for("said") for _ in range(2)]
            assert [e["value"]["text"] for e in said] == ["one", "two"]
            saved = said[-1]["position"]
            epoch, _, offset = saved.rpartition(":")
            assert int(offset) == said[-1]["offset"] == 2
            with trio.fail_after(10):
                await relay.wait_members(1, "s")
            for text in ("three", "four", "five"):  # while no JS member is there
                await py.send(Say(text))
            async with js_peer([relay.url], group="s", id="js", since=saved, lateMs=300) as js:
                resumed = await js.wait_for("resumed")
                assert (resumed["recovered"], resumed["missed"]) == (True, 3)
                said = [await js.wait_for("said") for _ in range(3)]
                await py.send(Say("live"))
                said.append(await js.wait_for("said"))
    assert [(e["value"]["text"], e["offset"]) for e in said] == [
        ("three", 3),
        ("four", 4),
        ("five", 5),
        ("live", 6),
    ]
    assert said[-1]["position"] == f"{epoch}:6"


async def test_a_js_sender_the_relay_closed_reports_what_it_sent_on_that_connection() -> None:
    """The relay reads the JS member no faster than 2 messages a second and closes it
    (4004) after the first ones: the rest never reach the group. The JS client reports
    every message it handed to the lost connection, in order — those among them — and
    the next loss reports that connection's messages only."""
    config = RelayConfig(port=0, history_size=1000, max_message_rate=2)
    burst = [f"m{n}" for n in range(10)]
    async with open_relay(config) as relay:
        async with open_client(relay.url, group="r", id="py") as py, py.subscribe(Say) as heard:
            async with js_peer([relay.url], group="r", id="js", reconnectMinDelay=100) as js:
                await wait_for_member(py, "js")
                await py.send(Command("burst", text="m", size=10))
                await js.wait_for("burst_sent")
                first = [(await heard.receive()).value.text for _ in range(2)]
                for session in list(relay.sessions):
                    if session.id == "js":
                        session.close(CloseCode.BACKPLANE_UNAVAILABLE, "backplane unavailable")
                lost = await js.wait_for("disconnected")
                await js.wait_for("state", lambda e: e["state"] == "connected")
                await py.send(Command("say", text="after"))
                taken = first
                while taken[-1] != "after":
                    taken.append((await heard.receive()).value.text)
                for session in list(relay.sessions):
                    if session.id == "js":
                        session.close(CloseCode.INTERNAL_ERROR, "relay error")
                again = await js.wait_for("disconnected")
    assert (lost["code"], lost["reconnecting"], lost["unconfirmed"]) == (4004, True, 10)
    assert [sent["value"]["text"] for sent in lost["unconfirmedMessages"]] == burst
    assert {sent["messageType"] for sent in lost["unconfirmedMessages"]} == {"Demo.Say"}
    # py got the first ones (the relay took m2 too, if it had read it before the close)
    # and never the rest: they are in the report.
    assert taken[:-1] in (burst[:2], burst[:3])
    assert set(burst) - set(taken) <= {
        sent["value"]["text"] for sent in lost["unconfirmedMessages"]
    }
    # The second loss: "after", written on the second connection, only.
    assert (again["code"], again["unconfirmed"]) == (1011, 1)
    assert [sent["value"]["text"] for sent in again["unconfirmedMessages"]] == ["after"]


async def test_a_js_member_is_told_when_it_cannot_connect() -> None:
    result = await trio.run_process(
        [node_path(), "--experimental-websocket", "--no-warnings", "--input-type=module", "-e",
         "import { connect } from './clients/js/wsproxy.js';"
         "try { await connect('ws://127.0.0.1:9/ws', {group: 'g', connectTimeout: 2000}); }"
         "catch (e) { console.log(e.name + ': ' + e.message); }"],
        cwd=ROOT, capture_stdout=True, check=False,
    )  # fmt: skip
    assert result.stdout.decode().startswith("NotConnected: could not connect: ws://127.0.0.1:9/ws")


async def test_async_iteration_tokens_and_a_final_close_code() -> None:
    secret = "relay-secret-of-at-least-thirty-two-bytes"
    async with open_relay(RelayConfig(port=0, token_secret=secret)) as relay:
        token = trio_wsproxy.mint_token(secret, "js", ["t"], ttl=60)
        py_token = trio_wsproxy.mint_token(secret, "py", ["t"], ttl=60)
        url = f"{relay.url}?access_token={py_token}"
        async with open_client(url, group="t", id="py") as py:
            async with js_peer([relay.url], group="t", id="js", accessToken=token) as js:
                await wait_for_member(py, "js")
                # messages() as an async iterator: the next three, in order.
                await py.send(Command("iterate", size=3))
                for n in range(3):
                    await py.send(Say(f"item {n}"))
                assert (await js.wait_for("iterated"))["texts"] == ["item 0", "item 1", "item 2"]
                # A newer connection with the same id replaces it (4000): final, no reconnect.
                async with open_client(
                    f"{relay.url}?access_token={token}", group="t", id="js", config=PLAIN
                ):
                    closed = await js.wait_for("state", lambda e: e["state"] == "closed")
                    assert closed["state"] == "closed"
                    disconnected = await js.wait_for("disconnected")
                    assert disconnected["code"] == 4000 and disconnected["reconnecting"] is False
        # Without a valid token there is no connection: a rejected connect, not a hang.
        result = await trio.run_process(
            [node_path(), "--experimental-websocket", "--no-warnings", "--input-type=module", "-e",
             "import { connect } from './clients/js/wsproxy.js';"
             f"try {{ await connect('{relay.url}', {{group: 't', accessToken: 'junk'}}); }}"
             "catch (e) { console.log(e.name); }"],
            cwd=ROOT, capture_stdout=True, check=False,
        )  # fmt: skip
        assert result.stdout.decode().strip() == "NotConnected"


async def test_a_js_member_closed_while_reconnecting_stays_closed() -> None:
    async with trio.open_nursery() as nursery:
        node = RestartableRelay(nursery)
        relay = await node.start()
        async with open_client(relay.url, group="c", id="py") as py:
            async with js_peer([relay.url], group="c", id="js", reconnectMinDelay=200) as js:
                await wait_for_member(py, "js")
                await py.send(Command("close-when-reconnecting"))
                await js.wait_for("armed")
                await node.stop()  # the relay goes (1001): the JS member starts reconnecting
                done = await js.wait_for("closed_while_reconnecting")
                assert done["state"] == "closed"
                await node.start()
                # Nothing is left pending in the closed client — no reconnect timer, no
                # socket — so Node, with nothing more to do, exits by itself.
                with trio.fail_after(10):
                    assert await js.process.wait() == 0
                assert not [e for e in js.events if e.get("state") == "connected"]
        nursery.cancel_scope.cancel()
