"""The pytest helpers for wsproxy.v1 groups: waiting for a member to join or leave, and
expecting a message sent to one member."""

from __future__ import annotations

import pytest
import trio

from trio_wsproxy import Relay
from trio_wsproxy.testing import (
    ClientFactory,
    expect_direct_message,
    expect_message,
    wait_for_member,
    wait_for_member_to_leave,
)


async def test_a_test_can_wait_for_a_member_to_join_and_leave(
    wsproxy_relay: Relay, wsproxy_client: ClientFactory
) -> None:
    alice = await wsproxy_client(group="lobby", id="alice")
    bob = await wsproxy_client(group="lobby", id="bob")
    await wait_for_member(alice, "bob")
    assert alice.members == {"bob"}
    await bob.aclose()
    await wait_for_member_to_leave(alice, "bob")
    assert alice.members == frozenset()


async def test_waiting_for_a_member_that_never_comes_fails_readably(
    wsproxy_relay: Relay, wsproxy_client: ClientFactory
) -> None:
    alice = await wsproxy_client(group="lobby", id="alice")
    with pytest.raises(pytest.fail.Exception) as failed:
        await wait_for_member(alice, "nobody", timeout=0.3)
    assert "did not see 'nobody' join within 0.3s" in str(failed.value)
    assert "members it knows of: none; protocol: wsproxy.v1" in str(failed.value)


async def test_a_direct_message_is_told_apart_from_a_broadcast(
    wsproxy_relay: Relay, wsproxy_client: ClientFactory
) -> None:
    alice = await wsproxy_client(group="lobby", id="alice")
    bob = await wsproxy_client(group="lobby", id="bob")
    await wait_for_member(alice, "bob")
    await alice.send("to everyone")
    await alice.send_to("bob", "to bob")
    incoming = await expect_direct_message(bob, str)
    assert (incoming.value, incoming.sender, incoming.direct) == ("to bob", "alice", True)
    # The broadcast before it is still there for expect_message.
    assert await expect_message(bob, str) == "to everyone"
    with pytest.raises(pytest.fail.Exception, match="received no direct str within"):
        with trio.fail_after(5):
            await expect_direct_message(bob, str, timeout=0.2)
