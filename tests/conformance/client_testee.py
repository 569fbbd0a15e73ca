"""Autobahn fuzzingserver testee built on trio_wsproxy's client WebSocket layer.

trio_wsproxy's public client (`open_client`) cannot be an echo testee: it sends every
`str` as a JSON envelope (there is no raw-text send) and treats text that is not an
envelope as a bad message.  So this testee drives the layer underneath it, the one every
byte of `open_client` goes through: `trio_wsproxy.client.connection` (wsproto driven
directly: `open_websocket`/`connect_and_serve`, `WebSocket.receive` answering pings and
close frames, `WebSocket.send_message`), with `ClientConfig(offer_v1=False)` so the upgrade
offers no subprotocol.  Binary messages that arrive in pieces (`BinaryPiece`) are assembled and
echoed whole; text is assembled by the layer itself.

usage: python client_testee.py ws://127.0.0.1:PORT AGENT

The project's own copy of the shared runner's testee (``run_autobahn.sh`` takes the one
next to it: copy this one over it), kept in step with ``trio_wsproxy.client.connection``
and offering permessage-deflate.
"""

from __future__ import annotations

import sys

import trio

from trio_wsproxy.client.config import ClientConfig
from trio_wsproxy.client.connection import (
    BinaryPiece,
    ConnectionEnded,
    WebSocket,
    connect_and_serve,
)

# compression: the suite's 12.x and 13.x cases (permessage-deflate) test the client too.
CONFIG = ClientConfig(offer_v1=False, connect_timeout=10, close_timeout=5, compression=True)


async def echo(ws: WebSocket):
    parts: list[bytes] = []
    while True:
        try:
            received = await ws.receive()
        except ConnectionEnded as ended:
            return (ended.code, ended.reason)
        try:
            if isinstance(received, BinaryPiece):
                parts.append(received.data)
                if received.last:
                    data, parts = b"".join(parts), []
                    await ws.send_message(data)
            else:
                await ws.send_message(received)
        except ConnectionEnded:
            pass  # the reader sees the end next


async def collect_text(ws: WebSocket, into: list):
    while True:
        try:
            received = await ws.receive()
        except ConnectionEnded as ended:
            return (ended.code, ended.reason)
        into.append(received)


async def main(base: str, agent: str) -> None:
    got: list = []

    async def count_serve(ws):
        return await collect_text(ws, got)

    await connect_and_serve(
        f"{base}/getCaseCount", config=CONFIG, ssl_context=None, serve=count_serve
    )
    count = int(got[0])
    print(f"testee: {count} cases", flush=True)
    for case in range(1, count + 1):
        url = f"{base}/runCase?case={case}&agent={agent}"
        try:
            with trio.fail_after(120):
                closed = await connect_and_serve(url, config=CONFIG, ssl_context=None, serve=echo)
        except Exception as exc:  # a case must not stop the run
            print(f"testee: case {case}: {exc!r}", flush=True)
            continue
        if case % 50 == 0:
            print(f"testee: case {case} done, last closed {closed}", flush=True)
    await connect_and_serve(
        f"{base}/updateReports?agent={agent}",
        config=CONFIG,
        ssl_context=None,
        serve=lambda ws: collect_text(ws, []),
    )
    print("testee: reports updated", flush=True)


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2])
