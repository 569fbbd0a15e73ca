"""The HTTP API with a Redis backplane (real Redis, real sockets): any node answers for
the whole cluster — lists, posts to members on other nodes (a group this node has no
member of included), messages to one member there, large bodies, removal."""

from __future__ import annotations

import trio

from httpapi import KEY, call
from test_backplane import MiB, backplane, caught_up, cluster, join
from test_v1 import next_message, v1_member
from trio_wsproxy import CloseCode
from trio_wsproxy.protocol import v1
from wsraw import OP_BINARY

BINARY = {"Content-Type": "application/octet-stream"}


async def test_any_node_answers_for_the_whole_cluster(redis_url: str, prefix: str) -> None:
    async with cluster(redis_url, prefix, api_key=KEY) as (a, b):
        with trio.fail_after(30):
            x, y = await join(b, "x"), await join(b, "y")
            w, _ = await v1_member(b, "w")
            other = await join(a, "o", group="elsewhere")
            await caught_up([a.port, b.port])
            # Node a has no member of g, and lists it from Redis.
            answer = await call(a.port, "GET", "/api/groups")
            groups = [g for g in answer.json["groups"] if not g["name"].startswith("probe-")]
            assert groups == [{"name": "elsewhere", "members": 1}, {"name": "g", "members": 3}]
            answer = await call(a.port, "GET", "/api/groups/g/members")
            assert answer.json == {"members": ["w", "x", "y"]}
            # A post on node a reaches the members on node b...
            answer = await call(a.port, "POST", "/api/groups/g/messages", b"to all", BINARY)
            assert answer.json == {"recipients": 3}
            for member in (x, y):
                assert await member.recv_message() == (OP_BINARY, b"to all")
            assert await next_message(w) == (OP_BINARY, v1.From(None), b"to all")
            # ...one to one member there reaches it alone...
            answer = await call(a.port, "POST", "/api/groups/g/messages?to=w", b"you", BINARY)
            assert answer.json == {"recipients": 1}
            answer = await call(a.port, "POST", "/api/groups/g/messages?to=nobody", b"", BINARY)
            assert answer.status == 404
            answer = await call(a.port, "POST", "/api/groups/g/messages", b"after", BINARY)
            assert await next_message(w) == (OP_BINARY, v1.From(None, direct=True), b"you")
            assert await next_message(w) == (OP_BINARY, v1.From(None), b"after")
            assert await x.recv_message() == (OP_BINARY, b"after")
            # ...and node a follows g no longer once the posts are done.
            assert backplane(a).group("g") is None
            assert a.registry.group_count == 1
            # Removing a member on the other node closes it with 4005 there.
            answer = await call(a.port, "DELETE", "/api/groups/g/members/y")
            assert answer.status == 204
            code, _ = await y.expect_close()
            assert code == CloseCode.REMOVED
            answer = await call(a.port, "DELETE", "/api/groups/g/members/y")
            assert answer.status == 404
        for client in (x, y, w, other):
            await client.aclose()


async def test_a_large_post_streams_to_members_on_another_node(redis_url: str, prefix: str) -> None:
    async with cluster(redis_url, prefix, api_key=KEY) as (a, b):
        with trio.fail_after(30):
            near, far = await join(a, "near"), await join(b, "far")
            await caught_up([a.port, b.port])
            big = bytes(range(256)) * (12 * MiB // 256)
            got: dict[str, bytes] = {}

            async def read(name: str, member: object) -> None:
                opcode, payload = await member.recv_message()  # type: ignore[attr-defined]
                assert opcode == OP_BINARY
                got[name] = payload

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read, "near", near)
                nursery.start_soon(read, "far", far)
                answer = await call(b.port, "POST", "/api/groups/g/messages", big, BINARY)
            assert answer.json == {"recipients": 2}
            assert got == {"near": big, "far": big}
        await near.aclose()
        await far.aclose()
