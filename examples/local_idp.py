"""A local identity provider, to try the relay with an IdP's tokens (RS256, ES256) and
published keys (JWKS) on one machine, the way Keycloak, Auth0, Cognito or Entra serve them.

    python examples/local_idp.py [--port 8780] [--audience relay]

Then start the relay against it (docs/production.md walks through it):

    trio-wsproxy serve --jwks-url http://127.0.0.1:8780/certs \\
        --token-issuer http://127.0.0.1:8780 --token-audience relay

It answers, over plain HTTP (h11 on Trio; a test tool, not a security product):

- ``GET /certs``: the public keys as a JWKS, each with its ``kid`` — the current signing
  key and the ones before it (an IdP keeps publishing an old key while tokens signed
  with it live);
- ``GET /token?sub=alice&group=lobby&group=game-*&ttl=3600``: a new access token, as
  ``{"access_token", "token_type", "expires_in"}`` (JSON), with ``iss`` (this server's
  URL), ``aud`` (``--audience``), ``sub``, ``groups``, ``iat``, ``exp`` and a ``jti``;
- ``POST /rotate?alg=ES256``: a new signing key (``RS256`` or ``ES256``; the current
  algorithm by default) with a new ``kid``: the next tokens are signed with it, and the
  relay, meeting a ``kid`` it has not seen, fetches ``/certs`` again at once.

The first line it prints says where it listens (``--port 0``: a free port).
"""

from __future__ import annotations

import argparse
import json
import secrets
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import h11
import jwt
import trio
from cryptography.hazmat.primitives.asymmetric import ec, rsa

ALGORITHMS = ("RS256", "ES256")


def new_key(algorithm: str) -> Any:
    """A private key for ``algorithm`` (RSA 2,048 bits, or P-256)."""
    if algorithm == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if algorithm == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError(f"unsupported algorithm {algorithm!r}: choose one of {ALGORITHMS}")


class LocalIdp:
    """Signing keys by ``kid`` (the newest signs), and the tokens they sign."""

    def __init__(self, issuer: str, audience: str, algorithm: str = "RS256") -> None:
        self.issuer = issuer
        self.audience = audience
        self.keys: dict[str, tuple[str, Any]] = {}  # kid -> (algorithm, private key)
        self.kid = ""
        self.rotate(algorithm)

    def rotate(self, algorithm: str | None = None) -> str:
        """Sign from now on with a new key (the old ones stay published); its kid."""
        algorithm = algorithm or self.keys[self.kid][0]
        key = new_key(algorithm)
        self.kid = f"{algorithm.lower()}-{secrets.token_hex(4)}"
        self.keys[self.kid] = (algorithm, key)
        return self.kid

    def jwks(self) -> dict[str, list[dict[str, Any]]]:
        """The public keys, as an IdP publishes them."""
        listed = []
        for kid, (algorithm, key) in self.keys.items():
            jwk = json.loads(jwt.get_algorithm_by_name(algorithm).to_jwk(key.public_key()))
            jwk.update(kid=kid, alg=algorithm, use="sig")
            listed.append(jwk)
        return {"keys": listed}

    def mint(self, sub: str, groups: list[str], ttl: int) -> str:
        """A token for ``sub`` that may join ``groups``, signed with the current key."""
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": sub,
            "groups": groups,
            "iat": now,
            "exp": now + ttl,
            "jti": secrets.token_hex(8),
        }
        algorithm, key = self.keys[self.kid]
        return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": self.kid})

    def answer(self, method: str, target: str) -> tuple[int, dict[str, Any]]:
        """The status and JSON body for one request."""
        url = urlsplit(target)
        query = parse_qs(url.query)
        if method == "GET" and url.path == "/certs":
            return 200, self.jwks()
        if method == "GET" and url.path == "/token":
            sub = query.get("sub", [""])[0]
            if not sub:
                return 400, {"error": "invalid_request", "error_description": "sub is required"}
            try:
                ttl = int(query.get("ttl", ["3600"])[0])
            except ValueError:
                return 400, {"error": "invalid_request", "error_description": "ttl: seconds"}
            token = self.mint(sub, query.get("group", []), ttl)
            return 200, {"access_token": token, "token_type": "Bearer", "expires_in": ttl}
        if method == "POST" and url.path == "/rotate":
            algorithm = query.get("alg", [None])[0]
            try:
                return 200, {"kid": self.rotate(algorithm)}
            except ValueError as exc:
                return 400, {"error": "invalid_request", "error_description": str(exc)}
        return 404, {"error": "not_found", "error_description": f"no {method} {url.path}"}

    async def serve_connection(self, stream: trio.SocketStream) -> None:
        """Answer one HTTP/1.1 request, then close."""
        connection = h11.Connection(h11.SERVER)
        try:
            with trio.fail_after(10):
                while True:
                    event = connection.next_event()
                    if event is h11.NEED_DATA:
                        connection.receive_data(await stream.receive_some(65536))
                    elif isinstance(event, h11.Request):
                        request = event
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    elif isinstance(event, h11.ConnectionClosed):
                        return
                status, body = self.answer(request.method.decode(), request.target.decode())
                data = json.dumps(body).encode()
                headers = [("content-type", "application/json"), ("content-length", str(len(data)))]
                out = connection.send(h11.Response(status_code=status, headers=headers))
                out += connection.send(h11.Data(data=data)) + connection.send(h11.EndOfMessage())
                await stream.send_all(out)
        except (h11.RemoteProtocolError, trio.BrokenResourceError, trio.TooSlowError):
            pass  # a bad or vanished client: nothing to answer
        finally:
            await stream.aclose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8780, help="0: a free port")
    parser.add_argument("--audience", default="relay", help="the aud of its tokens")
    parser.add_argument("--alg", choices=ALGORITHMS, default="RS256", help="of the first key")
    args = parser.parse_args()
    listeners = await trio.open_tcp_listeners(args.port, host=args.host)
    port = listeners[0].socket.getsockname()[1]
    issuer = f"http://{args.host}:{port}"
    idp = LocalIdp(issuer, args.audience, args.alg)
    print(f"local identity provider on {issuer}: keys at {issuer}/certs, tokens at {issuer}/token")
    await trio.serve_listeners(idp.serve_connection, listeners)


if __name__ == "__main__":
    try:
        trio.run(main)
    except KeyboardInterrupt:
        pass
