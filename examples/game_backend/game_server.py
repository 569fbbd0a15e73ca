r"""A game's back end in the relay's loop: tic-tac-toe, with the server as the referee.

A Starlette app served by hypercorn on Trio. The relay asks it (its hooks) and tells it
(its webhooks); it never trusts a member's word for the state of a game:

- ``POST /login`` (``{"name": "Alice"}``) opens a session: a cookie for a browser, and the
  same token in the answer for a program, which sends it as that cookie
  (``ClientConfig(headers={"Cookie": "session=TOKEN"})``).
- ``POST /hooks/connect``: who is it? The session (its cookie)
  names the player: the hook gives the member its id, the groups it may join
  (``game-*``) and ``info`` with its display name (what the others see in presence).
  Without a session: 401, "log in first".
- ``POST /hooks/join``: at most two players per ``game-…``; a third is refused with 409.
- ``POST /hooks/publish`` (the ``game-`` namespace's): a member sends a move
  (``TicTacToe.Move``, ``{"cell": N}``); one the rules refuse — not your turn, a taken
  cell, a malformed move — is refused with 422 and the reason, and goes to nobody. An
  accepted move is *replaced* by the authoritative state (``TicTacToe.State``:
  ``{"board", "next", "winner", "players"}``), which the other members get; the mover
  gets the same state from the back end through the relay's HTTP API (a member does
  not hear its own messages).
- ``POST /webhooks``: the relay's webhooks, signature checked; leaves are recorded
  (de-duplicated by event id: webhooks come at least once) and listed at ``GET /leaves``.
- ``GET /`` is a page that plays (with the relay's JavaScript client, ``/wsproxy.js``).

Run it beside a relay, both from one directory holding the two secrets they share (make
each with ``openssl rand -hex 32 > webhook-secret``, and the same for ``api-key``)::

    python examples/game_backend/game_server.py --api-key-file api-key \
        --webhook-secret-file webhook-secret
    trio-wsproxy serve --config examples/game_backend/relay.toml

then open http://127.0.0.1:8000/ in two browser windows, log in with two names, and play
in the same game (``docs/backend-example.md`` walks through it).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.resources
import logging
import os
import secrets
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import attrs
import httpx
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from tictactoe import Game, IllegalMove

from trio_wsproxy import Envelope, EnvelopeError, decode_envelope, encode_envelope
from trio_wsproxy.backend import BadHookRequest, HookAnswer, answer_body, read_hook_request
from trio_wsproxy.protocol.webhooks import (
    LEAVE,
    SIGNATURE_HEADER,
    SignatureError,
    WebhookBodyError,
    decode_body,
    verify,
)

logger = logging.getLogger("game_backend")

HERE = Path(__file__).parent
#: The games' namespace: the relay's ``[namespaces.games]`` in relay.toml.
GAME_PREFIX = "game-"
#: The .NET type names of what goes into a game (the clients dispatch on them).
MOVE = "TicTacToe.Move"
STATE = "TicTacToe.State"
#: The cookie the browser's session is in (the relay's ``hook_cookies``).
SESSION_COOKIE = "session"
MAX_NAME_CHARS = 40


@attrs.frozen
class Player:
    id: str
    name: str


@attrs.frozen
class Leave:
    """A member left a game's group (a webhook's leave event)."""

    event: str
    group: str
    member: str
    code: int | None
    time: float


class GameBackEnd:
    """The back end's state (sessions, games, leaves: in memory) and its routes."""

    def __init__(
        self,
        *,
        relay_url: str,
        webhook_secret: str | None,
        relay_api: str | None = None,
        api_key: str | None = None,
    ) -> None:
        #: The relay's WebSocket URL, for the page.
        self.relay_url = relay_url
        self.webhook_secret = webhook_secret
        #: The relay's HTTP API (``http://HOST:PORT``) and its key: how the mover of an
        #: accepted move is sent the state (None: it is not, and learns it from the
        #: opponent's next move).
        self.relay_api = relay_api
        self.api_key = api_key
        self.sessions: dict[str, Player] = {}
        self.games: dict[str, Game] = {}
        self.leaves: list[Leave] = []
        self._seen_events: set[str] = set()
        self._leaves_changed = trio.Event()
        self._players = 0
        self._http: httpx.AsyncClient | None = None

    # -- the app ---------------------------------------------------------------------

    def app(self) -> Starlette:
        routes = [
            Route("/", self.page),
            Route("/wsproxy.js", self.client_script),
            Route("/config", self.config),
            Route("/login", self.login, methods=["POST"]),
            Route("/hooks/connect", self.connect_hook, methods=["POST"]),
            Route("/hooks/join", self.join_hook, methods=["POST"]),
            Route("/hooks/publish", self.publish_hook, methods=["POST"]),
            Route("/webhooks", self.webhooks, methods=["POST"]),
            Route("/leaves", self.list_leaves),
            Route("/games/{name}", self.game_state),
        ]
        return Starlette(
            routes=routes,
            lifespan=self._lifespan,
            exception_handlers={BadHookRequest: bad_hook_request},
        )

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        # One pooled client for the calls to the relay's API, for the app's lifetime.
        async with httpx.AsyncClient(timeout=5.0, trust_env=False) as http:
            self._http = http
            yield
            self._http = None

    # -- the page --------------------------------------------------------------------

    async def page(self, request: Request) -> Response:
        return HTMLResponse((HERE / "page.html").read_text())

    async def client_script(self, request: Request) -> Response:
        """The relay's JavaScript client, as the installed package ships it."""
        script = importlib.resources.files("trio_wsproxy").joinpath("demo", "wsproxy.js")
        return Response(script.read_text(), media_type="text/javascript")

    async def config(self, request: Request) -> Response:
        return JSONResponse({"relay": self.relay_url})

    async def login(self, request: Request) -> Response:
        """A new player named by ``{"name": ...}``: its session in a cookie and in the
        answer. (A real application checks a password here.)"""
        try:
            body = await request.json()
            name = body["name"]
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": 'send {"name": "..."}'}, status_code=400)
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_CHARS:
            reason = f"a name is 1 to {MAX_NAME_CHARS} characters"
            return JSONResponse({"error": reason}, status_code=400)
        self._players += 1
        player = Player(id=f"player-{self._players}", name=name.strip())
        token = secrets.token_hex(16)
        self.sessions[token] = player
        answer = JSONResponse({"id": player.id, "name": player.name, "session": token})
        answer.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="lax")
        return answer

    async def game_state(self, request: Request) -> Response:
        """A game's state (one nobody joined yet: empty)."""
        game = self.games.get(request.path_params["name"], Game())
        return JSONResponse(game.state())

    # -- the hooks: the relay asks -----------------------------------------------------

    async def connect_hook(self, request: Request) -> Response:
        """Who is it: the session's player (its cookie)."""
        hook = read_hook_request(await request.body())
        player = self.sessions.get(hook.cookies.get(SESSION_COOKIE, ""))
        if player is None:
            return _answer(HookAnswer(allow=False, status=401, reason="log in first"))
        logger.info("%s connects as %s (%s)", hook.remote, player.id, player.name)
        return _answer(
            HookAnswer(allow=True, id=player.id, groups=["game-*"], info={"name": player.name})
        )

    async def join_hook(self, request: Request) -> Response:
        """At most two players per game; one already seated comes back (a reconnect)."""
        hook = read_hook_request(await request.body())
        if not hook.group.startswith(GAME_PREFIX):
            return _answer(HookAnswer(allow=True))
        game = self.games.setdefault(hook.group, Game())
        if not game.seat(hook.id):
            reason = f"{hook.group} has two players already"
            return _answer(HookAnswer(allow=False, status=409, reason=reason))
        return _answer(HookAnswer(allow=True))

    async def publish_hook(self, request: Request) -> Response:
        """A move, checked against the rules: refused with the reason, or replaced by
        the game's state after it (the mover is sent the same through the API)."""
        hook = read_hook_request(await request.body())
        game = self.games.get(hook.group)
        if game is None:
            return _refuse(f"no game {hook.group!r}")
        if hook.text is None:
            return _refuse(f"a game takes {MOVE} messages only, not binary ones")
        if hook.to is not None:
            return _refuse("a move goes to the whole game, not to one member")
        try:
            move = decode_envelope(hook.text)
        except EnvelopeError as exc:
            return _refuse(f"not a typed message: {exc}")
        if move.message_type != MOVE:
            return _refuse(f"a game takes {MOVE} messages only, not {move.message_type}")
        if not isinstance(move.message, dict) or "cell" not in move.message:
            return _refuse('a move is {"cell": N}')
        try:
            game.play(hook.id, move.message["cell"])
        except IllegalMove as exc:
            return _refuse(str(exc))
        state = encode_envelope(Envelope(STATE, game.state()))
        tell_mover = None
        if self.relay_api is not None:
            tell_mover = BackgroundTask(self._send_state, hook.group, hook.id, game.state())
        return _answer(HookAnswer(allow=True, text=state), background=tell_mover)

    async def _send_state(self, group: str, member: str, state: dict[str, Any]) -> None:
        """Post ``state`` to ``member`` of ``group`` through the relay's HTTP API (after the
        hook's answer went: the others get theirs from the relay meanwhile)."""
        assert self.relay_api is not None and self._http is not None
        url = f"{self.relay_api}/api/groups/{quote(group, safe='')}/messages"
        headers = {"Authorization": f"Bearer {self.api_key}"}
        try:
            response = await self._http.post(
                url, params={"type": STATE, "to": member}, json=state, headers=headers
            )
        except httpx.HTTPError as exc:
            logger.warning("could not send %s its state of %s: %s", member, group, exc)
            return
        if response.status_code != 200:
            logger.warning(
                "could not send %s its state of %s: %s %s",
                member,
                group,
                response.status_code,
                response.text.strip(),
            )

    # -- the webhooks: the relay tells -----------------------------------------------

    async def webhooks(self, request: Request) -> Response:
        """A batch of events, signed: leaves recorded once each (retries repeat ids)."""
        body = await request.body()
        if self.webhook_secret is None:
            return Response("no webhook secret configured\n", status_code=503)
        try:
            verify(self.webhook_secret, body, request.headers.get(SIGNATURE_HEADER))
            events = decode_body(body).events
        except SignatureError as exc:
            logger.warning("a webhook with a bad signature: %s", exc)
            return Response(f"{exc}\n", status_code=401)
        except WebhookBodyError as exc:
            return Response(f"{exc}\n", status_code=400)
        for event in events:
            if event.id in self._seen_events:
                continue
            self._seen_events.add(event.id)
            if event.type == LEAVE and event.member is not None:
                leave = Leave(event.id, event.group, event.member, event.code, event.time)
                self.leaves.append(leave)
                logger.info("%s left %s (code %s)", leave.member, leave.group, leave.code)
                self._leaves_changed.set()
                self._leaves_changed = trio.Event()
        return Response(status_code=204)

    async def list_leaves(self, request: Request) -> Response:
        return JSONResponse({"leaves": [attrs.asdict(leave) for leave in self.leaves]})

    async def wait_for_leave(self, member: str, group: str) -> Leave:
        """Until a leave of ``member`` from ``group`` is recorded (for tests and tools)."""
        while True:
            for leave in self.leaves:
                if (leave.member, leave.group) == (member, group):
                    return leave
            await self._leaves_changed.wait()


def _answer(answer: HookAnswer, background: BackgroundTask | None = None) -> Response:
    return Response(answer_body(answer), media_type="application/json", background=background)


def _refuse(reason: str) -> Response:
    return _answer(HookAnswer(allow=False, status=422, reason=reason))


async def bad_hook_request(request: Request, exc: Exception) -> Response:
    return Response(f"{exc}\n", status_code=400)


def _secret(file: str | None, variable: str) -> str | None:
    """A secret from a file (its surrounding whitespace stripped), else the environment."""
    if file is not None:
        return Path(file).read_text().strip()
    return os.environ.get(variable)


def _api_of(relay_url: str) -> str:
    """The relay's HTTP base URL from its WebSocket URL (ws://H:P/ws -> http://H:P)."""
    parts = urlsplit(relay_url)
    scheme = "https" if parts.scheme == "wss" else "http"
    return f"{scheme}://{parts.netloc}"


async def run(back_end: GameBackEnd, host: str, port: int) -> None:
    config = HypercornConfig()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve, back_end.app(), config)
        print(f"game back end at {binds[0]}/ (relay {back_end.relay_url})", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--relay", default="ws://127.0.0.1:8765/ws", help="the relay's WebSocket URL"
    )
    parser.add_argument(
        "--webhook-secret-file",
        help="the relay's webhook secret (default: $TRIO_WSPROXY_WEBHOOK_SECRET)",
    )
    parser.add_argument(
        "--api-key-file", help="the relay's HTTP API key (default: $TRIO_WSPROXY_API_KEY)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s %(message)s")
    webhook_secret = _secret(args.webhook_secret_file, "TRIO_WSPROXY_WEBHOOK_SECRET")
    if webhook_secret is None:
        logger.warning("no webhook secret: webhooks are refused (503), no leave is recorded")
    api_key = _secret(args.api_key_file, "TRIO_WSPROXY_API_KEY")
    if api_key is None:
        logger.warning("no API key: a mover learns the state from its opponent's next move")
    back_end = GameBackEnd(
        relay_url=args.relay,
        webhook_secret=webhook_secret,
        relay_api=_api_of(args.relay) if api_key is not None else None,
        api_key=api_key,
    )
    try:
        trio.run(run, back_end, args.host, args.port)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
