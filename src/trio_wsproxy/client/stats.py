"""What a client has done, counted: :class:`ClientStats`."""

from __future__ import annotations

import attrs

__all__ = ["ClientStats"]


@attrs.define
class ClientStats:
    """Counters of what a client has done; read them from :attr:`Client.stats`."""

    #: Messages (typed and binary) written to the relay.
    messages_sent: int = 0
    #: Messages received from the relay (frames; over ``wsproxy.v1``, the relay's own
    #: events are counted in ``events_received`` instead).
    messages_received: int = 0
    #: Events of a ``wsproxy.v1`` relay received: welcome, presence, members, errors.
    events_received: int = 0
    #: Received frames that nothing handled: no handler or subscription for their type.
    unhandled: int = 0
    #: Received frames ignored as bad (the sum of the kinds below).
    bad_messages: int = 0
    #: ... text frames that were not JSON.
    invalid_json: int = 0
    #: ... JSON that was not an envelope.
    invalid_envelope: int = 0
    #: ... envelopes with a MessageType no type is registered under.
    unknown_type: int = 0
    #: ... envelopes (or replies) whose payload did not fit the type.
    bad_payload: int = 0
    #: ... ``wsproxy.v1`` messages whose header the client could not read.
    invalid_header: int = 0
    #: ... announcements of a stream that did not follow (``Client.on_stream``).
    missing_stream: int = 0
    #: Exceptions raised by handlers.
    handler_errors: int = 0
    #: Connections made (the first one included).
    connects: int = 0
    #: Connections lost other than by closing the client.
    disconnects: int = 0
    #: Messages written in full on connections that were then lost, so that whether the
    #: relay took them is unknown (each loss reports them: ``Disconnected.unconfirmed``).
    unconfirmed: int = 0
