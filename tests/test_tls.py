"""wss://: the relay serves TLS when given a certificate and key."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trio
import trio_websocket as tw
import trustme

from trio_wsproxy import RelayConfig, open_relay


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_config(ca: trustme.CA, tmp_path: Path) -> RelayConfig:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    return RelayConfig(port=0, certfile=str(certfile), keyfile=str(keyfile))


async def test_members_talk_over_wss(ca: trustme.CA, tls_config: RelayConfig) -> None:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    async with open_relay(tls_config) as relay:
        assert relay.url.startswith("wss://127.0.0.1:")
        async with (
            tw.open_websocket_url(f"{relay.url}?id=a&groupName=g", ssl_context=context) as a,
            tw.open_websocket_url(f"{relay.url}?id=b&groupName=g", ssl_context=context) as b,
        ):
            with trio.fail_after(5):
                await relay.wait_members(2, "g")
                await a.send_message("secret")
                assert await b.get_message() == "secret"


async def test_plaintext_and_untrusted_clients_fail_without_harming_members(
    ca: trustme.CA, tls_config: RelayConfig
) -> None:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    async with open_relay(tls_config) as relay:
        async with tw.open_websocket_url(f"{relay.url}?id=a&groupName=g", ssl_context=context) as a:
            plain = await trio.open_tcp_stream("127.0.0.1", relay.port)
            await plain.send_all(b"GET /ws?id=x&groupName=g HTTP/1.1\r\n\r\n")
            with trio.fail_after(5):
                assert await plain.receive_some(100) == b""  # no TLS: dropped
            untrusting = trio.SSLStream(
                await trio.open_tcp_stream("127.0.0.1", relay.port),
                ssl.create_default_context(),
                server_hostname="127.0.0.1",
            )
            with pytest.raises(trio.BrokenResourceError), trio.fail_after(5):
                await untrusting.do_handshake()
            await trio.aclose_forcefully(untrusting)
            async with tw.open_websocket_url(
                f"{relay.url}?id=b&groupName=g", ssl_context=context
            ) as b:
                with trio.fail_after(5):
                    await relay.wait_members(2, "g")
                    await b.send_message("still here")
                    assert await a.get_message() == "still here"
