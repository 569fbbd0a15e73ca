"""The relay's side of permessage-deflate (protocol/deflate.py): which encoding an
admitted member gets, and the compression counters its metrics show."""

from __future__ import annotations

from collections.abc import Iterator

from ..protocol.deflate import STATS, deflated
from ..protocol.encoding import Encoding, encoding_for
from ..protocol.handshake import Join


def member_encoding(join: Join, threshold: int | None) -> Encoding:
    """How messages are framed for the member ``join`` admits: its subprotocol's
    encoding, compressed from ``threshold`` bytes (``--compression``, or its URL group's
    namespace's) if its handshake agreed on permessage-deflate."""
    window_bits = None if join.deflate is None else join.deflate.server_window_bits
    return group_encoding(encoding_for(join.subprotocol), window_bits, threshold)


def group_encoding(base: Encoding, window_bits: int | None, threshold: int | None) -> Encoding:
    """``base`` (a member's encoding in one group), compressed from ``threshold`` bytes
    when the member agreed on permessage-deflate (``window_bits``) and the group's
    namespace (or the relay) compresses (``threshold`` not None)."""
    if window_bits is None or threshold is None:
        return base
    return deflated(base, threshold, window_bits)


def metric_lines() -> Iterator[tuple[str, str, int]]:
    """The compression counters: (name, help, value), for metrics.py."""
    stats = STATS
    yield (
        "trio_wsproxy_compressions",
        "Messages compressed (once per message per compressed variant of its recipients)",
        stats.compressed,
    )
    yield (
        "trio_wsproxy_compressions_incompressible",
        "Compressed messages that did not shrink and went out plain",
        stats.incompressible,
    )
    yield (
        "trio_wsproxy_compression_input_bytes",
        "Payload bytes given to the compressor",
        stats.input_bytes,
    )
    yield (
        "trio_wsproxy_compression_output_bytes",
        "Payload bytes the compressor's messages went out as",
        stats.output_bytes,
    )
    yield (
        "trio_wsproxy_inflations",
        "Compressed messages members sent, inflated",
        stats.inflated,
    )
