"""The same group relay on asyncio ``websockets`` with ``broadcast``: the comparison peer.

python benchmarks/websockets_relay.py PORT [deflate]

With ``deflate``, permessage-deflate as ``websockets`` does it (compressed per
connection, its default settings); without, no compression.
"""

import asyncio
import sys
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import broadcast, serve

groups: dict[str, set] = {}


async def handler(ws):
    url = urlsplit(ws.request.path)
    query = parse_qs(url.query)
    member, group = query.get("id", [None])[0], query.get("groupName", [None])[0]
    if url.path != "/ws" or not member or not group:
        await ws.close(1008)
        return
    members = groups.setdefault(group, set())
    members.add(ws)
    try:
        async for message in ws:
            broadcast([m for m in members if m is not ws], message)
    finally:
        members.discard(ws)
        if not members:
            groups.pop(group, None)


async def main(port: int, compression: str | None) -> None:
    async with serve(
        handler, "127.0.0.1", port, max_size=None, compression=compression, max_queue=None
    ) as server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else None))
