"""Identity providers' tokens (issue 31's first part): RS256, ES256 and EdDSA checked
with a public key file, the issuer and audience, the claims that name the member and its
groups; every algorithm confusion refused. Over real sockets where the relay decides."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jwt
import pytest
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from test_v1 import V1_OFFER, next_event
from test_v1_groups import join
from trio_wsproxy import RelayConfig, mint_token
from trio_wsproxy.protocol import v1
from trio_wsproxy.protocol.tokens import TokenVerifier
from wsraw import RawClient

SECRET = "a-token-secret-of-at-least-32-bytes!"
ISSUER = "https://id.example.com/realms/game"


def _pem(key: Any) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


KEYS = {
    "RS256": rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "ES256": ec.generate_private_key(ec.SECP256R1()),
    "EdDSA": ed25519.Ed25519PrivateKey.generate(),
}


def token(algorithm: str, key: Any = None, **claims: Any) -> str:
    now = int(time.time())
    body = {"sub": "alice", "groups": ["lobby", "game-*"], "iat": now, "exp": now + 60}
    body.update(claims)
    return jwt.encode(body, KEYS[algorithm] if key is None else key, algorithm=algorithm)


@pytest.mark.parametrize("algorithm", sorted(KEYS))
def test_each_kind_of_key_checks_its_own_algorithm_and_refuses_every_other(
    algorithm: str,
) -> None:
    verifier = TokenVerifier.of(None, _pem(KEYS[algorithm]))
    assert verifier.check(token(algorithm), "alice", "game-7") is None
    invalid = "invalid access token"
    refusal = verifier.check(token(algorithm), "alice", "secret-room")
    assert refusal is not None and refusal.status == 403
    # alg=none.
    unsigned = jwt.encode({"sub": "alice", "groups": ["lobby"], "exp": 2**31}, None, "none")
    refusal = verifier.check(unsigned, "alice", "lobby")
    assert refusal is not None and (refusal.status, refusal.reason) == (401, invalid)
    # HS256 signed with the public key as its secret (the classic confusion).
    forged = _hs256_with(_pem(KEYS[algorithm]))
    refusal = verifier.check(forged, "alice", "lobby")
    assert refusal is not None and (refusal.status, refusal.reason) == (401, invalid)
    # A token signed by a key of another kind, and one by another key of this kind.
    for other in sorted(set(KEYS) - {algorithm}):
        refusal = verifier.check(token(other), "alice", "lobby")
        assert refusal is not None and refusal.reason == invalid
    stranger = {
        "RS256": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ES256": lambda: ec.generate_private_key(ec.SECP256R1()),
        "EdDSA": ed25519.Ed25519PrivateKey.generate,
    }[algorithm]()
    refusal = verifier.check(token(algorithm, stranger), "alice", "lobby")
    assert refusal is not None and refusal.reason == invalid


def _hs256_with(secret: bytes) -> str:
    """An HS256 token whose HMAC key is ``secret`` (PyJWT refuses to sign with a PEM
    key, as it refuses to check with one: signed here by hand)."""
    import base64
    import hashlib
    import hmac
    import json

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps({"sub": "alice", "groups": ["lobby"], "exp": 2**31}).encode())
    signature = b64(hmac.new(secret, head + b"." + body, hashlib.sha256).digest())
    return (head + b"." + body + b"." + signature).decode()


def test_the_issuer_the_audience_and_the_claims_are_checked_as_configured() -> None:
    verifier = TokenVerifier.of(
        None,
        _pem(KEYS["RS256"]),
        issuer=ISSUER,
        audience="relay",
        id_claim="preferred_username",
        groups_claim="rooms",
    )
    good = token("RS256", iss=ISSUER, aud="relay", preferred_username="alice", rooms=["lobby"])
    assert verifier.check(good, "alice", "lobby") is None
    for claims, reason in [
        ({"iss": "https://evil.example.com", "aud": "relay"}, "another issuer"),
        ({"iss": ISSUER, "aud": "someone-else"}, "another audience"),
        ({"aud": "relay"}, "invalid access token"),  # (no iss at all)
    ]:
        refusal = verifier.check(
            token("RS256", preferred_username="alice", rooms=["lobby"], **claims),
            "alice",
            "lobby",
        )
        assert refusal is not None and reason in refusal.reason
    # An identity provider's token without the groups claim is refused: which groups it
    # allows is not the relay's guess.
    bare = token("RS256", iss=ISSUER, aud="relay", preferred_username="alice")
    bare = jwt.encode(
        {k: v for k, v in jwt.decode(bare, options={"verify_signature": False}).items()
         if k != "groups"},
        KEYS["RS256"],
        algorithm="RS256",
    )  # fmt: skip
    refusal = verifier.check(bare, "alice", "lobby")
    assert refusal is not None and (refusal.status, refusal.kind) == (403, "token_group")
    # The id comes from the configured claim, not sub.
    refusal = verifier.check(good, "bob", "lobby")
    assert refusal is not None and refusal.kind == "token_id"


def test_a_key_the_relay_cannot_use_is_refused_at_start_up(tmp_path: Path) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(ValueError, match="too weak"):
        TokenVerifier.of(None, _pem(weak))
    with pytest.raises(ValueError, match="ES256 needs P-256"):
        TokenVerifier.of(None, _pem(ec.generate_private_key(ec.SECP384R1())))
    with pytest.raises(ValueError, match="not a PEM public key"):
        TokenVerifier.of(None, b"-----BEGIN NONSENSE-----")


async def test_a_relay_with_a_public_key_and_a_secret_admits_both_kinds_per_join(
    tmp_path: Path,
) -> None:
    key_file = tmp_path / "idp.pem"
    key_file.write_bytes(_pem(KEYS["ES256"]))
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET)
    config = RelayConfig(
        host="127.0.0.1",
        port=0,
        token_public_key_file=str(key_file),
        token_secret_file=str(secret_file),
        token_issuer=ISSUER,
    )
    from trio_wsproxy._serve import read_token_verifier
    from trio_wsproxy.relay.groups import LocalRegistry
    from trio_wsproxy.relay.relay import run_relay

    async with trio.open_nursery() as nursery:
        relay = await nursery.start(run_relay, config, LocalRegistry(), read_token_verifier(config))
        with trio.fail_after(10):
            idp = token("ES256", iss=ISSUER, groups=["lobby", "game-*"])
            client = RawClient(await trio.open_tcp_stream("127.0.0.1", relay.port))
            status, _, body = await client.handshake(
                f"/ws?id=alice&groupName=lobby&access_token={idp}", V1_OFFER
            )
            assert status == 101, body
            assert isinstance(await next_event(client), v1.Welcome)
            # Every later join is checked against the same token.
            assert isinstance(await join(client, "game-3"), v1.Welcome)
            refused = await join(client, "admin")
            assert isinstance(refused, v1.Error) and refused.error == v1.NOT_ALLOWED
            # An HS256 token of the back end's own works beside it...
            own = mint_token(SECRET, "bob", ["lobby"], 60)
            other = RawClient(await trio.open_tcp_stream("127.0.0.1", relay.port))
            status, _, body = await other.handshake(
                f"/ws?id=bob&groupName=lobby&access_token={own}"
            )
            assert status == 101, body
            # ...and an identity provider's token from another issuer does not.
            wrong = token("ES256", iss="https://evil.example.com")
            third = RawClient(await trio.open_tcp_stream("127.0.0.1", relay.port))
            status, _, body = await third.handshake(
                f"/ws?id=alice&groupName=lobby&access_token={wrong}"
            )
            assert (status, body.strip()) == (401, b"access token is from another issuer")
        for each in (client, other, third):
            await each.aclose()
        nursery.cancel_scope.cancel()


class JwksServer:
    """An identity provider's key endpoint over real HTTP (h11): it serves the public
    keys of :attr:`keys` (kid -> private key) as a JWKS, counts the fetches, and can be
    made to fail (:attr:`down`)."""

    def __init__(self) -> None:
        self.keys: dict[str, Any] = {}
        self.fetches = 0
        self.down = False
        self.port = 0

    def document(self) -> bytes:
        import json

        listed = []
        for kid, key in self.keys.items():
            jwk = json.loads(jwt.algorithms.get_default_algorithms()[_alg(key)].to_jwk(
                key.public_key()
            ))  # fmt: skip
            jwk["kid"] = kid
            listed.append(jwk)
        return json.dumps({"keys": listed}).encode()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._answer, listeners)

    async def _answer(self, stream: trio.SocketStream) -> None:
        import h11

        connection = h11.Connection(h11.SERVER)
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                connection.receive_data(await stream.receive_some(65536))
                continue
            if isinstance(event, h11.Request):
                continue
            break
        self.fetches += 1
        status, body = (503, b"down") if self.down else (200, self.document())
        headers = [("content-type", "application/json"), ("content-length", str(len(body)))]
        data = connection.send(h11.Response(status_code=status, headers=headers))
        data += connection.send(h11.Data(data=body)) + connection.send(h11.EndOfMessage())
        await stream.send_all(data)
        await stream.aclose()


def _alg(key: Any) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return "ES256"
    return "EdDSA"


def signed(key: Any, kid: str, member: str = "alice") -> str:
    now = int(time.time())
    claims = {"sub": member, "groups": ["lobby"], "iat": now, "exp": now + 60}
    return jwt.encode(claims, key, algorithm=_alg(key), headers={"kid": kid})


async def handshake(port: int, token: str, member: str = "alice") -> tuple[int, bytes]:
    client = RawClient(await trio.open_tcp_stream("127.0.0.1", port))
    status, _, body = await client.handshake(
        f"/ws?id={member}&groupName=lobby&access_token={token}"
    )
    await client.aclose()
    return status, body.strip()


async def test_published_keys_are_fetched_rotated_and_served_stale_while_the_provider_is_down(
    relay_log: Any,
) -> None:
    from trio_wsproxy.relay.groups import LocalRegistry
    from trio_wsproxy.relay.jwks import JwksKeys
    from trio_wsproxy.relay.relay import run_relay

    refetch = 0.3  # (the relay's is 10 s)

    provider = JwksServer()
    provider.keys["one"] = KEYS["RS256"]
    async with trio.open_nursery() as nursery:
        await nursery.start(provider.serve)
        keys = JwksKeys(f"http://127.0.0.1:{provider.port}/certs", refetch_interval=refetch)
        config = RelayConfig(host="127.0.0.1", port=0)
        verifier = TokenVerifier.of(key_set=keys)
        relay = await nursery.start(run_relay, config, LocalRegistry(), verifier)
        with trio.fail_after(20):
            assert provider.fetches == 1  # (before the relay listened)
            assert (await handshake(relay.port, signed(KEYS["RS256"], "one")))[0] == 101
            # The provider rotates in a new key: the first token signed with it makes the
            # relay fetch the set again, and that very handshake succeeds (once the last
            # fetch is a refetch interval old, as it is long before any rotation).
            provider.keys["two"] = KEYS["EdDSA"]
            await trio.sleep(refetch)
            started = trio.current_time()
            assert (await handshake(relay.port, signed(KEYS["EdDSA"], "two")))[0] == 101
            assert provider.fetches == 2
            # Made-up key ids cannot make it hammer the provider: at most one fetch per
            # refetch interval, whatever comes (20 handshakes take less than one interval
            # on a quiet machine; on a busy one, one more fetch each interval they take).
            for n in range(20):
                status, body = await handshake(relay.port, signed(KEYS["ES256"], f"fake{n}"))
                assert (status, body) == (401, b"invalid access token")
            took = trio.current_time() - started
            assert provider.fetches - 2 <= took / refetch, (provider.fetches, took)
            fetched = provider.fetches
            # A key signed with a published key, but for another algorithm, is refused.
            assert (await handshake(relay.port, signed(KEYS["ES256"], "one")))[0] == 401
            # The provider goes down: the relay keeps the keys it has, and says so.
            provider.down = True
            await trio.sleep(refetch)  # (what the rate limit is about: time)
            status, _ = await handshake(relay.port, signed(KEYS["ES256"], "three"))
            assert status == 401 and provider.fetches == fetched + 1
            await relay_log.wait_for("serving the 2 keys fetched before")
            assert (await handshake(relay.port, signed(KEYS["RS256"], "one")))[0] == 101
            assert relay.counters.jwks_fetches == {"ok": fetched, "failed": 1}
        nursery.cancel_scope.cancel()
