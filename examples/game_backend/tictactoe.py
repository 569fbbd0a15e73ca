"""Tic-tac-toe, the rules only: the back end's truth about one game, with no I/O.

Two players, in the order they joined: the first plays ``X`` and moves first. A board is
nine characters, row by row, ``.`` for an empty cell. :meth:`Game.play` either applies a
move or raises :class:`IllegalMove` with the reason the player is shown.
"""

from __future__ import annotations

from typing import Any

import attrs

EMPTY = "."
MARKS = ("X", "O")
DRAW = "draw"
LINES = (
    (0, 1, 2), (3, 4, 5), (6, 7, 8),  # rows
    (0, 3, 6), (1, 4, 7), (2, 5, 8),  # columns
    (0, 4, 8), (2, 4, 6),  # diagonals
)  # fmt: skip


class IllegalMove(ValueError):
    """A move the rules refuse; ``str(error)`` is the reason, for the player."""


@attrs.define
class Game:
    """One game: its players (ids, X first), its board, whose turn, and how it ended."""

    players: list[str] = attrs.Factory(list)
    board: str = EMPTY * 9
    #: None while it goes on; a player's id, or ``"draw"``, once it is over.
    winner: str | None = None

    @property
    def next(self) -> str | None:
        """The id of the player whose turn it is (None: waiting for players, or over)."""
        if len(self.players) < 2 or self.winner is not None:
            return None
        return self.players[self.board.count(EMPTY) % 2 == 0]

    def seat(self, player: str) -> bool:
        """Seat ``player`` (True), or say there is no seat left (False). A player already
        seated keeps its seat: it is coming back (a reload, a reconnect)."""
        if player in self.players:
            return True
        if len(self.players) >= 2:
            return False
        self.players.append(player)
        return True

    def play(self, player: str, cell: object) -> None:
        """``player`` puts its mark on ``cell`` (0–8, row by row); IllegalMove if it may not."""
        if player not in self.players:
            raise IllegalMove("you are not a player of this game")
        if self.winner is not None:
            raise IllegalMove("the game is over")
        if len(self.players) < 2:
            raise IllegalMove("wait for a second player")
        if isinstance(cell, bool) or not isinstance(cell, int) or not 0 <= cell <= 8:
            raise IllegalMove(f"a move is a cell from 0 to 8, got {cell!r}")
        if player != self.next:
            raise IllegalMove("it is not your turn")
        if self.board[cell] != EMPTY:
            raise IllegalMove(f"cell {cell} is taken")
        mark = MARKS[self.players.index(player)]
        self.board = self.board[:cell] + mark + self.board[cell + 1 :]
        for line in LINES:
            if all(self.board[index] == mark for index in line):
                self.winner = player
                return
        if EMPTY not in self.board:
            self.winner = DRAW

    def state(self) -> dict[str, Any]:
        """What every member is sent after each move: the server's truth."""
        return {
            "board": self.board,
            "next": self.next,
            "winner": self.winner,
            "players": list(self.players),
        }
