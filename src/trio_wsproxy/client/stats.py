"""What a client has done, counted: :class:`ClientStats`."""

from __future__ import annotations

import attrs

__all__ = ["ClientStats"]


@attrs.define
class ClientStats:
    """Counters of what a client has done; read them from :attr:`Client.stats`."""

    #: Messages (typed and binary) written to the relay.
    messages_sent: int = 0
    #: Frames received from the relay.
    messages_received: int = 0
    #: Received frames that nothing handled: no handler or subscription for their type.
    unhandled: int = 0
    #: Received frames ignored as bad (the sum of the four kinds below).
    bad_messages: int = 0
    #: ... text frames that were not JSON.
    invalid_json: int = 0
    #: ... JSON that was not an envelope.
    invalid_envelope: int = 0
    #: ... envelopes with a MessageType no type is registered under.
    unknown_type: int = 0
    #: ... envelopes (or replies) whose payload did not fit the type.
    bad_payload: int = 0
    #: Exceptions raised by handlers.
    handler_errors: int = 0
    #: Connections made (the first one included).
    connects: int = 0
    #: Connections lost other than by closing the client.
    disconnects: int = 0
