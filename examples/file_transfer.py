"""Send a file through the relay, as binary chunks or as one binary message, and check it.

    trio-wsproxy serve                                       # the relay
    python examples/file_transfer.py receive --out downloads  # terminal 1
    python examples/file_transfer.py send big.iso             # terminal 2 (1 MiB chunks)
    python examples/file_transfer.py send big.iso --whole     # or: one 100 MiB+ message

The sender asks first (a request, so it knows a receiver is there), streams the bytes as
binary frames, then asks the receiver for the SHA-256 of what arrived and compares it
with its own. Both sides draw a progress bar on stderr.

One transfer at a time per group: binary frames carry no envelope, so the receiver takes
every binary frame as the next piece of the file it was offered. Messages from one
sender arrive in order, typed and binary alike, which is what makes this work.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
import uuid
from pathlib import Path
from typing import Any, BinaryIO

import attrs
import trio

import trio_wsproxy
from trio_wsproxy import Client, Incoming, message_type

DEFAULT_URL = "ws://127.0.0.1:8765/ws"
MiB = 1024 * 1024


@message_type("FileTransfer.Offer")
@attrs.frozen
class Offer:
    """A file about to be sent; answered with True when the receiver is ready."""

    transfer_id: str
    name: str
    size: int


@message_type("FileTransfer.Finished")
@attrs.frozen
class Finished:
    """All bytes were sent; answered with a Receipt."""

    transfer_id: str


@message_type("FileTransfer.Receipt")
@attrs.frozen
class Receipt:
    """What the receiver got."""

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
            rate = self.done / MiB / max(now - self.started, 1e-6)
            sys.stderr.write(
                f"\r{self.label} [{'#' * filled}{'.' * (self.WIDTH - filled)}] {fraction:6.1%} "
                f"{self.done / MiB:8.1f}/{self.total / MiB:.1f} MiB {rate:7.1f} MiB/s"
            )
            sys.stderr.flush()

    def finish(self) -> None:
        sys.stderr.write("\n")
        sys.stderr.flush()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(MiB):
            digest.update(chunk)
    return digest.hexdigest()


# -- sending ------------------------------------------------------------------------------


async def send(url: str, group: str, path: Path, size: int, chunk_size: int, whole: bool) -> None:
    offer = Offer(str(uuid.uuid4()), path.name, size)
    async with trio_wsproxy.open_client(url, group=group) as client:
        try:
            await client.request(offer, bool, timeout=10)
        except trio_wsproxy.RequestTimeout:
            sys.exit(f"file_transfer: no receiver answered in group {group!r}")
        progress = Progress(f"send {path.name}", size)
        digest = hashlib.sha256()
        # Plain blocking reads: a local file answers in microseconds, and Trio's async file
        # API would hand each read to a worker thread.
        with path.open("rb") as file:
            if whole:
                data = file.read()
                digest.update(data)
                await client.send(data)  # one binary message, however big
                progress.advance(len(data))
            else:
                while chunk := file.read(chunk_size):
                    digest.update(chunk)
                    await client.send(chunk)  # waits while the relay and receiver catch up
                    progress.advance(len(chunk))
        progress.finish()
        receipt = await client.request(Finished(offer.transfer_id), Receipt, timeout=60)
    if receipt.size != size or receipt.sha256 != digest.hexdigest():
        sys.exit(
            f"file_transfer: MISMATCH: sent {size} bytes sha256 {digest.hexdigest()}, "
            f"receiver got {receipt.size} bytes sha256 {receipt.sha256}"
        )
    print(f"sent {path.name}: {size} bytes, sha256 {receipt.sha256} verified by the receiver")


# -- receiving ----------------------------------------------------------------------------


@attrs.define
class IncomingFile:
    offer: Offer
    path: Path
    file: BinaryIO
    progress: Progress
    digest: Any = attrs.field(factory=hashlib.sha256)  # hashlib._Hash is not public
    received: int = 0


class Receiver:
    """Writes each offered file into ``directory``, one transfer at a time."""

    def __init__(self, directory: Path, once: bool) -> None:
        self.directory = directory
        self.once = once
        self.current: IncomingFile | None = None
        self.finished = trio.Event()

    def register(self, client: Client) -> None:
        client.on(Offer, self.on_offer)
        client.on(bytes, self.on_bytes)
        client.on(Finished, self.on_finished)

    async def on_offer(self, offer: Offer, incoming: Incoming[Offer]) -> None:
        if self.current is not None:
            print(f"busy with {self.current.offer.name}; ignoring the offer of {offer.name}")
            return
        path = self.directory / Path(offer.name).name  # never outside the directory
        self.current = IncomingFile(
            offer, path, path.open("wb"), Progress(f"receive {path.name}", offer.size)
        )
        await incoming.reply(True)

    def on_bytes(self, chunk: bytes) -> None:
        if self.current is None:
            print(f"ignoring {len(chunk)} bytes that belong to no offered file", file=sys.stderr)
            return
        self.current.file.write(chunk)  # blocking, as for the sender: local and quick
        self.current.digest.update(chunk)
        self.current.received += len(chunk)
        self.current.progress.advance(len(chunk))

    async def on_finished(self, finished: Finished, incoming: Incoming[Finished]) -> None:
        current = self.current
        if current is None or current.offer.transfer_id != finished.transfer_id:
            return
        self.current = None
        current.file.close()
        current.progress.finish()
        receipt = Receipt(finished.transfer_id, current.received, current.digest.hexdigest())
        await incoming.reply(receipt)
        status = "complete" if current.received == current.offer.size else "INCOMPLETE"
        print(
            f"received {current.path}: {current.received} bytes ({status}), sha256 {receipt.sha256}"
        )
        if self.once:
            self.finished.set()


async def receive(url: str, group: str, directory: Path, once: bool) -> None:
    receiver = Receiver(directory, once)
    async with trio_wsproxy.open_client(url, group=group) as client:
        receiver.register(client)
        print(f"waiting for files in group {group!r}; saving them to {directory}/")
        await receiver.finished.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=DEFAULT_URL, help=f"relay URL (default {DEFAULT_URL})")
    parser.add_argument("--group", default="files", help="group to meet in (default files)")
    commands = parser.add_subparsers(dest="command", required=True)
    sender = commands.add_parser("send", help="send a file")
    sender.add_argument("path", type=Path)
    sender.add_argument("--chunk-size", type=int, default=MiB, help="bytes per binary frame")
    sender.add_argument("--whole", action="store_true", help="send the file as one message")
    receiver = commands.add_parser("receive", help="receive files")
    receiver.add_argument("--out", type=Path, default=Path("."), help="directory to save to")
    receiver.add_argument("--once", action="store_true", help="exit after one file")
    args = parser.parse_args()
    try:
        if args.command == "send":
            size = args.path.stat().st_size
            trio.run(send, args.url, args.group, args.path, size, args.chunk_size, args.whole)
        else:
            args.out.mkdir(parents=True, exist_ok=True)
            trio.run(receive, args.url, args.group, args.out, args.once)
    except trio_wsproxy.ClientError as error:
        sys.exit(f"file_transfer: {error}")
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
