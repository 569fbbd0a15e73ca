"""Send files through the relay, one binary message per file, and check them.

    trio-wsproxy serve                                        # the relay
    python examples/file_transfer.py receive --out downloads   # terminal 1
    python examples/file_transfer.py send big.iso notes.txt    # terminal 2

Each file is one message, however big, streamed from disk to disk in flat memory: the
sender reads it a piece at a time as the relay and the receiver take it
(``Client.send_stream``), the receiver writes each piece as it arrives (a
``BinaryStream``). The file's name and size travel ahead of it in a typed ``Offer`` that
announces the stream (``send_stream(..., announce=offer)`` and ``Client.on_stream``), so
several senders may send to one receiver at once. Afterwards the sender asks for a
receipt and compares its SHA-256 with its own. Both sides draw a progress bar (bytes,
rate, time left) on stderr.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import trio

import trio_wsproxy
from trio_wsproxy import BinaryStream, Client, Incoming, StreamInterrupted, message_type

DEFAULT_URL = "ws://127.0.0.1:8765/ws"
MiB = 1024 * 1024


@message_type("FileTransfer.Offer")
@attrs.frozen
class Offer:
    """Announces the file that streams right after it."""

    transfer_id: str
    name: str
    size: int


@message_type("FileTransfer.Finished")
@attrs.frozen
class Finished:
    """Sent after the file (a request): answered with a Receipt."""

    transfer_id: str


@message_type("FileTransfer.Receipt")
@attrs.frozen
class Receipt:
    """What the receiver got: ``size`` is -1 when the file did not arrive whole."""

    transfer_id: str
    size: int
    sha256: str


class Progress:
    """A one-line progress bar on stderr (plain text, redrawn with a carriage return)."""

    WIDTH = 30

    def __init__(self, label: str, total: int) -> None:
        self.label, self.total, self.done = label, total, 0
        self.started = time.monotonic()
        self._drawn = -1.0

    def advance(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if now - self._drawn >= 0.1 or self.done >= self.total:  # at most 10 redraws a second
            self._drawn = now
            fraction = self.done / self.total if self.total else 1.0
            filled = int(fraction * self.WIDTH)
            elapsed = max(now - self.started, 1e-6)
            rate = self.done / elapsed
            left = (self.total - self.done) / rate if rate else 0.0
            sys.stderr.write(
                f"\r{self.label} [{'#' * filled}{'.' * (self.WIDTH - filled)}] {fraction:6.1%} "
                f"{self.done / MiB:8.1f}/{self.total / MiB:.1f} MiB {rate / MiB:7.1f} MiB/s "
                f"ETA {_duration(left)}"
            )
            sys.stderr.flush()

    def finish(self) -> None:
        sys.stderr.write("\n")
        sys.stderr.flush()


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds + 0.5), 60)
    return f"{minutes:d}:{seconds:02d}"


# -- sending ------------------------------------------------------------------------------


async def send(url: str, group: str, paths: list[Path]) -> None:
    async with trio_wsproxy.open_client(url, group=group) as client:
        async with client.subscribe(trio_wsproxy.Joined) as joins:
            with trio.move_on_after(10):
                while not client.members:  # wsproxy.v1 presence: someone to send to
                    await joins.receive()
        if not client.members:
            sys.exit(f"file_transfer: nobody else is in group {group!r}")
        for path in paths:
            await send_file(client, path)


async def send_file(client: Client, path: Path) -> None:
    size = (await trio.Path(path).stat()).st_size
    offer = Offer(str(uuid.uuid4()), path.name, size)
    progress = Progress(f"send {path.name}", size)
    digest = hashlib.sha256()

    async def pieces() -> AsyncIterator[bytes]:
        # Read a piece only when the last one is on its way: the relay sets the pace.
        async with await trio.open_file(path, "rb") as file:
            while piece := await file.read(MiB):
                digest.update(piece)
                progress.advance(len(piece))
                yield piece

    sent = await client.send_stream(pieces(), announce=offer)
    progress.finish()
    receipt = await client.request(Finished(offer.transfer_id), Receipt, timeout=60)
    if receipt.size != sent or receipt.sha256 != digest.hexdigest():
        sys.exit(
            f"file_transfer: MISMATCH: sent {sent} bytes sha256 {digest.hexdigest()}, "
            f"receiver got {receipt.size} bytes sha256 {receipt.sha256}"
        )
    print(f"sent {path.name}: {sent} bytes, sha256 {receipt.sha256} verified by the receiver")


# -- receiving ----------------------------------------------------------------------------


class Receiver:
    """Writes each offered file into ``directory``; answers each Finished with a receipt."""

    def __init__(self, directory: Path, once: bool) -> None:
        self.directory = directory
        self.once = once
        self.receipts: dict[str, Receipt] = {}
        self.finished = trio.Event()
        self.registered = False

    def register(self, client: Client) -> None:
        if not self.registered:  # (on_connect runs on every reconnection too)
            self.registered = True
            client.on_stream(Offer, self.on_file)
            client.on(Finished, self.on_finished)

    async def on_file(self, offer: Offer, stream: BinaryStream) -> None:
        path = self.directory / Path(offer.name).name  # never outside the directory
        progress = Progress(f"receive {path.name}", offer.size)
        digest = hashlib.sha256()
        try:
            async with await trio.open_file(path, "wb") as file:
                async for piece in stream:
                    await file.write(piece)
                    digest.update(piece)
                    progress.advance(len(piece))
        except StreamInterrupted as error:
            progress.finish()
            path.unlink()
            print(f"gave up on {path}: {error}", file=sys.stderr)
            self.receipts[offer.transfer_id] = Receipt(offer.transfer_id, -1, "")
            return
        progress.finish()
        self.receipts[offer.transfer_id] = Receipt(
            offer.transfer_id, stream.received, digest.hexdigest()
        )
        status = "complete" if stream.received == offer.size else "SIZE DIFFERS FROM THE OFFER"
        print(f"received {path}: {stream.received} bytes ({status}), sha256 {digest.hexdigest()}")

    async def on_finished(self, finished: Finished, incoming: Incoming[Finished]) -> None:
        receipt = self.receipts.pop(finished.transfer_id, None)
        if receipt is None:
            return  # another receiver's transfer
        await incoming.reply(receipt)
        if self.once:
            self.finished.set()


async def receive(url: str, group: str, directory: Path, once: bool) -> None:
    receiver = Receiver(directory, once)
    # Registered on connecting, before any message is handled.
    async with trio_wsproxy.open_client(url, group=group, on_connect=receiver.register):
        print(f"waiting for files in group {group!r}; saving them to {directory}/")
        await receiver.finished.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=DEFAULT_URL, help=f"relay URL (default {DEFAULT_URL})")
    parser.add_argument("--group", default="files", help="group to meet in (default files)")
    commands = parser.add_subparsers(dest="command", required=True)
    sender = commands.add_parser("send", help="send files")
    sender.add_argument("paths", type=Path, nargs="+", metavar="path")
    receiver = commands.add_parser("receive", help="receive files")
    receiver.add_argument("--out", type=Path, default=Path("."), help="directory to save to")
    receiver.add_argument("--once", action="store_true", help="exit after one file")
    args = parser.parse_args()
    try:
        if args.command == "send":
            trio.run(send, args.url, args.group, args.paths)
        else:
            args.out.mkdir(parents=True, exist_ok=True)
            trio.run(receive, args.url, args.group, args.out, args.once)
    except trio_wsproxy.ClientError as error:
        sys.exit(f"file_transfer: {error}")
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
