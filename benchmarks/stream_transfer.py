"""One file as one message, from disk through a relay process to disk: trio_wsproxy's
streaming clients against two asyncio ``websockets`` clients that hold the message in
memory (the way a websockets client sends and receives one message).

    python benchmarks/stream_transfer.py [--gib 1] [--only trio]

Needs ``pip install websockets`` (unless ``--only trio``). Writes a file of ``--gib``
GiB, starts ``python -m trio_wsproxy serve`` and, for each pair of clients, a receiver
process and then a sender process. The sender notes the time just before it starts
sending, the receiver just after the file it wrote is closed; each reports its peak
memory (VmHWM, from /proc). The copy is checked byte for byte (SHA-256) outside the
timing. Prints one JSON line per pair, then the ratio of their transfer times.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio
from compare import proc_mem
from relay_process import start_relay

MiB = 1024 * 1024
HERE = Path(__file__).resolve()


def peak_mib() -> float:
    return proc_mem(os.getpid())["VmHWM"]


def report(**fields: object) -> None:
    print(json.dumps({**fields, "peak_mib": round(peak_mib(), 1)}), flush=True)


# -- the trio_wsproxy pair ------------------------------------------------------------------


async def trio_send(url: str, path: str) -> None:
    import trio_wsproxy

    # The receiver joined before this process started (a join is complete when the
    # relay answers it), so the message has someone to go to.
    async with trio_wsproxy.open_client(url, group="transfer", id="sender") as client:
        started = time.time()
        await client.send_stream(path)
    report(started=started)


async def trio_receive(url: str, out: str) -> None:
    import trio_wsproxy

    done = trio.Event()
    finished = 0.0

    async def save(stream: trio_wsproxy.BinaryStream) -> None:
        nonlocal finished
        async with await trio.open_file(out, "wb") as file:
            async for piece in stream:
                await file.write(piece)
        finished = time.time()
        done.set()

    async with trio_wsproxy.open_client(url, group="transfer", id="receiver") as client:
        client.on(trio_wsproxy.BinaryStream, save)
        print("ready", flush=True)
        await done.wait()
    report(finished=finished)


# -- the websockets pair --------------------------------------------------------------------


async def websockets_send(url: str, path: str) -> None:
    from websockets.asyncio.client import connect

    async with connect(f"{url}?id=sender&groupName=transfer", max_size=None) as ws:
        started = time.time()
        # The websockets way: the message is one bytes object (blocking reads, as an
        # asyncio program that holds a file in memory does).
        with open(path, "rb") as file:  # noqa: ASYNC230
            data = file.read()
        await ws.send(data)
    report(started=started)


async def websockets_receive(url: str, out: str) -> None:
    from websockets.asyncio.client import connect

    async with connect(f"{url}?id=receiver&groupName=transfer", max_size=None) as ws:
        print("ready", flush=True)
        data = await ws.recv()
        with open(out, "wb") as file:  # noqa: ASYNC230
            file.write(data)
        finished = time.time()
    report(finished=finished)


ROLES = {
    "trio-send": lambda url, path: trio.run(trio_send, url, path),
    "trio-receive": lambda url, path: trio.run(trio_receive, url, path),
    "websockets-send": lambda url, path: _asyncio_run(websockets_send(url, path)),
    "websockets-receive": lambda url, path: _asyncio_run(websockets_receive(url, path)),
}


def _asyncio_run(coroutine: object) -> None:
    import asyncio

    asyncio.run(coroutine)  # type: ignore[arg-type]


# -- the orchestration ----------------------------------------------------------------------


async def transfer(pair: str, url: str, source: Path, out: Path, size: int) -> dict[str, object]:
    def command(role: str, path: Path) -> list[str]:
        return [sys.executable, str(HERE), "--role", f"{pair}-{role}", url, str(path)]

    receiver = await trio.lowlevel.open_process(command("receive", out), stdout=subprocess.PIPE)
    assert receiver.stdout is not None
    received = b""
    while b"ready\n" not in received:
        chunk = await receiver.stdout.receive_some(4096)
        if not chunk:
            raise RuntimeError("the receiver exited before it was ready")
        received += chunk
    sender = await trio.run_process(command("send", source), capture_stdout=True)
    async for chunk in receiver.stdout:
        received += chunk
    await receiver.wait()
    sent = json.loads(sender.stdout.decode().strip().splitlines()[-1])
    got = json.loads(received.decode().strip().splitlines()[-1])
    intact = await trio.to_thread.run_sync(lambda: _sha256(out) == _sha256(source))
    await trio.Path(out).unlink()
    seconds = got["finished"] - sent["started"]
    return {
        "pair": pair,
        "bytes": size,
        "seconds": round(seconds, 2),
        "mib_per_s": round(size / MiB / seconds, 1),
        "sender_peak_mib": sent["peak_mib"],
        "receiver_peak_mib": got["peak_mib"],
        "intact": intact,
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(8 * MiB):
            digest.update(block)
    return digest.hexdigest()


def write_source(path: Path, size: int) -> None:
    block = os.urandom(16 * MiB)
    with path.open("wb") as file:
        for index in range(size // len(block)):
            # Each block differs from the others: a piece repeated or dropped shows.
            file.write(index.to_bytes(8, "big") + block[8:])
        file.write(block[: size % len(block)])


async def main(gib: float, pairs: list[str]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        source, out = Path(directory, "source.bin"), Path(directory, "copy.bin")
        size = int(gib * 1024 * MiB)
        write_source(source, size)
        relay, url, _port = await start_relay()
        try:
            results = []
            for pair in pairs:
                result = await transfer(pair, url, source, out, size)
                print(json.dumps(result), flush=True)
                results.append(result)
            if len(results) == 2:
                ratio = float(results[1]["seconds"]) / float(results[0]["seconds"])  # type: ignore[arg-type]
                print(json.dumps({"websockets_time_over_trio_time": round(ratio, 2)}))
        finally:
            relay.terminate()
            await relay.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gib", type=float, default=1.0, help="file size in GiB (default 1)")
    parser.add_argument("--only", choices=("trio", "websockets"), help="run one pair only")
    parser.add_argument("--role", choices=sorted(ROLES), help=argparse.SUPPRESS)
    parser.add_argument("args", nargs="*", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.role:
        ROLES[options.role](*options.args)
    else:
        chosen = [options.only] if options.only else ["trio", "websockets"]
        trio.run(main, options.gib, chosen)
