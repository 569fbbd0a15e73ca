"""A chat room in the terminal: run it in two (or more) terminals.

    trio-wsproxy serve                          # the relay, ws://127.0.0.1:8765/ws
    python examples/chat.py --name alice        # terminal 1
    python examples/chat.py --name bob          # terminal 2

Type a line and press Enter to say it; ``/who`` asks who is here (a request every member
answers), ``/quit`` or Ctrl+D leaves. If the relay restarts, the client reconnects by
itself and says so.

Standard input is read with ``trio.lowlevel.FdStream`` on a duplicate of fd 0 (Unix), so
the whole program is one Trio event loop: no thread waits on the keyboard.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys

import attrs
import trio

import trio_wsproxy
from trio_wsproxy import Client, Disconnected, Incoming, message_type

DEFAULT_URL = "ws://127.0.0.1:8765/ws"


@message_type("Chat.Line")
@attrs.frozen
class Line:
    """Something someone said."""

    name: str
    text: str
    sent_at: dt.datetime


@message_type("Chat.Presence")
@attrs.frozen
class Presence:
    """Someone came or went."""

    name: str
    here: bool


@message_type("Chat.WhoIsHere")
@attrs.frozen
class WhoIsHere:
    """A roll call; every member answers with its name."""


def say(text: str) -> None:
    print(text, flush=True)


class TerminalLines:
    """Lines typed on standard input, read without a thread: ``async for line in ...``."""

    def __init__(self) -> None:
        self._stream = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
        self._partial = b""
        self._lines: list[bytes] = []

    async def __aenter__(self) -> TerminalLines:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stream.aclose()

    def __aiter__(self) -> TerminalLines:
        return self

    async def __anext__(self) -> str:
        while not self._lines:
            chunk = await self._stream.receive_some()
            if not chunk:  # end of input (Ctrl+D)
                if not self._partial:
                    raise StopAsyncIteration
                self._lines.append(self._partial)
                self._partial = b""
                break
            *complete, self._partial = (self._partial + chunk).split(b"\n")
            self._lines.extend(complete)
        return self._lines.pop(0).decode(errors="replace").rstrip("\r")


def register_handlers(client: Client, name: str) -> None:
    @client.on(Line)
    def show(line: Line) -> None:
        say(f"[{line.sent_at.astimezone():%H:%M:%S}] {line.name}: {line.text}")

    @client.on(Presence)
    def presence(event: Presence) -> None:
        say(f"* {event.name} {'joined' if event.here else 'left'}")

    @client.on(WhoIsHere)
    async def roll_call(_: WhoIsHere, incoming: Incoming[WhoIsHere]) -> None:
        await incoming.reply(name)


async def who_is_here(client: Client) -> None:
    """Ask the room; the first answer comes back from ``request``, which is enough to know
    someone is there (every member answers, but one request takes one answer)."""
    try:
        first = await client.request(WhoIsHere(), str, timeout=2)
    except trio_wsproxy.RequestTimeout:
        say("* nobody else is here")
    else:
        say(f"* {first} is here (and maybe others)")


async def chat(url: str, room: str, name: str) -> None:
    def connected(client: Client) -> None:
        say(f"* connected to {client.url}")

    def disconnected(event: Disconnected) -> None:
        again = "reconnecting..." if event.reconnecting else "giving up"
        say(f"* lost the connection (code {event.code}); {again}")

    async with trio_wsproxy.open_client(
        url, group=room, on_connect=connected, on_disconnect=disconnected
    ) as client:
        register_handlers(client, name)
        await client.send(Presence(name, here=True))
        say(f"* you are {name} in room {room!r}; /who, /quit or Ctrl+D to leave")
        async with TerminalLines() as lines:
            async for text in lines:
                if text == "/quit":
                    break
                if text == "/who":
                    await who_is_here(client)
                elif text.strip():
                    await client.send(Line(name, text, dt.datetime.now(dt.UTC)))
        await client.send(Presence(name, here=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", default=os.environ.get("USER", "anonymous"))
    parser.add_argument("--room", default="lobby", help="group to join (default lobby)")
    parser.add_argument("--url", default=DEFAULT_URL, help=f"relay URL (default {DEFAULT_URL})")
    args = parser.parse_args()
    try:
        trio.run(chat, args.url, args.room, args.name)
    except trio_wsproxy.ClientError as error:
        sys.exit(f"chat: {error}")
    except KeyboardInterrupt:
        pass
    finally:
        # FdStream made the terminal's (shared) stdin non-blocking; give it back as it was.
        os.set_blocking(sys.stdin.fileno(), True)


if __name__ == "__main__":
    main()
