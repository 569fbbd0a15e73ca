"""Start ``python -m trio_wsproxy serve`` on a free port, as the benchmark scripts need."""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import trio

from trio_wsproxy import ClientConfig


async def start_relay(*flags: str, python: str = sys.executable) -> tuple[trio.Process, str, int]:
    """The relay process, the URL it printed and its port (its stdout is a pipe);
    ``python`` runs it (another installation's, to compare releases in one run)."""
    process = await trio.lowlevel.open_process(
        [python, "-m", "trio_wsproxy", "serve", "--port", "0", *flags],
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None
    line = b""
    with trio.fail_after(30):
        while not line.endswith(b"\n"):
            chunk = await process.stdout.receive_some(1)
            if not chunk:
                raise RuntimeError("the relay exited before printing its URL")
            line += chunk
    url = line.decode().strip().rsplit(" ", 1)[1]
    port = urlsplit(url).port
    assert port is not None
    return process, url, port


async def metrics(port: int) -> dict[str, float]:
    """The relay's /metrics at ``port``, unlabelled series only: name -> value."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n")
    data = b""
    while chunk := await stream.receive_some(65536):
        data += chunk
    await stream.aclose()
    values = {}
    for line in data.decode().split("\r\n\r\n", 1)[1].splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def failover_arguments(doc: str) -> argparse.ArgumentParser:
    """The options every failover benchmark takes (its docstring's first paragraph as the
    description): the Redis, the clients, the rounds, the clients' first backoff."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--min-delay", type=float, default=ClientConfig().reconnect_min_delay,
        help="the clients' reconnect_min_delay (their first backoff)",
    )  # fmt: skip
    return parser


async def report_rounds(
    name: str,
    rounds: int,
    one_round: Callable[[], Awaitable[dict[str, float]]],
    keys: tuple[str, ...],
    **fields: object,
) -> None:
    """Run ``one_round`` ``rounds`` times, printing each result as a JSON line, then the
    median of each of ``keys`` (with ``fields``) as the summary line."""
    logging.basicConfig(level=logging.ERROR)  # the clients' disconnect warnings are expected
    results = []
    for _ in range(rounds):
        result = await one_round()
        print(json.dumps(result), flush=True)
        results.append(result)
    summary = {key: round(statistics.median(r[key] for r in results), 3) for key in keys}
    print(json.dumps({"summary": name, **fields, **summary}))
