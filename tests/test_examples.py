"""The examples run as documented, against a relay started as an operator would."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import attrs
import trio
import trio_websocket as tw

from relayproc import Output, first_line, start_relay

EXAMPLES = Path(__file__).parent.parent / "examples"
# The examples print without flushing: lines reach a pipe only unbuffered.
UNBUFFERED = {**os.environ, "PYTHONUNBUFFERED": "1"}
MiB = 1024 * 1024


def example(*args: str) -> list[str]:
    return [sys.executable, str(EXAMPLES / args[0]), *args[1:]]


async def run_example(*args: str) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(60):
        return await trio.run_process(
            example(*args), capture_stdout=True, capture_stderr=True, check=False, env=UNBUFFERED
        )


async def test_the_ported_dotnet_demo_runs_to_the_end() -> None:
    relay, url, _port = await start_relay()
    try:
        result = await run_example("demo.py", "--url", url, "--group", "demo")
        assert result.returncode == 0, result.stderr.decode()[-2000:]
    finally:
        relay.terminate()
        await relay.wait()


@attrs.frozen
class Transfer:
    """What the two sides of ``file_transfer.py`` said."""

    sent: subprocess.CompletedProcess[bytes]
    receiver_stderr: str


async def transfer(source: Path, out: Path, *, python: list[str], limit: float) -> Transfer:
    """Send ``source`` with ``examples/file_transfer.py`` through a relay process to a
    receiver started first (``--once``, saving into ``out``); each side runs as
    ``python + [script, args...]``. Fails unless both exit 0 within ``limit`` seconds."""
    relay, url, _port = await start_relay()
    receiver = await trio.lowlevel.open_process(
        [
            *python,
            *example("file_transfer.py", "--url", url, "receive", "--out", str(out), "--once")[1:],
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=UNBUFFERED,
    )
    assert receiver.stdout is not None and receiver.stderr is not None
    said, complained = Output(), Output()
    try:
        with trio.fail_after(limit):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(said.pump, receiver.stdout)
                nursery.start_soon(complained.pump, receiver.stderr)
                # The receiver must be there first. It says so once connected, and a
                # member is in its group before its connection is answered.
                await said.wait_for("waiting for files in group")
                sent = await trio.run_process(
                    [*python, *example("file_transfer.py", "--url", url, "send", str(source))[1:]],
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                    env=UNBUFFERED,
                )
                assert sent.returncode == 0, sent.stderr.decode()[-2000:]
                assert await receiver.wait() == 0, complained.text[-2000:]
        return Transfer(sent, complained.text)
    finally:
        if receiver.returncode is None:
            receiver.kill()
            await receiver.wait()
        relay.terminate()
        await relay.wait()


async def test_a_file_goes_through_the_relay_and_checks_out(tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(5 * 1024 * 1024 + 123))
    out = tmp_path / "out"
    out.mkdir()
    await transfer(source, out, python=[sys.executable], limit=60)
    copies = list(out.iterdir())
    assert len(copies) == 1
    assert (
        hashlib.sha256(copies[0].read_bytes()).digest()
        == hashlib.sha256(source.read_bytes()).digest()
    )


async def test_a_256_mib_file_streams_from_disk_to_disk_in_flat_memory(tmp_path: Path) -> None:
    """One message of 256 MiB, sender and receiver each in its own process and each under
    64 MiB at its peak (a quarter of the file); the copy checks out (the sender compares
    SHA-256 receipts)."""
    size = 256 * MiB
    source = tmp_path / "big.bin"
    block = os.urandom(16 * MiB)
    with source.open("wb") as file:
        for index in range(size // len(block)):
            file.write(index.to_bytes(8, "big") + block[8:])  # no two blocks alike
    out = tmp_path / "out"
    out.mkdir()
    # Each example under tests/peakrss.py, which prints its peak memory when it exits.
    measured = [sys.executable, str(Path(__file__).parent / "peakrss.py")]
    done = await transfer(source, out, python=measured, limit=60)
    assert b"verified by the receiver" in done.sent.stdout
    assert (out / "big.bin").stat().st_size == size
    for who, text in (("sender", done.sent.stderr.decode()), ("receiver", done.receiver_stderr)):
        peak = float(re.findall(r"peak_rss_mib=([0-9.]+)", text)[-1])
        assert peak < 64, f"the {who} peaked at {peak:.0f} MiB"


async def test_the_embedded_relay_runs_beside_its_bot() -> None:
    process = await trio.lowlevel.open_process(
        example("embedded_relay.py", "--port", "0"), stdout=subprocess.PIPE, env=UNBUFFERED
    )
    assert process.stdout is not None
    try:
        line = await first_line(process.stdout)
        url = line.decode().strip().rsplit(" ", 1)[1]
        async with tw.open_websocket_url(f"{url}?id=alice&groupName=lobby") as ws:
            with trio.fail_after(10):
                # The bot may not have joined yet, and the example says nothing when it
                # has (a ping before that reaches nobody): ask until it answers.
                while True:
                    await ws.send_message("ping")
                    with trio.move_on_after(0.5):
                        assert await ws.get_message() == "pong"
                        break
    finally:
        process.terminate()
        await process.wait()


class Member:
    """An example run as a person would, in a terminal of its own: lines typed on its
    standard input, what it prints collected to wait for."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.said, self.complained = Output(), Output()

    @classmethod
    async def start(cls, nursery: trio.Nursery, *args: str) -> Member:
        process = await trio.lowlevel.open_process(
            example(*args),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=UNBUFFERED,
        )
        assert process.stdout is not None and process.stderr is not None
        member = cls(process)
        nursery.start_soon(member.said.pump, process.stdout)
        nursery.start_soon(member.complained.pump, process.stderr)
        return member

    async def type(self, line: str) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(line.encode() + b"\n")

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
        await self.process.wait()


# Far longer than an answer takes between processes on one machine (milliseconds), even
# a loaded one: /who's window, so that the list it prints is sure to be whole. Each /who
# waits all of it out, so it is not longer still.
WHO_WINDOW = "1.5"


async def chat_member(nursery: trio.Nursery, url: str, name: str) -> Member:
    member = await Member.start(
        nursery, "chat.py", "--url", url, "--name", name, "--who-window", WHO_WINDOW
    )
    await member.said.wait_for(rf"\* you are {name} in room 'lobby'")
    return member


async def test_who_lists_every_member_of_the_room() -> None:
    relay, url, _port = await start_relay()
    members: list[Member] = []
    try:
        async with trio.open_nursery() as nursery:
            alice = await chat_member(nursery, url, "alice")
            members.append(alice)
            for name in ("bob", "carol"):
                members.append(await chat_member(nursery, url, name))
                # Once alice has heard it join, it is in the room, its handlers set.
                await alice.said.wait_for(rf"\* {name} joined")
            await alice.type("/who")
            await alice.said.wait_for(r"\* 3 here: alice \(you\), bob, carol\n")
            bob = members[1]
            await bob.type("/who")
            await bob.said.wait_for(r"\* 3 here: bob \(you\), alice, carol\n")
            # Each saw only its own list: the others' answers are not theirs to show.
            assert "here:" not in members[2].said.text
            for member in members:
                await member.type("/quit")
            with trio.fail_after(30):
                for member in members:
                    assert await member.process.wait() == 0, member.complained.text
            nursery.cancel_scope.cancel()
    finally:
        for member in members:
            await member.stop()
        relay.terminate()
        await relay.wait()
    for member in members:
        assert member.complained.text == ""


async def test_alone_who_says_nobody_else_is_here() -> None:
    relay, url, _port = await start_relay()
    member: Member | None = None
    try:
        async with trio.open_nursery() as nursery:
            member = await Member.start(
                nursery, "chat.py", "--url", url, "--name", "alice", "--who-window", "0.5"
            )
            await member.said.wait_for(r"\* you are alice")
            await member.type("/who")
            await member.said.wait_for(r"\* nobody else is here\n")
            nursery.cancel_scope.cancel()
    finally:
        if member is not None:
            await member.stop()
        relay.terminate()
        await relay.wait()


async def test_a_relay_restart_shows_as_chat_status_lines_not_log_records() -> None:
    relay, url, port = await start_relay()
    alice: Member | None = None
    try:
        async with trio.open_nursery() as nursery:
            alice = await chat_member(nursery, url, "alice")
            relay.terminate()  # every member gets 1001, and nothing listens for a while
            await relay.wait()
            lost = await alice.said.wait_for(
                r"\* lost the connection \(code 1001: relay shutting down\); reconnecting\.\.\.\n"
            )
            failed = await alice.said.wait_for(
                r"\* reconnect attempt 1 failed: [^\n]+\n", lost.end()
            )
            relay, url, _ = await start_relay("--port", str(port))
            back = await alice.said.wait_for(rf"\* connected to {re.escape(url)}\n", failed.end())
            # Every line since the drop is a status line of the chat.
            lines = alice.said.text[lost.start() : back.end()].splitlines()
            assert all(line.startswith("* ") for line in lines), lines
            await alice.type("/quit")
            with trio.fail_after(30):
                assert await alice.process.wait() == 0
            nursery.cancel_scope.cancel()
    finally:
        if alice is not None:
            await alice.stop()
        relay.terminate()
        await relay.wait()
    assert alice.complained.text == ""  # no log record on stderr, in the middle of the chat


async def test_demo_client1_says_whom_it_waits_for_and_goes_on_when_it_comes() -> None:
    relay, url, _port = await start_relay()
    members: list[Member] = []
    try:
        async with trio.open_nursery() as nursery:
            first = await Member.start(nursery, "demo.py", "client1", "--url", url, "--group", "g")
            members.append(first)
            waiting = await first.said.wait_for(
                r"\[client 1\] waiting for client 2 in group 'g' \(start it with: python "
                rf"examples/demo\.py client2 --url {re.escape(url)} --group g\)\n"
            )
            second = await Member.start(nursery, "demo.py", "client2", "--url", url, "--group", "g")
            members.append(second)
            await first.said.wait_for(r"\[client 1\] client 2 is here\n", waiting.end())
            with trio.fail_after(30):
                assert await first.process.wait() == 0, first.complained.text
            await first.said.wait_for(r"\[client 1\] List of strings sent!")
            await second.said.wait_for(r"\[client 2\] Line 2")
            nursery.cancel_scope.cancel()
    finally:
        for member in members:
            await member.stop()
        relay.terminate()
        await relay.wait()


# -- examples/local_idp.py: an identity provider's tokens, end to end -----------------------


async def start_idp(*flags: str) -> tuple[trio.Process, str]:
    """Start ``examples/local_idp.py --port 0``; return the process and its issuer URL."""
    process = await trio.lowlevel.open_process(
        example("local_idp.py", "--port", "0", *flags),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=UNBUFFERED,
    )
    assert process.stdout is not None
    line = (await first_line(process.stdout)).decode()
    found = re.search(r" on (http://[\d.]+:\d+): ", line)
    assert found is not None, line
    return process, found[1]


async def idp_token(issuer: str, sub: str, *groups: str, ttl: int = 3600) -> str:
    import httpx

    params = [("sub", sub), ("ttl", str(ttl)), *(("group", group) for group in groups)]
    async with httpx.AsyncClient() as http:
        answer = await http.get(f"{issuer}/token", params=params)
    answer.raise_for_status()
    token: str = answer.json()["access_token"]
    return token


async def test_a_relay_started_with_the_local_idps_keys_admits_its_tokens_only() -> None:
    from trio_wsproxy import open_client
    from wsraw import RawClient

    idp, issuer = await start_idp()
    relay = None
    try:
        relay, url, port = await start_relay(
            "--jwks-url", f"{issuer}/certs", "--token-issuer", issuer, "--token-audience", "relay"
        )
        minted: list[str] = []

        async def alice_token() -> str:  # called before each connection (and before expiry)
            minted.append(await idp_token(issuer, "alice", "lobby"))
            return minted[-1]

        with trio.fail_after(30):
            bob_token = await idp_token(issuer, "bob", "lobby", "game-*")
            async with (
                open_client(url, group="lobby", id="alice", access_token=alice_token) as alice,
                open_client(url, group="lobby", id="bob", access_token=bob_token) as bob,
                bob.subscribe(str) as messages,
            ):
                await alice.send("hello from an IdP's user")
                assert (await messages.receive()).value == "hello from an IdP's user"
            assert len(minted) == 1
            # A token of the IdP for another group: 403; no token, or a forged one: 401.
            for target, status in (
                (f"/ws?id=bob&groupName=secret&access_token={bob_token}", 403),
                ("/ws?id=bob&groupName=lobby", 401),
                (f"/ws?id=bob&groupName=lobby&access_token={bob_token[:-4]}AAAA", 401),
            ):
                client = RawClient(await trio.open_tcp_stream("127.0.0.1", port))
                assert (await client.handshake(target))[0] == status, target
                await client.aclose()
    finally:
        for process in (idp, relay):
            if process is not None:
                process.terminate()
                await process.wait()


async def test_the_local_idp_rotates_to_an_es256_key_and_the_relay_follows() -> None:
    import httpx

    from trio_wsproxy import RelayConfig
    from trio_wsproxy.protocol.tokens import TokenVerifier
    from trio_wsproxy.relay.groups import LocalRegistry
    from trio_wsproxy.relay.jwks import JwksKeys
    from trio_wsproxy.relay.relay import run_relay
    from wsraw import RawClient

    async def handshake(port: int, token: str) -> int:
        client = RawClient(await trio.open_tcp_stream("127.0.0.1", port))
        status = (await client.handshake(f"/ws?id=carol&groupName=lobby&access_token={token}"))[0]
        await client.aclose()
        return status

    idp, issuer = await start_idp()
    try:
        async with trio.open_nursery() as nursery:
            # (The relay refetches on an unknown kid at most every 10 s; 0.2 here.)
            keys = JwksKeys(f"{issuer}/certs", refetch_interval=0.2)
            verifier = TokenVerifier.of(key_set=keys, issuer=issuer, audience="relay")
            config = RelayConfig(host="127.0.0.1", port=0)
            relay = await nursery.start(run_relay, config, LocalRegistry(), verifier)
            with trio.fail_after(30):
                assert await handshake(relay.port, await idp_token(issuer, "carol", "lobby")) == 101
                async with httpx.AsyncClient() as http:
                    rotated = await http.post(f"{issuer}/rotate", params={"alg": "ES256"})
                assert rotated.json()["kid"].startswith("es256-")
                await trio.sleep(0.2)  # (the refetch interval: time is what it is about)
                assert await handshake(relay.port, await idp_token(issuer, "carol", "lobby")) == 101
                assert relay.counters.jwks_fetches["ok"] == 2
            nursery.cancel_scope.cancel()
    finally:
        idp.terminate()
        await idp.wait()
