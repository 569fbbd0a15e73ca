"""How fast a Python client takes fan-out: typed (envelope -> attrs class via cattrs,
dispatched to a handler) and raw (binary frames to a ``bytes`` handler).

    python benchmarks/client_rate.py [--count 50000]

Runs a relay (``python -m trio_wsproxy serve``) and a sender process that writes
pre-framed messages as fast as the relay takes them; this process receives them through
``open_client`` and prints messages/s for each kind as JSON lines. The sender and relay
are far faster than one Python client, so the figure is the client's.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys

import attrs
import trio
from relay_process import start_relay

import trio_wsproxy


@trio_wsproxy.message_type("SharedData.Models.SocketMessage", pascal_case=True)
@attrs.frozen
class SocketMessage:
    message: str
    reply_required: bool = False


def masked(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    head = (
        bytes((0x80 | opcode, 0x80 | n))
        if n < 126
        else bytes((0x80 | opcode, 0xFE)) + n.to_bytes(2, "big")
    )
    return head + b"\0\0\0\0" + payload  # a zero mask leaves the payload as it is


async def send(port: int, kind: str, count: int) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        "GET /ws?id=sender&groupName=rate HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    await stream.send_all(request.encode())
    await stream.receive_some(4096)
    if kind == "typed":
        text = json.dumps(
            {"Id": None, "MessageType": "SharedData.Models.SocketMessage",
             "Message": {"Message": "tick 0123456789", "ReplyRequired": False}, "ReplyId": None},
            separators=(",", ":"),
        )  # fmt: skip
        frame = masked(1, text.encode())
    else:
        frame = masked(2, os.urandom(64))
    batch = frame * 1000
    for _ in range(count // 1000):
        await stream.send_all(batch)
    await trio.sleep(30)  # the receiver kills us when done


async def receive(port: int, kind: str, count: int) -> float:
    done = trio.Event()
    received = 0
    start = 0.0

    def count_one(_: object) -> None:
        nonlocal received, start
        if received == 0:
            start = trio.current_time()
        received += 1
        if received == count:
            done.set()

    async with trio_wsproxy.open_client(f"ws://127.0.0.1:{port}/ws", group="rate") as client:
        client.on(SocketMessage if kind == "typed" else bytes, count_one)
        sender = await trio.lowlevel.open_process(
            [sys.executable, __file__, "--send", kind, "--port", str(port), "--count", str(count)]
        )
        try:
            with trio.fail_after(120):
                await done.wait()
        finally:
            sender.kill()
            await sender.wait()
    return (count - 1) / (trio.current_time() - start)


async def main(count: int) -> None:
    relay, _url, port = await start_relay()
    try:
        for kind in ("typed", "raw"):
            rate = await receive(port, kind, count)
            print(json.dumps({"client_receive": kind, "messages": count, "per_s": round(rate)}))
    finally:
        relay.terminate()
        await relay.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument("--send", choices=("typed", "raw"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.send:
        trio.run(send, args.port, args.send, args.count)
    else:
        trio.run(main, args.count)
