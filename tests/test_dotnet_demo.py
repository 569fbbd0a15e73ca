"""The ported demo against the original .NET one, half and half (issue 28), as
docs/dotnet.md promises: the .NET demo's Client1 with ``python examples/demo.py
client2``, and its Client2 with ``python examples/demo.py client1``.

The .NET half is tests/dotnet_peer.py's ``WsProxyClient``, scripted step by step as
EasyWebSocketProxy's Client1/Client1.cs and Client2/Client2.cs are written (on .NET 7,
as their projects target): the same types by full name, in the same order, the same
requests and answers, the same bytes. Its ``Console.WriteLine`` lines are collected and
compared with the .NET program's, and what demo.py printed with its own; both run over
real sockets through a real relay, demo.py as its own process, as a person runs it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import attrs
import pytest
import trio

from dotnet_peer import (
    BOOLEAN,
    BYTE_ARRAY,
    SOCKET_MESSAGE,
    STRING,
    DotNetClient,
    dotnet_url,
    list_of,
    open_dotnet_client,
)
from relayproc import Output
from trio_wsproxy import RelayConfig, open_relay

DEMO = Path(__file__).parent.parent / "examples" / "demo.py"
# demo.py prints without flushing: its lines reach a pipe only unbuffered.
UNBUFFERED = {**os.environ, "PYTHONUNBUFFERED": "1"}
# The .NET demo's Common.GROUP_NAME.
GROUP = "group_1"
# Client1.cs's byte array, Encoding.UTF8.GetBytes of this text (ASCII).
DATA = b"Hello from Client 1! This is going to be a byte array message!"
# Both programs on .NET 7 (their projects' TargetFramework is net7.0), so a List<string>
# is named with Version=7.0.0.0 on both sides.
LIST_OF_STRING = list_of(STRING, "7.0.0.0")
# Far longer than the whole demo takes (well under a second): a step that hangs fails
# the test instead of waiting out .NET's 120 s.
DEMO_LIMIT = 30
# How long the .NET client 2 may take to receive the list once demo.py has sent it and
# exited (milliseconds, even on a loaded machine).
LIST_LIMIT = 5


@attrs.define
class Demo:
    """``python examples/demo.py ROLE`` as its own process, what it prints collected."""

    process: trio.Process
    said: Output = attrs.Factory(Output)
    complained: Output = attrs.Factory(Output)

    async def expect(self, *lines: str) -> None:
        """Each of ``lines``, whole and in this order, is among what it has printed
        (waiting for them to come in)."""
        at = 0
        for line in lines:
            at = (await self.said.wait_for(rf"(?m)^{re.escape(line)}\n", at)).end()


@asynccontextmanager
async def running_demo(role: str, url: str) -> AsyncIterator[Demo]:
    """``python examples/demo.py ROLE`` in the demo's group for the block; killed after."""
    process = await trio.lowlevel.open_process(
        [sys.executable, str(DEMO), role, "--url", url, "--group", GROUP],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=UNBUFFERED,
    )
    assert process.stdout is not None and process.stderr is not None
    demo = Demo(process)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(demo.said.pump, process.stdout)
            nursery.start_soon(demo.complained.pump, process.stderr)
            yield demo
            nursery.cancel_scope.cancel()
    finally:
        if process.returncode is None:
            process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()


class DotNetClient2:
    """Client2.cs after ``TryConnectAsync``: its four ``On<T>`` handlers, each writing
    what the program writes to its console (into ``console``) and answering as it does.

    Two of them are ``async`` lambdas, which .NET runs inline up to their first
    ``await`` (the console line) and leaves running from there (the answer): here, a
    handler that writes the line and returns the answer's coroutine, which the stand-in
    starts without awaiting it."""

    def __init__(self, client: DotNetClient) -> None:
        self.client = client
        self.console: list[str] = []
        self.lines_received = trio.Event()
        client.on(SOCKET_MESSAGE, self.socket_message)
        client.on(BYTE_ARRAY, self.bytes_received)
        client.on(STRING, self.question)
        client.on(LIST_OF_STRING, self.lines)

    def socket_message(self, message: dict[str, object]) -> Awaitable[None] | None:
        self.console.append(f"Type message received. Message: {message['Message']}")
        if message["ReplyRequired"]:
            answer = {"Message": "This is my answer from Client 2!"}
            return self.client.reply_to(message, answer, SOCKET_MESSAGE)
        return None

    def bytes_received(self, data: bytes) -> None:
        self.console.append(f"Bytes received. Length: {len(data)}")

    def question(self, question: str) -> Awaitable[None]:
        self.console.append(question)
        return self.client.reply_to(question, True, BOOLEAN)  # every string, answered

    def lines(self, lines: list[str]) -> None:
        self.console.extend(lines)
        self.lines_received.set()


async def test_the_dotnet_client1_runs_its_demo_with_python_as_client2() -> None:
    with trio.fail_after(DEMO_LIMIT):
        async with (
            open_relay(RelayConfig(port=0)) as relay,
            running_demo("client2", relay.url) as demo,
        ):
            # Client1.cs's first "press enter" is its user's word that client 2 runs:
            # here, demo.py's that it is in the group, its handlers set.
            await demo.said.wait_for(r"\[client 2\] connected to .* waiting for client 1\.\.\.\n")
            async with open_dotnet_client(dotnet_url(relay.url, GROUP)) as client1:
                console: list[str] = []  # what Client1.cs writes after "Connected!"

                await client1.send({"Message": "Hello from Client 1"}, SOCKET_MESSAGE)
                console.append("Type message sent!")
                await demo.expect("[client 2] Type message received. Message: Hello from Client 1")

                await client1.send(DATA)
                console.append("Byte array sent!")
                await demo.expect(f"[client 2] Bytes received. Length: {len(DATA)}")

                response = await client1.request(
                    {"Message": "This message is waiting for an answer!", "ReplyRequired": True},
                    SOCKET_MESSAGE,
                    SOCKET_MESSAGE,
                    timeout=120,
                )
                assert response == {
                    "Message": "This is my answer from Client 2!",
                    "ReplyRequired": False,
                }
                console.append(response["Message"])

                response = await client1.request(
                    "This is a question. How do you do?", STRING, BOOLEAN, timeout=10
                )
                assert response is True
                console.append(f"The answer is {response}")  # C# writes a bool as True

                await client1.send(["Line 1", "Line 2"], LIST_OF_STRING)
                await demo.expect("[client 2] Line 1", "[client 2] Line 2")

                await client1.disconnect()

            assert console == [
                "Type message sent!",
                "Byte array sent!",
                "This is my answer from Client 2!",
                "The answer is True",
            ]
            # Nothing reached the .NET client but its two answers, and nothing broke it.
            assert client1.ignored == [] and client1.drops == []
            assert client1.connects == 1
            # Python client 2 said exactly what Client2.cs would have, in its order.
            await demo.expect(
                "[client 2] Type message received. Message: Hello from Client 1",
                f"[client 2] Bytes received. Length: {len(DATA)}",
                "[client 2] Type message received. Message: This message is waiting for an answer!",
                "[client 2] This is a question. How do you do?",
                "[client 2] Line 1",
                "[client 2] Line 2",
            )
            assert demo.said.text.count("[client 2] ") == 7  # those six and "connected"
            assert demo.process.returncode is None  # client 2 waits on, as Client2.cs does
    assert demo.complained.text == ""


# Client1.cs asks its user to make sure that the other client runs first; demo.py's
# client 1 also waits for a client 2 that comes later.
@pytest.mark.parametrize("client2_joins", ["first", "while client 1 waits"])
async def test_the_dotnet_client2_runs_its_demo_with_python_as_client1(
    client2_joins: str,
) -> None:
    with trio.fail_after(DEMO_LIMIT):
        async with AsyncExitStack() as stack:
            relay = await stack.enter_async_context(open_relay(RelayConfig(port=0)))
            if client2_joins != "first":
                demo = await stack.enter_async_context(running_demo("client1", relay.url))
                await demo.said.wait_for(r"\[client 1\] waiting for client 2 in group")
            url = dotnet_url(relay.url, GROUP)
            client = await stack.enter_async_context(open_dotnet_client(url))
            client2 = DotNetClient2(client)
            if client2_joins == "first":
                demo = await stack.enter_async_context(running_demo("client1", relay.url))
            assert await demo.process.wait() == 0, demo.complained.text
            # The list is the last thing sent; a client 2 that drops it says so in
            # `ignored`, which no event announces: so, a bound on the wait.
            with trio.move_on_after(LIST_LIMIT):
                await client2.lines_received.wait()
            await client.disconnect()

    # demo.py's client 1 asks "are you there?" (a string, answered True by Client2.cs's
    # On<string>) until client 2 answers, then runs Client1.cs's steps.
    assert client.ignored == [] and client.drops == []
    questions = 0
    while client2.console[questions:][:1] == ["Client 2, are you there?"]:
        questions += 1
    assert questions >= 1
    assert client2.console[questions:] == [
        "Type message received. Message: Hello from Client 1",
        f"Bytes received. Length: {len(DATA)}",
        "Type message received. Message: This message is waiting for an answer!",
        "This is a question. How do you do?",
        "Line 1",
        "Line 2",
    ]
    assert client.connects == 1
    await demo.expect(
        "[client 1] client 2 is here",
        "[client 1] Type message sent!",
        "[client 1] Byte array sent!",
        "[client 1] This is my answer from Client 2!",
        "[client 1] The answer is True",
        "[client 1] List of strings sent!",
    )
    assert demo.complained.text == ""
