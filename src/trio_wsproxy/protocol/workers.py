"""What a worker tells its supervisor of itself (``trio-wsproxy serve --workers N``),
sans-I/O: :class:`WorkerReport` with ``encode``/``decode``, the one wire format of the
workers' private endpoints, and :func:`group_digest`, how a group is named in it.

A report is one JSON object, ``{"instance": ..., "exposition": ..., "groups": [...]}``,
with its groups sorted so that the same report is always the same bytes.
"""

from __future__ import annotations

import hashlib
import json

import attrs

__all__ = ["WorkerReport", "group_digest"]


def group_digest(name: str) -> str:
    """What a worker says of one of its groups: enough to count the groups of all the
    workers without double-counting a group on two of them (a collision in 64 bits is
    not to be feared), and without group names leaving the process."""
    return hashlib.blake2b(name.encode(), digest_size=8).hexdigest()


@attrs.frozen
class WorkerReport:
    """What a worker tells its supervisor of itself: the one wire format of the private
    endpoints (JSON: ``{"instance": ..., "exposition": ..., "groups": [...]}``)."""

    #: Names this process (not its place): a restarted worker counts from 0 again.
    instance: str
    #: Its own ``/metrics`` body, in the Prometheus text format.
    exposition: str
    #: :func:`group_digest` of each group with members on it.
    groups: frozenset[str]

    def encode(self) -> bytes:
        return json.dumps(
            {
                "instance": self.instance,
                "exposition": self.exposition,
                "groups": sorted(self.groups),
            }
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> WorkerReport:
        """The report in ``data``; ValueError saying what is wrong when it is not one."""
        try:
            fields = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"a worker report that is not JSON: {error}") from None
        if not isinstance(fields, dict):
            raise ValueError("a worker report that is not a JSON object")
        instance, exposition = fields.get("instance"), fields.get("exposition")
        groups = fields.get("groups")
        if not isinstance(instance, str) or not instance:
            raise ValueError("a worker report without its instance")
        if not isinstance(exposition, str):
            raise ValueError("a worker report without its exposition")
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            raise ValueError("a worker report whose groups are not a list of strings")
        return cls(instance, exposition, frozenset(groups))
