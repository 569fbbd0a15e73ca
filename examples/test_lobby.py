"""Testing group behaviour with pytest-trio and trio_wsproxy's fixtures.

Copy this file into your project and run ``pytest`` (with pytest-trio installed):
installing trio_wsproxy registers the ``wsproxy_relay`` and ``wsproxy_client`` fixtures.
"""

import attrs
import pytest
import trio

from trio_wsproxy.testing import expect_message, expect_silence, wait_for_members


@attrs.frozen
class Chat:
    author: str
    text: str


@attrs.frozen
class Question:
    text: str


async def lobby_bot(client):
    """The application logic under test: greets every chat line, answers questions."""

    @client.on(Chat)
    async def greet(chat):
        if chat.author != "bot":
            await client.send(Chat("bot", f"welcome, {chat.author}!"))

    @client.on(Question)
    async def answer(question, incoming):
        await incoming.reply(len(question.text), as_type=int)


@pytest.mark.trio
async def test_the_bot_greets_and_a_member_never_hears_itself(wsproxy_relay, wsproxy_client):
    bot = await wsproxy_client(group="lobby", id="bot")
    await lobby_bot(bot)
    alice = await wsproxy_client(group="lobby", id="alice")
    await wait_for_members(wsproxy_relay, 2, group="lobby")

    await alice.send(Chat("alice", "hello"))

    assert await expect_message(alice, Chat) == Chat("bot", "welcome, alice!")
    await expect_silence(alice)  # nothing more: in particular not its own "hello"


@pytest.mark.trio
async def test_other_groups_hear_nothing(wsproxy_relay, wsproxy_client):
    alice = await wsproxy_client(group="lobby")
    bob = await wsproxy_client(group="kitchen")
    await wait_for_members(wsproxy_relay, 2)
    await alice.send(Chat("alice", "psst"))
    await expect_silence(bob)


@pytest.mark.trio
async def test_questions_get_answers(wsproxy_client):
    bot = await wsproxy_client(group="lobby", id="bot")
    await lobby_bot(bot)
    carol = await wsproxy_client(group="lobby")
    with trio.fail_after(5):
        assert await carol.request(Question("how long is this?"), int) == 17


@pytest.mark.trio
@pytest.mark.wsproxy_relay(max_message_size=1024)
async def test_the_relay_can_be_tuned_per_test(wsproxy_relay, wsproxy_client):
    assert wsproxy_relay.config.max_message_size == 1024
    sender = await wsproxy_client(group="files")
    receiver = await wsproxy_client(group="files")
    await wait_for_members(wsproxy_relay, 2, group="files")
    await sender.send(b"x" * 1000)
    assert await expect_message(receiver, bytes) == b"x" * 1000
