"""How fast a browser page takes small typed messages, and how soon pages recover after
a relay restart: the JavaScript client in headless Chromium (Playwright's core).

    python benchmarks/browser_rate.py [--count 50000]

Needs what the browser tests need (Node.js, Debian's chromium, ``npm install`` in
``tests/browser``). Receive rate: a relay process with ``--demo``; a page joins group
"rate" and counts ``SocketMessage`` envelopes in its handler while a sender process
writes them as fast as the relay takes them (``client_rate.py``'s sender); the page
times first to last. Recovery: two in-process relay nodes sharing history in Redis
(``--redis``, default the local one); the page's node is stopped and started again on
its port while the other takes 100 messages; the time is from the node listening again
to the page having recovered all of them. Prints JSON lines.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path

import attrs
import trio
from relay_process import start_relay

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import trio_wsproxy
from browserdriver import open_browser
from relaynode import RestartableRelay
from trio_wsproxy import RelayConfig, serve_relay

HERE = Path(__file__).resolve().parent


@trio_wsproxy.message_type("Demo.Chat")
@attrs.frozen
class Chat:
    text: str


COUNT_IN_PAGE = """(async () => {
    const { connect } = await import("/demo/wsproxy.js");
    const client = await connect(`ws://${location.host}/ws`, { group: "rate", id: "page" });
    window.rate = { count: 0, first: 0, last: 0 };
    client.on("SharedData.Models.SocketMessage", () => {
        const now = performance.now();
        if (window.rate.count === 0) window.rate.first = now;
        window.rate.count += 1;
        window.rate.last = now;
    });
    return true;
})()"""


async def receive_rate(count: int) -> dict[str, object]:
    relay, _url, port = await start_relay("--demo")
    try:
        async with open_browser() as browser:
            page = await browser.open("rate", f"http://127.0.0.1:{port}/demo/")
            await page.eval(COUNT_IN_PAGE)
            sender = await trio.lowlevel.open_process(
                [sys.executable, str(HERE / "client_rate.py"), "--send", "typed",
                 "--port", str(port), "--count", str(count)]
            )  # fmt: skip
            try:
                await page.wait(f"window.rate.count >= {count}", within=300)
            finally:
                sender.kill()
                await sender.wait()
            rate = await page.eval("window.rate")
        seconds = (rate["last"] - rate["first"]) / 1000
        return {"page_receive": "typed", "messages": count, "per_s": round((count - 1) / seconds)}
    finally:
        relay.terminate()
        await relay.wait()


async def recovery(redis: str, rounds: int) -> dict[str, object]:
    settings = dict(
        host="127.0.0.1", demo=True, backplane=redis,
        backplane_prefix=f"bench-{uuid.uuid4().hex[:8]}", history_size=1000,
    )  # fmt: skip
    times = []
    async with trio.open_nursery() as nursery, open_browser() as browser:
        other = await nursery.start(serve_relay, RelayConfig(port=0, **settings))
        node = RestartableRelay(nursery)
        port = (await node.start(**settings)).port
        page = await browser.open("page", f"http://127.0.0.1:{port}/demo/?name=page&room=r")
        await page.wait("window.demo && window.demo.client && window.demo.client.connected")
        async with trio_wsproxy.open_client(other.url, group="r", id="sender") as sender:
            for round_ in range(rounds):
                await node.stop()
                await page.wait("window.demo.client.state === 'reconnecting'")
                for n in range(100):
                    await sender.send(Chat(f"{round_} {n}"))
                started = time.monotonic()
                await node.start(**settings)
                await page.wait(
                    f"window.demo.log.some(l => l.endsWith(': {round_} 99'))", within=30
                )
                times.append(time.monotonic() - started)
        nursery.cancel_scope.cancel()
    times.sort()
    median, slowest = round(times[len(times) // 2], 3), round(times[-1], 3)
    return {"page_recovery_s": {"median": median, "max": slowest}, "rounds": rounds,
            "missed_per_round": 100}  # fmt: skip


async def main(count: int, redis: str, rounds: int) -> None:
    print(json.dumps(await receive_rate(count)), flush=True)
    print(json.dumps(await recovery(redis, rounds)), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--rounds", type=int, default=5)
    options = parser.parse_args()
    trio.run(main, options.count, options.redis, options.rounds)
