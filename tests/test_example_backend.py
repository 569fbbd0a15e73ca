"""The example back end (examples/game_backend/) end to end: its Starlette app served by
hypercorn in the test's own Trio loop, a real relay whose hooks, API and webhooks point
at it, a browser page (headless Chromium) and a Python member playing tic-tac-toe.

The server is the referee: an illegal move is refused (the mover sees why, nobody else
sees it), a legal one reaches every member as the game's state, a third player is
refused, a leave is recorded from the relay's signed webhook.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

import trio_wsproxy
from browserdriver import Browser, Page, open_browser
from relayproc import first_line
from trio_wsproxy import (
    ClientConfig,
    DeliveryFailed,
    HandshakeRefused,
    Namespace,
    Relay,
    RelayConfig,
    message_type,
    open_client,
    open_relay,
)
from trio_wsproxy.config_file import load_config
from trio_wsproxy.protocol.webhooks import SIGNATURE_HEADER, sign

sys.path.insert(0, str(Path(__file__).parent.parent / "examples" / "game_backend"))

import game_server
import tictactoe

EXAMPLE = Path(game_server.__file__).parent

KEY = "5e0c8f2a9b7d4c1e6f3a0b9c8d7e6f5a"
SECRET = "a-webhook-secret-of-32-bytes-xyz"


@message_type("TicTacToe.Move")
@attrs.frozen
class Move:
    cell: Any


@message_type("TicTacToe.State")
@attrs.frozen
class State:
    board: str
    next: str | None
    winner: str | None
    players: list[str]


@attrs.define
class Stack:
    """The back end and the relay beside it, as an operator would run them."""

    back_end: game_server.GameBackEnd
    url: str
    relay: Relay
    http: httpx.AsyncClient

    async def login(self, name: str) -> dict[str, str]:
        response = await self.http.post(f"{self.url}/login", json={"name": name})
        assert response.status_code == 200, response.text
        player: dict[str, str] = response.json()
        return player


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    back_end = game_server.GameBackEnd(relay_url="", webhook_secret=SECRET, api_key=KEY)
    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve, back_end.app(), config)
        url = binds[0]
        games = Namespace(
            name="games",
            prefix="game-",
            join_hook=f"{url}/hooks/join",
            publish_hook=f"{url}/hooks/publish",
        )
        settings = RelayConfig(
            port=0,
            ping_interval=None,
            close_timeout=0.5,
            connect_hook=f"{url}/hooks/connect",
            hook_cookies="session",
            api_key=KEY,
            webhook_url=f"{url}/webhooks",
            webhook_secret=SECRET,
            webhook_interval=0.05,
            namespaces=(games,),
        )
        async with open_relay(settings) as relay:
            back_end.relay_url = relay.url
            back_end.relay_api = f"http://127.0.0.1:{relay.port}"
            async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
                yield Stack(back_end, url, relay, http)
        nursery.cancel_scope.cancel()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with open_browser() as browser:
        yield browser


async def play_in_browser(browser: Browser, stack: Stack, name: str, game: str) -> Page:
    """A page of the back end's, logged in as ``name`` and connected to ``game``."""
    page = await browser.open(name, f"{stack.url}/")
    await page.eval(
        f"(() => {{ document.getElementById('name').value = {name!r};"
        f" document.getElementById('game').value = {game!r};"
        " document.getElementById('login').requestSubmit(); return true })()"
    )
    await page.wait("window.game.client !== null && window.game.state !== null")
    return page


async def next_of(channel: trio.MemoryReceiveChannel[trio_wsproxy.Incoming[Any]]) -> Any:
    with trio.fail_after(5):
        return (await channel.receive()).value


def board_is(board: str) -> str:
    return f"window.game.state !== null && window.game.state.board === {board!r}"


def session(login: dict[str, str]) -> ClientConfig:
    """A Python member's settings that send its session cookie, as a browser does."""
    return ClientConfig(headers={"Cookie": f"session={login['session']}"})


async def test_a_page_and_a_python_member_play_refereed_by_the_back_end(
    stack: Stack, browser: Browser
) -> None:
    # The page logs in first: the first seated plays X and moves first.
    page = await play_in_browser(browser, stack, "Alice", "game-1")
    alice = await page.eval("window.game.me")
    bob_session = await stack.login("Bob")
    # A program sends the session cookie as the page does; the connect hook gives it its id.
    async with open_client(
        stack.relay.url, group="game-1", id="bob", config=session(bob_session)
    ) as bob:
        async with bob.subscribe(State) as states, bob.subscribe(DeliveryFailed) as refusals:
            assert stack.back_end.games["game-1"].players == [alice, bob_session["id"]]

            # Not Bob's turn: refused, with the back end's reason, to Bob only.
            await bob.send(Move(4))
            refusal = await next_of(refusals)
            assert (refusal.error, refusal.detail) == ("message_refused", "it is not your turn")

            # Alice's move, clicked: the page's board changes when the back end says so,
            # and Bob gets the same state, in place of the move.
            await page.eval("document.querySelector('[data-cell=\"4\"]').click() ?? true")
            state = await next_of(states)
            assert state == State("....X....", bob_session["id"], None, [alice, bob_session["id"]])
            await page.wait(board_is("....X...."))
            assert await page.eval("window.game.state.next") == bob_session["id"]

            # Illegal moves, each refused with its reason; nothing reaches the others.
            await bob.send(Move(4))
            assert (await next_of(refusals)).detail == "cell 4 is taken"
            await bob.send(Move(9))
            assert (await next_of(refusals)).detail == "a move is a cell from 0 to 8, got 9"
            await bob.send("hello")
            refusal = await next_of(refusals)
            assert refusal.detail == "a game takes TicTacToe.Move messages only, not System.String"
            await bob.send_to(alice, Move(0))
            refusal = await next_of(refusals)
            assert (refusal.detail, refusal.to) == (
                "a move goes to the whole game, not to one member",
                alice,
            )
            await page.eval("window.game.client.send('TicTacToe.Move', {cell: 0})")
            await page.wait("window.game.refusals.includes('it is not your turn')")
            await page.wait("document.getElementById('refusal').textContent.includes('turn')")

            # Bob's legal move: both see the server's board, Bob through the API.
            await bob.send(Move(0))
            assert (await next_of(states)).board == "O...X...."
            await page.wait(board_is("O...X...."))
            assert await page.eval("document.getElementById('status').textContent") == (
                "Your turn."
            )

            # Alice wins down the middle column; the page says so, Bob is told.
            await page.eval("document.querySelector('[data-cell=\"1\"]').click() ?? true")
            assert (await next_of(states)).board == "OX..X...."
            await bob.send(Move(3))
            assert (await next_of(states)).board == "OX.OX...."
            await page.wait(board_is("OX.OX...."))
            await page.eval("document.querySelector('[data-cell=\"7\"]').click() ?? true")
            final = await next_of(states)
            assert (final.board, final.winner, final.next) == ("OX.OX..X.", alice, None)
            await page.wait("document.getElementById('status').textContent === 'You won!'")
            await bob.send(Move(8))
            assert (await next_of(refusals)).detail == "the game is over"
            assert await page.errors() == []


async def test_a_third_player_is_refused_and_a_leave_is_recorded_from_the_webhook(
    stack: Stack,
) -> None:
    sessions = [await stack.login(name) for name in ("Ann", "Ben", "Cid")]
    ann, ben, cid = (session(each) for each in sessions)
    with trio.fail_after(10):
        async with open_client(stack.relay.url, group="game-2", id="ann", config=ann):
            async with open_client(stack.relay.url, group="game-2", id="ben", config=ben):
                with pytest.raises(HandshakeRefused) as refused:
                    async with open_client(stack.relay.url, group="game-2", id="cid", config=cid):
                        pass
                assert refused.value.status_code == 409
                assert "game-2 has two players already" in refused.value.reason
                # Seated players may come back; the others may play another game.
                async with open_client(stack.relay.url, group="game-3", id="cid", config=cid):
                    pass
            # Ben left (closed, 1000): the relay's webhook tells the back end.
            leave = await stack.back_end.wait_for_leave(sessions[1]["id"], "game-2")
            assert leave.code == 1000
            listed = (await stack.http.get(f"{stack.url}/leaves")).json()["leaves"]
            assert {"member": sessions[1]["id"], "group": "game-2", "code": 1000}.items() <= (
                next(item for item in listed if item["group"] == "game-2").items()
            )


async def test_the_connect_hook_refuses_a_member_that_did_not_log_in(stack: Stack) -> None:
    with trio.fail_after(10), pytest.raises(HandshakeRefused) as refused:
        async with open_client(stack.relay.url, group="game-1", id="nobody"):
            pass
    assert (refused.value.status_code, refused.value.reason) == (401, "log in first")


async def test_the_webhook_endpoint_refuses_what_the_relay_did_not_sign(stack: Stack) -> None:
    body = (
        b'{"events":[{"id":"x-1","type":"leave","group":"game-9","member":"m",'
        b'"code":1000,"time":1.0}]}'
    )
    url = f"{stack.url}/webhooks"
    forged = await stack.http.post(
        url, content=body, headers={SIGNATURE_HEADER: sign("x" * 32, body)}
    )
    assert forged.status_code == 401 and "does not match" in forged.text
    unsigned = await stack.http.post(url, content=body)
    assert unsigned.status_code == 401
    signed = {SIGNATURE_HEADER: sign(SECRET, body)}
    assert (await stack.http.post(url, content=body, headers=signed)).status_code == 204
    # A retry (the same event id) is recorded once.
    assert (await stack.http.post(url, content=body, headers=signed)).status_code == 204
    assert [leave.event for leave in stack.back_end.leaves] == ["x-1"]
    bad = b'{"events":[{"id":"x-2","type":"left"}]}'
    answer = await stack.http.post(url, content=bad, headers={SIGNATURE_HEADER: sign(SECRET, bad)})
    assert answer.status_code == 400


async def test_it_runs_as_documented_beside_a_relay_of_its_own_config_file() -> None:
    """``python examples/game_backend/game_server.py`` serves the page and the client; the
    relay.toml beside it is a valid config file pointing the relay's hooks at it."""
    relay = load_config(EXAMPLE / "relay.toml")
    assert relay.connect_hook == "http://127.0.0.1:8000/hooks/connect"
    assert relay.hook_cookies == ("session",)
    assert relay.webhook_url == "http://127.0.0.1:8000/webhooks"
    (games,) = relay.namespaces
    assert (games.prefix, games.join_hook, games.publish_hook) == (
        "game-",
        "http://127.0.0.1:8000/hooks/join",
        "http://127.0.0.1:8000/hooks/publish",
    )
    argv = [sys.executable, str(EXAMPLE / "game_server.py"), "--port", "0"]
    process = await trio.lowlevel.open_process(argv, stdout=subprocess.PIPE)
    assert process.stdout is not None
    try:
        line = (await first_line(process.stdout)).decode()
        url = line.split(" at ", 1)[1].split("/ ", 1)[0]
        async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
            page = await http.get(f"{url}/")
            assert page.status_code == 200 and 'from "/wsproxy.js"' in page.text
            script = await http.get(f"{url}/wsproxy.js")
            assert "export async function connect" in script.text
            assert (await http.get(f"{url}/config")).json() == {"relay": "ws://127.0.0.1:8765/ws"}
            refused = await http.post(f"{url}/hooks/connect", content=b'{"hook": "connect"}')
            assert refused.status_code == 400 and "not a hook's request" in refused.text
    finally:
        process.terminate()
        await process.wait()


def test_the_rules_end_a_game_with_a_win_or_a_draw() -> None:
    game = tictactoe.Game()
    assert game.seat("x") and game.seat("o") and game.seat("x") and not game.seat("z")
    for player, cell in [("x", 0), ("o", 1), ("x", 2), ("o", 4), ("x", 3), ("o", 5)]:
        game.play(player, cell)
    for player, cell in [("x", 7), ("o", 6), ("x", 8)]:
        game.play(player, cell)
    assert game.state() == {
        "board": "XOXXOOOXX",
        "next": None,
        "winner": "draw",
        "players": ["x", "o"],
    }
    won = tictactoe.Game(players=["x", "o"])
    for player, cell in [("x", 0), ("o", 3), ("x", 1), ("o", 4), ("x", 2)]:
        won.play(player, cell)
    assert won.winner == "x"
    with pytest.raises(tictactoe.IllegalMove, match="over"):
        won.play("o", 5)
    with pytest.raises(tictactoe.IllegalMove, match="not a player"):
        tictactoe.Game(players=["x", "o"]).play("z", 0)
    with pytest.raises(tictactoe.IllegalMove, match="second player"):
        tictactoe.Game(players=["x"]).play("x", 0)
    with pytest.raises(tictactoe.IllegalMove, match="cell from 0 to 8"):
        tictactoe.Game(players=["x", "o"]).play("x", True)
