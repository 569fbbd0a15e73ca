"""Run the relay inside your own Trio application, next to your other tasks.

    python examples/embedded_relay.py [--port 8765]

The relay is started with ``nursery.start`` like any Trio server: when ``start`` returns,
the port is bound and the returned ``Relay`` reports live statistics. Here a bot joins
the group "lobby" and answers "ping" with "pong", and a reporter prints the relay's
statistics every few seconds. Ctrl+C cancels the nursery: every member gets close 1001.

Try it with two browser consoles or any WebSocket client:
    ws://127.0.0.1:8765/ws?id=alice&groupName=lobby

The bot speaks raw text frames, so it is written on trio-websocket (``pip install
trio-websocket``; the test extra has it) rather than on the typed client.
"""

from __future__ import annotations

import argparse

import trio
import trio_websocket

from trio_wsproxy import Relay, RelayConfig, serve_relay


async def bot(relay: Relay) -> None:
    """A member of "lobby" living in the same process as the relay."""
    async with trio_websocket.open_websocket_url(f"{relay.url}?id=bot&groupName=lobby") as ws:
        async for message in _messages(ws):
            if message == "ping":
                await ws.send_message("pong")


async def _messages(ws: trio_websocket.WebSocketConnection):  # type: ignore[no-untyped-def]
    while True:
        try:
            yield await ws.get_message()
        except trio_websocket.ConnectionClosed:
            return


async def reporter(relay: Relay, every: float) -> None:
    while True:
        await trio.sleep(every)
        stats = relay.stats
        print(
            f"{stats.members} members in {stats.groups} groups; "
            f"{stats.messages} messages ({stats.bytes} bytes) relayed"
        )


async def main(port: int) -> None:
    async with trio.open_nursery() as nursery:
        relay = await nursery.start(serve_relay, RelayConfig(port=port))
        print(f"relay listening on {relay.url}")
        nursery.start_soon(bot, relay)
        nursery.start_soon(reporter, relay, 5.0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8765)
    try:
        trio.run(main, parser.parse_args().port)
    except KeyboardInterrupt:
        pass
