"""permessage-deflate with a real browser: Chromium offers it on its own, the JS client
gets it from the browser, and messages both ways are compressed (tests/browserdriver.py)."""

from __future__ import annotations

import trio

from browserdriver import open_browser
from demotypes import Chat
from trio_wsproxy import RelayConfig, open_client, open_relay
from trio_wsproxy.protocol.deflate import STATS
from trio_wsproxy.testing import wait_for_member


async def test_a_browser_negotiates_it_and_messages_go_compressed_both_ways() -> None:
    async with open_relay(RelayConfig(port=0, demo=True, compression=64)) as relay:
        async with open_browser() as browser:
            url = f"http://127.0.0.1:{relay.port}/demo/?name=web&room=lobby"
            page = await browser.open("web", url)
            await page.wait("window.demo && window.demo.client && window.demo.client.connected")
            extensions = await page.eval("window.demo.client._ws.extensions")
            assert extensions == (
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
            )
            async with open_client(relay.url, group="lobby", id="py") as py:
                await wait_for_member(py, "web")
                compressed, inflated = STATS.compressed, STATS.inflated
                text = "a long message from python, said twice over. " * 10
                await py.send(Chat(text))
                await page.wait(f"window.demo.log.some(line => line.includes({text!r}))")
                assert STATS.compressed > compressed
                # The browser compresses what it sends; the relay inflates it.
                async with py.subscribe(Chat) as chats:
                    said = "and an answer from the browser, long enough. " * 10
                    await page.eval(f"window.demo.say({said!r})")
                    with trio.fail_after(5):
                        incoming = await chats.receive()
                assert incoming.value.text == said
                assert STATS.inflated > inflated
