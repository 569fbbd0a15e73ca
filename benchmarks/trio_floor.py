"""The floor of a relay on Trio: the least Python a Trio relay can run per message.

    python benchmarks/trio_floor.py PORT             # a task per member
    python benchmarks/trio_floor.py PORT --poller    # one task reads for all members

A measuring stick, not a relay: it answers the handshake of the group URL
(``/ws?id=ID&groupName=GROUP``) as the relay does (protocol/handshake.py: a bad request
gets the relay's 400) and forwards each whole short frame (at most 125 bytes of payload,
in one read) to the other members of its group, unmasked and reframed, with one
``os.write`` each. It checks nothing else in what members send, has no mailbox, no
limits, no history, and ends a member at anything it does not take. What it costs per
message is what Trio's scheduler and the system calls cost, plus the fewest bytecodes
that read, unmask, frame and write: no relay on Trio can cost less with the same system
calls.

``benchmarks/one_in_flight.py --relay floor='python benchmarks/trio_floor.py {port}'``
sets it beside trio_wsproxy and ``picows`` (see the performance page).

Two ways to wait, as trio_wsproxy has:

- a task per member: ``wait_readable`` on the member's socket, then one read (Trio's
  ``epoll_wait``, its ``epoll_ctl`` re-arming the one-shot registration, ``read``,
  ``write``);
- ``--poller``: one task waits for an epoll set of its own that holds every member's
  socket (level-triggered, registered once), then asks that set which are ready (one
  ``epoll_wait`` more, no ``epoll_ctl`` of its own: Trio's re-arming of the set's one
  registration instead).
"""

from __future__ import annotations

import argparse
import functools
import os
import select

import trio

from trio_wsproxy.protocol.frames import FINAL_SHORT_HEADERS, _xor
from trio_wsproxy.protocol.handshake import Join, Limits, Refusal, decide, head_complete

#: The handshake's checks: the relay's defaults.
LIMITS = Limits()
#: Members by group: their sockets' descriptors.
groups: dict[str, list[int]] = {}


def forward(fd: int, members: list[int]) -> bool:
    """Read once from ``fd`` and forward the whole short frame it holds; False at
    anything else (the member is ended)."""
    try:
        data = os.read(fd, 65536)
    except BlockingIOError:
        return True
    except OSError:
        return False
    n = len(data) - 6
    if n < 0 or data[0] not in (0x81, 0x82) or data[1] != 0x80 | n or n > 125:
        return False
    # (Unmasked as the relay unmasks: websockets' C where it is built.)
    out = FINAL_SHORT_HEADERS[data[0] & 0x0F][n] + _xor(data[6:], data[2:6])
    for other in members:
        if other != fd:
            os.write(other, out)
    return True


async def handshake(stream: trio.SocketStream) -> tuple[int, str] | None:
    """Answer the upgrade request with the relay's own rules (protocol/handshake.py); the
    member's descriptor and group (None: refused, or gone)."""
    request = b""
    while not head_complete(request, LIMITS):
        chunk = await stream.receive_some(4096)
        if not chunk:
            return None
        request += chunk
    decision = decide(request, LIMITS)
    if isinstance(decision, Join):
        await stream.send_all(decision.response)
        return stream.socket.fileno(), decision.group
    if isinstance(decision, Refusal):
        await stream.send_all(decision.response)
    return None  # (a probe: LIMITS names none)


class Poller:
    """One task waiting for an epoll set of every member's socket."""

    def __init__(self) -> None:
        self.epoll = select.epoll()
        self.members: dict[int, tuple[list[int], trio.Event]] = {}

    async def run(self) -> None:
        wait_readable, fileno, poll, members = (
            trio.lowlevel.wait_readable,
            self.epoll.fileno(),
            self.epoll.poll,
            self.members,
        )
        while True:
            await wait_readable(fileno)
            for fd, _ in poll(0):
                group, ended = members[fd]
                if not forward(fd, group):
                    self.epoll.unregister(fd)
                    del members[fd]
                    ended.set()

    async def serve(self, fd: int, group: list[int]) -> None:
        ended = trio.Event()
        self.members[fd] = (group, ended)
        self.epoll.register(fd, select.EPOLLIN)
        await ended.wait()


async def own_task(fd: int, group: list[int]) -> None:
    wait_readable = trio.lowlevel.wait_readable
    while True:
        await wait_readable(fd)
        if not forward(fd, group):
            return


async def main(port: int, shared: bool) -> None:
    poller = Poller() if shared else None

    async def member(stream: trio.SocketStream) -> None:
        async with stream:
            joined = await handshake(stream)
            if joined is None:
                return
            fd, name = joined
            group = groups.setdefault(name, [])
            group.append(fd)
            try:
                if poller is not None:
                    await poller.serve(fd, group)
                else:
                    await own_task(fd, group)
            finally:
                group.remove(fd)
                if not group:
                    del groups[name]

    async with trio.open_nursery() as nursery:
        if poller is not None:
            nursery.start_soon(poller.run)
        # (Trio's SocketStream sets TCP_NODELAY on each member's socket.)
        serve = functools.partial(trio.serve_tcp, member, port, host="127.0.0.1")
        listeners = await nursery.start(serve)
        print(f"listening {listeners[0].socket.getsockname()[1]}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("port", type=int, help="0: any free port (printed)")
    parser.add_argument(
        "--poller", action="store_true", help="one task reads for every member (an epoll set)"
    )
    args = parser.parse_args()
    trio.run(main, args.port, args.poller)
