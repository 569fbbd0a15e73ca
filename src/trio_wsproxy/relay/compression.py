"""The relay's side of permessage-deflate (protocol/deflate.py): which encoding an
admitted member gets, and the compression counters its metrics show."""

from __future__ import annotations

from collections.abc import Iterator

from ..protocol.deflate import STATS, deflated
from ..protocol.encoding import Encoding, encoding_for
from ..protocol.handshake import Join


def member_encoding(join: Join, threshold: int | None) -> Encoding:
    """How messages are framed for the member ``join`` admits: its subprotocol's
    encoding, compressed from ``threshold`` bytes (``--compression``) if its handshake
    agreed on permessage-deflate."""
    encoding = encoding_for(join.subprotocol)
    if join.deflate is None or threshold is None:
        return encoding
    return deflated(encoding, threshold, join.deflate.server_window_bits)


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
