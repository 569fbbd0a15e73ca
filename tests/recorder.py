"""A Python client's view of numbered messages across its reconnections: what its
handler saw, in order, and how each reconnection was resumed."""

from __future__ import annotations

from collections.abc import Callable

import trio

import trio_wsproxy
from loglines import LogLines
from trio_wsproxy import CloseCode, Relay
from wsraw import OP_BINARY, RawClient


def as_text(value: bytes) -> int:
    return int(value)


def as_u32(value: bytes) -> int:
    return int.from_bytes(value[:4], "big")


class Recorder:
    """Handlers for a client (:meth:`attach`) that note the number of each binary
    message (read by ``number``) and each Resumed event. With ``stall_at``, the handler
    stalls on that message until :attr:`release` is set (its mailbox on the relay then
    fills)."""

    def __init__(self, number: Callable[[bytes], int], stall_at: int | None = None) -> None:
        self.seen: list[int] = []
        self.resumed: list[trio_wsproxy.Resumed] = []
        self.release = trio.Event()
        #: Set when the client hears it was closed with 4001 (pass :meth:`on_disconnect`).
        self.closed_slow = trio.Event()
        self._number = number
        self._stall_at = stall_at
        self._reached: dict[int, trio.Event] = {}

    def attach(self, client: trio_wsproxy.Client) -> None:
        client.on(bytes, self._on_bytes)
        client.on(trio_wsproxy.Resumed, self._on_resumed)

    def on_disconnect(self, event: trio_wsproxy.Disconnected) -> None:
        if event.code == CloseCode.SLOW_CONSUMER:
            self.closed_slow.set()

    async def _on_bytes(self, value: bytes, incoming: trio_wsproxy.Incoming[bytes]) -> None:
        self.seen.append(self._number(value))
        reached = self._reached.pop(len(self.seen), None)
        if reached is not None:
            reached.set()
        if len(self.seen) == self._stall_at:
            await self.release.wait()

    async def _on_resumed(self, value: trio_wsproxy.Resumed, _: object) -> None:
        self.resumed.append(value)

    async def saw(self, count: int) -> None:
        """Wait until the handler has seen ``count`` messages."""
        if len(self.seen) < count:
            await self._reached.setdefault(count, trio.Event()).wait()

    def check(self, count: int) -> None:
        """Every message 0 to ``count - 1`` exactly once, in order, and every
        reconnection (there was at least one) recovered."""
        assert self.seen == list(range(count))
        assert self.resumed and all(event.recovered for event in self.resumed), self.resumed


async def stall_into_4001(
    recorder: Recorder, sender: RawClient, count: int, node: Relay, relay_log: LogLines
) -> None:
    """Send ``count`` numbered messages of 8 KiB while the recorder's handler stalls,
    until ``node`` closes the client with 4001; then let the handler go on."""
    for n in range(count):
        # More than the kernel's socket buffers hold for the client.
        await sender.send_frame(OP_BINARY, n.to_bytes(4, "big") + bytes(8192))
        if n == 20:
            await recorder.saw(10)
    # (Awaited in the log: the client may be back before this task looks.)
    await relay_log.wait_for("closing with 4001")
    # (More than once, if it came back before its handler was released.)
    assert node.counters.closes[CloseCode.SLOW_CONSUMER] >= 1
    recorder.release.set()
