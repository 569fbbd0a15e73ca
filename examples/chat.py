"""A chat room in the terminal: run it in two (or more) terminals.

    trio-wsproxy serve                          # the relay, ws://127.0.0.1:8765/ws
    python examples/chat.py --name alice        # terminal 1
    python examples/chat.py --name bob          # terminal 2

Type a line and press Enter to say it; ``/who`` asks who is here (a request every member
answers: the answers that come within ``--who-window`` seconds are listed), ``/quit`` or
Ctrl+D leaves. If the relay restarts, the client reconnects by itself and says so in
status lines (``* ...``) of the chat, not in log records between its lines.

Standard input is read with ``trio.lowlevel.FdStream`` on a duplicate of fd 0 (Unix), so
the whole program is one Trio event loop: no thread waits on the keyboard.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import re
import sys
import uuid

import attrs
import trio

import trio_wsproxy
from trio_wsproxy import Client, Disconnected, Incoming, message_type

DEFAULT_URL = "ws://127.0.0.1:8765/ws"
# How long /who collects answers. Every member answers at once, so a second is plenty on
# a working network; nobody can know when the last one is in (the room has no roster).
DEFAULT_WHO_WINDOW = 1.0


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
    """A roll call; every member replies to it with a :class:`HereIs`."""

    #: Names this roll call, so that answers to another one (anyone's replies reach the
    #: whole room) are told apart.
    roll: str = ""


@message_type("Chat.HereIs")
@attrs.frozen
class HereIs:
    """An answer to a roll call."""

    name: str
    roll: str = ""


# A relay URL's query (the client's id and group): the same on every status line, and long.
_QUERY = re.compile(r"(wss?://[^\s?]+)\?[^\s:]*")


def say(text: str) -> None:
    print(text, flush=True)


def status(text: str) -> None:
    """A status line of the chat: ``* text``, relay URLs without their query."""
    say("* " + _QUERY.sub(r"\1", text))


class StatusLines(logging.Handler):
    """The client library's warnings (a reconnect attempt that failed, a dead link) as
    status lines of the chat, ``* ...`` on standard output, instead of log records
    printed on stderr between the lines of the conversation."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        # The library logs each lost connection too; on_disconnect already says so.
        self.addFilter(lambda record: not str(record.msg).startswith("disconnected from"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            status(record.getMessage())
        except Exception:  # as logging.StreamHandler does: a broken record is no crash
            self.handleError(record)


def show_library_warnings_as_status_lines() -> None:
    library = logging.getLogger("trio_wsproxy")
    library.addHandler(StatusLines())
    library.propagate = False  # and not also through logging's last resort, on stderr


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
    async def roll_call(call: WhoIsHere, incoming: Incoming[WhoIsHere]) -> None:
        await incoming.reply(HereIs(name, call.roll))


async def who_is_here(client: Client, name: str, window: float) -> list[str]:
    """Ask the room who is here; every member that answers within ``window`` seconds,
    you first, the others sorted.

    Every member replies to the request. ``request`` returns the first reply; the others
    reply to the same request after it has been answered, so they arrive as ordinary
    messages, which the subscription (opened before asking) collects until the window
    closes."""
    roll = uuid.uuid4().hex
    deadline = trio.current_time() + window
    here: list[str] = []
    async with client.subscribe(HereIs, buffer=256) as answers:
        try:
            first = await client.request(WhoIsHere(roll), HereIs, timeout=window)
        except trio_wsproxy.RequestTimeout:
            return [f"{name} (you)"]
        here.append(first.name)
        with trio.move_on_at(deadline):
            async for incoming in answers:
                if incoming.value.roll == roll:
                    here.append(incoming.value.name)
    return [f"{name} (you)", *sorted(here)]


async def chat(url: str, room: str, name: str, who_window: float = DEFAULT_WHO_WINDOW) -> None:
    def connected(client: Client) -> None:
        status(f"connected to {client.url}")

    def disconnected(event: Disconnected) -> None:
        why = f"code {event.code}" + (f": {event.reason}" if event.reason else "")
        again = "reconnecting..." if event.reconnecting else "giving up"
        status(f"lost the connection ({why}); {again}")

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
                    here = await who_is_here(client, name, who_window)
                    if len(here) == 1:
                        say("* nobody else is here")
                    else:
                        say(f"* {len(here)} here: {', '.join(here)}")
                elif text.strip():
                    await client.send(Line(name, text, dt.datetime.now(dt.UTC)))
        await client.send(Presence(name, here=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", default=os.environ.get("USER", "anonymous"))
    parser.add_argument("--room", default="lobby", help="group to join (default lobby)")
    parser.add_argument("--url", default=DEFAULT_URL, help=f"relay URL (default {DEFAULT_URL})")
    parser.add_argument(
        "--who-window",
        type=float,
        default=DEFAULT_WHO_WINDOW,
        metavar="SECONDS",
        help=f"how long /who collects answers (default {DEFAULT_WHO_WINDOW:g})",
    )
    args = parser.parse_args()
    if not args.who_window > 0:
        parser.error(f"--who-window must be positive, got {args.who_window:g}")
    show_library_warnings_as_status_lines()
    try:
        trio.run(chat, args.url, args.room, args.name, args.who_window)
    except trio_wsproxy.ClientError as error:
        sys.exit(f"chat: {error}")
    except KeyboardInterrupt:
        pass
    finally:
        # FdStream made the terminal's (shared) stdin non-blocking; give it back as it was.
        os.set_blocking(sys.stdin.fileno(), True)


if __name__ == "__main__":
    main()
