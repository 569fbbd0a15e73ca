"""The WebSocket close codes the relay sends, standard and application-defined."""

from __future__ import annotations

import enum


class CloseCode(enum.IntEnum):
    """Every close code the relay sends; docs/relay.md's table lists the same ones."""

    #: The member or the relay ended the session on purpose.
    NORMAL = 1000
    #: The relay is shutting down.
    GOING_AWAY = 1001
    #: The client broke the WebSocket protocol (unmasked frame, bad opcode, ...).
    PROTOCOL_ERROR = 1002
    #: A text message was not valid UTF-8.
    INVALID_PAYLOAD = 1007
    #: A member streaming a large message stalled: no piece within ``stream_timeout``
    #: while its group waited for the message to end.
    POLICY_VIOLATION = 1008
    #: A message was larger than the relay's ``max_message_size``.
    MESSAGE_TOO_BIG = 1009
    #: A bug in the relay: the session could not go on.
    INTERNAL_ERROR = 1011
    #: A newer connection joined the same group under the same id.
    REPLACED = 4000
    #: The member's mailbox stayed full longer than ``slow_member_timeout``.
    SLOW_CONSUMER = 4001
    #: The member got the start of a message whose sender left before finishing it.
    MESSAGE_TRUNCATED = 4002
    #: The member did not answer the relay's ping within ``ping_timeout``.
    KEEPALIVE_TIMEOUT = 4003
    #: The backplane could not guarantee delivery to or from the member's group (Redis
    #: lost, the node's subscription dropped, the group split by an outage): the
    #: member may have missed messages and should resynchronise.
    BACKPLANE_UNAVAILABLE = 4004
    #: A back end removed the member from its group (the HTTP API's DELETE): it should
    #: not reconnect by itself.
    REMOVED = 4005
    #: The member's access token expired and no new one came (wsproxy.v1 members may
    #: send one): it must get a new token before it reconnects.
    TOKEN_EXPIRED = 4006
    #: The member's access token was revoked (the HTTP API's POST /api/revocations): it
    #: must not reconnect with that token.
    REVOKED = 4007


# Codes a client may put in its own close frame that are worth a label of their own:
# the standard ones the frame parser lets through. Ranges take the rest, so that a
# client choosing codes cannot grow the metric's label set.
_STANDARD = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})


def client_close_label(code: int | None) -> str:
    """The ``/metrics`` label of a close a client chose: the code for standard ones,
    its range (``3000-3999``, ``4000-4999``) otherwise, ``none`` for no code."""
    if code is None:
        return "none"
    if code in _STANDARD:
        return str(code)
    if 3000 <= code <= 3999:
        return "3000-3999"
    if 4000 <= code <= 4999:
        return "4000-4999"
    return "other"
