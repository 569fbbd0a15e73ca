"""The typed messages the suite's JavaScript members speak — the demo page's and
tests/js/peer.mjs's — for the Python members beside them (registered once, here)."""

from __future__ import annotations

import attrs

import trio_wsproxy


@trio_wsproxy.message_type("Demo.Chat")
@attrs.frozen
class Chat:
    """The demo page's chat message ({"from": name, "text": ...}; v1 says the sender
    anyway)."""

    text: str


@trio_wsproxy.message_type("Demo.Say")
@attrs.frozen
class Say:
    text: str


@trio_wsproxy.message_type("Demo.Ask")
@attrs.frozen
class Ask:
    text: str


@trio_wsproxy.message_type("Demo.Answer")
@attrs.frozen
class Answer:
    text: str


@trio_wsproxy.message_type("Demo.Command")
@attrs.frozen
class Command:
    """What tests/js/peer.mjs is told to do."""

    do: str
    text: str = ""
    to: str | None = None
    size: int = 0
