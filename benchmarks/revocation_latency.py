"""Revocation latency across two nodes: from the ``POST /api/revocations`` call on one
node to the last of the subject's connections, on both nodes, closed with 4007.

    python benchmarks/revocation_latency.py                   # 20 connections, 5 rounds
    python benchmarks/revocation_latency.py --connections 200 --rounds 10

Starts two relay processes (A and B) sharing the Redis at ``--redis`` under a fresh
prefix, with tokens (HS256) and the HTTP API on. Each round, one subject opens
``--connections`` connections, half on each node (each in a group of its own, as a
user's tabs and devices are), then the revocation of that subject is posted to A. The
figures, in milliseconds from just before the call is sent: when A answered it
(``api``), when the last connection on A saw its close frame (``last_on_a``), the last
on B (``last_on_b``), and the last of all (``last``). Prints one JSON line per round and
the medians. Clients and relays share the machine: the figures include their
scheduling.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import jwt
import trio
import trio_websocket as tw

sys.path.insert(0, str(Path(__file__).resolve().parent))
from relay_process import report_rounds, start_relay

REVOKED = 4007


async def one_round(
    url_a: str, url_b: str, port_a: int, secret: str, api_key: str, connections: int
) -> dict[str, float]:
    subject = f"user-{uuid.uuid4().hex[:8]}"
    issued = int(time.time()) - 1  # (a revocation covers tokens issued before it)
    token = jwt.encode(
        {"sub": subject, "groups": ["room-*"], "iat": issued, "exp": issued + 600},
        secret,
        algorithm="HS256",
    )
    closed: dict[str, list[float]] = {"a": [], "b": []}
    opened = 0
    all_open = trio.Event()
    start = 0.0

    async def member(node: str, url: str, n: int) -> None:
        nonlocal opened
        target = f"{url}?id={subject}&groupName=room-{n}&access_token={token}"
        async with tw.open_websocket_url(target) as ws:
            opened += 1
            if opened == connections:
                all_open.set()
            try:
                while True:
                    await ws.get_message()
            except tw.ConnectionClosed as gone:
                closed[node].append(trio.current_time())
                if gone.reason.code != REVOKED:
                    raise RuntimeError(f"closed with {gone.reason.code}, not 4007") from None

    async with trio.open_nursery() as nursery:
        for n in range(connections):
            node, url = ("a", url_a) if n % 2 == 0 else ("b", url_b)
            nursery.start_soon(member, node, url, n)
        with trio.fail_after(30):
            await all_open.wait()
        async with httpx.AsyncClient() as http:
            start = trio.current_time()
            answer = await http.post(
                f"http://127.0.0.1:{port_a}/api/revocations",
                json={"sub": subject},
                headers={"Authorization": f"Bearer {api_key}"},
            )
            answered = trio.current_time()
        answer.raise_for_status()
    ms = {node: [(t - start) * 1000 for t in times] for node, times in closed.items()}
    return {
        "connections": connections,
        "api": round((answered - start) * 1000, 2),
        "last_on_a": round(max(ms["a"]), 2),
        "last_on_b": round(max(ms["b"]), 2),
        "last": round(max(ms["a"] + ms["b"]), 2),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--connections", type=int, default=20, help="split over two nodes")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if args.connections < 2:
        parser.error("--connections: 2 at least (one on each node)")
    secret, api_key = secrets.token_hex(32), secrets.token_hex(16)
    with tempfile.TemporaryDirectory() as directory:
        (Path(directory) / "secret").write_text(secret)
        (Path(directory) / "api-key").write_text(api_key)
        prefix = f"bench-revocation-{uuid.uuid4().hex[:8]}"
        flags = (
            "--backplane", args.redis, "--backplane-prefix", prefix,
            "--token-secret-file", str(Path(directory) / "secret"),
            "--api-key-file", str(Path(directory) / "api-key"),
        )  # fmt: skip
        node_a, url_a, port_a = await start_relay(*flags)
        node_b, url_b, _ = await start_relay(*flags)
        try:
            await report_rounds(
                "revocation latency (ms)",
                args.rounds,
                lambda: one_round(url_a, url_b, port_a, secret, api_key, args.connections),
                ("api", "last_on_a", "last_on_b", "last"),
                connections=args.connections,
            )
        finally:
            for node in (node_a, node_b):
                node.terminate()
                await node.wait()


if __name__ == "__main__":
    trio.run(main)
