"""The EasyWebSocketProxy demo (Client1 / Client2), ported to the Trio client.

    trio-wsproxy serve                      # the relay, ws://127.0.0.1:8765/ws
    python examples/demo.py                 # both clients in one process
    python examples/demo.py client2         # or: terminal 1, waits and answers ...
    python examples/demo.py client1         # ... terminal 2, sends

Client 2 waits and answers; client 1 first waits for client 2 (saying so, and asking
"are you there?" every second, since what is sent before client 2 joins reaches nobody),
then sends a typed message, a byte array, a request that waits for an answer, a question
answered with a bool, and a list of strings. The message
class travels as ``SharedData.Models.SocketMessage`` with PascalCase fields, exactly as
the .NET demo's, and the list as a .NET 7 ``List<string>``, the runtime the .NET demo is
built for, so either half can be the original .NET client.
"""

from __future__ import annotations

import argparse
import sys

import attrs
import trio

import trio_wsproxy
from trio_wsproxy import Client, ClientConfig, Incoming, message_type

DEFAULT_URL = "ws://127.0.0.1:8765/ws"
# How long client 1 waits for client 2 to answer "are you there?" before asking again: a
# message reaches only the members connected when it is sent, so a client 2 that starts
# later hears the next question, not this one.
PEER_QUESTION_INTERVAL = 1.0
# The .NET demo's projects target net7.0, and a .NET member matches a generic type name
# with its runtime version: a List<string> named for .NET 8 (what a client writes until a
# .NET member of its group has sent one, and the .NET Client2 never does) would never
# reach the .NET Client2's On<List<string>>.
DOTNET_DEMO_RUNTIME = "7.0.0.0"


@message_type("SharedData.Models.SocketMessage", pascal_case=True)
@attrs.frozen
class SocketMessage:
    """The .NET demo's ``SharedData.Models.SocketMessage``."""

    message: str | None = None
    reply_required: bool = False


def add_client2_handlers(client: Client, done: trio.Event | None = None) -> None:
    """What Client2.cs registers with ``On<T>``."""

    @client.on(SocketMessage)
    async def typed(message: SocketMessage, incoming: Incoming[SocketMessage]) -> None:
        print(f"[client 2] Type message received. Message: {message.message}")
        if message.reply_required and incoming.wants_reply:
            await incoming.reply(SocketMessage("This is my answer from Client 2!"))

    @client.on(bytes)
    def data(payload: bytes) -> None:
        print(f"[client 2] Bytes received. Length: {len(payload)}")

    @client.on(str)
    async def question(text: str, incoming: Incoming[str]) -> None:
        print(f"[client 2] {text}")
        if incoming.wants_reply:
            await incoming.reply(True)

    @client.on(list[str])
    def lines(received: list[str]) -> None:
        for line in received:
            print(f"[client 2] {line}")
        if done is not None:
            done.set()


async def wait_for_client2(client: Client, url: str, group: str) -> None:
    """Ask "are you there?" until client 2 answers (it answers every question with
    ``True``, as Client2.cs does), saying first whom client 1 waits for."""
    print(
        f"[client 1] waiting for client 2 in group {group!r} "
        f"(start it with: python examples/demo.py client2 --url {url} --group {group})",
        flush=True,
    )
    while True:
        try:
            await client.request("Client 2, are you there?", bool, timeout=PEER_QUESTION_INTERVAL)
        except trio_wsproxy.RequestTimeout:
            continue
        print("[client 1] client 2 is here", flush=True)
        return


async def client1(url: str, group: str) -> None:
    """Client1.cs: each step of the .NET demo, in order."""
    config = ClientConfig(dotnet_version=DOTNET_DEMO_RUNTIME)
    async with trio_wsproxy.open_client(url, group=group, config=config) as client:
        print(f"[client 1] connected to {url} in group {group!r} as {client.id}")

        await wait_for_client2(client, url, group)

        await client.send(SocketMessage("Hello from Client 1"))
        print("[client 1] Type message sent!")

        await client.send(b"Hello from Client 1! This is going to be a byte array message!")
        print("[client 1] Byte array sent!")

        answer = await client.request(
            SocketMessage("This message is waiting for an answer!", reply_required=True),
            SocketMessage,
            timeout=120,
        )
        print(f"[client 1] {answer.message}")

        agreed = await client.request("This is a question. How do you do?", bool, timeout=10)
        print(f"[client 1] The answer is {agreed}")

        await client.send(["Line 1", "Line 2"], as_type=list[str])
        print("[client 1] List of strings sent!")


async def client2(url: str, group: str) -> None:
    """Client2.cs: answer whatever comes, until Ctrl+C."""
    async with trio_wsproxy.open_client(url, group=group) as client:
        add_client2_handlers(client)
        print(f"[client 2] connected to {url} in group {group!r}; waiting for client 1...")
        await trio.sleep_forever()


async def both(url: str, group: str) -> None:
    """Client 2 first (so that it hears everything), then client 1."""
    done = trio.Event()
    async with trio_wsproxy.open_client(url, group=group) as second:
        add_client2_handlers(second, done)
        await client1(url, group)
        with trio.fail_after(10):
            await done.wait()  # client 2 has printed the last message


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("role", nargs="?", choices=["both", "client1", "client2"], default="both")
    parser.add_argument("--url", default=DEFAULT_URL, help=f"relay URL (default {DEFAULT_URL})")
    parser.add_argument("--group", default="group_1", help="group to join (default group_1)")
    args = parser.parse_args()
    run = {"both": both, "client1": client1, "client2": client2}[args.role]
    try:
        trio.run(run, args.url, args.group)
    except trio_wsproxy.ClientError as error:
        sys.exit(f"demo: {error}")
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
