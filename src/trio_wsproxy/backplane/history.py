"""The groups' histories in Redis (``--history-size``): the history scripts' arguments,
reading a history (for the HTTP API and for members that recover), and keeping the
histories of the groups with members here from expiring. The scripts themselves, and
what a history holds, are in ``scripts.py``."""

from __future__ import annotations

import os
from collections.abc import Mapping

import trio

from ..protocol import v1
from ..protocol.message import Message
from ..protocol.nodes import stored_message
from ..protocol.resp import ConnectionLost, RedisError
from ..relay.config import RelayConfig
from ..relay.groups import Group, RegistryUnavailable
from ..relay.history import HistoryLimits, HistoryPage, missed_by
from . import scripts
from .connection import RedisConnection
from .group import Recovered, SharedGroup
from .link import RedisLink
from .names import Names

#: How much longer than 4/3 of the history's ttl its keys stay in Redis after they were
#: last renewed (the meta hash twice as long: see scripts.py).
_HISTORY_MARGIN_MS = 10_000


def _entries(entries: list[tuple[int, bytes, bytes]]) -> list[tuple[int, Message | None]]:
    """History entries as (offset, message or None for a gap), declined claims left
    out (they are no message)."""
    found: list[tuple[int, Message | None]] = []
    for offset, kind, body in entries:
        if kind == b"b":
            message = stored_message(body)
            message.offset = offset
            found.append((offset, message))
        elif kind == b"g":
            found.append((offset, None))
    return found


class RedisHistory:
    """The histories of a node's groups, as kept in Redis."""

    def __init__(
        self, link: RedisLink, names: Names, node: bytes, groups: Mapping[str, SharedGroup]
    ) -> None:
        self._link = link
        self._names = names
        self._node = node
        self._groups = groups
        #: The bounds of every group's history (None: history is off), the SHA1 of each
        #: script as Redis knows it, and the id of the Redis run (a history belongs to
        #: one: see scripts.py).
        self.limits: HistoryLimits | None = None
        self._shas: dict[str, str] = {}
        self._run_id = ""
        #: ARGV 3-7 of the history scripts (see scripts.py).
        self._bounds: list[bytes | str | int] = []
        self._config: RelayConfig | None = None

    def configure(self, config: RelayConfig) -> None:
        """Take the bounds of the histories from ``config`` (none: history is off)."""
        self.limits = limits = HistoryLimits.of(config)
        if limits is not None:
            ttl_ms = max(1, int(limits.ttl * 1000))
            # Renewed every ttl/3 while a node has members: a history outlives its last
            # member by the ttl at least.
            keep_ms = ttl_ms * 4 // 3 + _HISTORY_MARGIN_MS
            self._bounds = [self._node, limits.size, ttl_ms, limits.max_bytes, keep_ms]
        self._config = config

    def limits_of(self, group_name: str) -> HistoryLimits | None:
        """The bounds of ``group_name``'s history (its namespace's size; None: the group
        keeps none)."""
        limits, config = self.limits, self._config
        return None if limits is None or config is None else limits.size_of(config, group_name)

    def keys(self, group_name: str) -> tuple[str, str, str, bytes]:
        """The leading arguments of the history scripts for a group: its keys, channel."""
        return (*self._names.history_keys(group_name), self._names.group_channel(group_name))

    def args(
        self, script: str, group_name: str, group: Group | None = None
    ) -> list[bytes | str | int]:
        """EVALSHA of a history script for ``group_name`` (``group``, if it is here),
        with its keys and ARGV 1-7 (a new epoch for each call, in case it starts one)."""
        keys = group.history_keys if isinstance(group, SharedGroup) else None
        if keys is None:
            keys = self.keys(group_name)
        bounds = self._bounds
        if self._config is not None and self._config.namespaces:
            limits = self.limits_of(group_name)
            if limits is not None and limits.size != bounds[1]:
                bounds = [bounds[0], limits.size, *bounds[2:]]
        return [
            "EVALSHA", self._shas[script], 4, *keys, self._run_id, os.urandom(8).hex(),
            *bounds,
        ]  # fmt: skip

    async def load_scripts(self, pub: RedisConnection) -> None:
        """Load the history scripts (run by SHA1 from then on) and learn which lineage of
        the data this Redis holds: its run id (new at every start) and replication id (new
        whenever a replica is promoted, Sentinel's failover). A history belongs to one
        lineage (see scripts.py): a restart or a failover may have lost the last writes,
        and the offsets given out after them, so the history starts a new epoch there."""
        lineage = []
        for section, field in (("server", "run_id:"), ("replication", "master_replid:")):
            info = await pub.call("INFO", section)
            if not isinstance(info, bytes):
                raise RedisError(f"unexpected reply to INFO: {info!r}")
            for line in info.decode(errors="replace").splitlines():
                if line.startswith(field):
                    lineage.append(line[len(field) :].strip())
            if len(lineage) < (1 if section == "server" else 2) or not lineage[-1]:
                raise RedisError(f"INFO {section} gave no {field[:-1]}")
        self._run_id = ":".join(lineage)
        for script in (scripts.SEQUENCE, scripts.HISTORY, scripts.DECLINED):
            sha = await pub.call("SCRIPT", "LOAD", script)
            if not isinstance(sha, bytes):
                raise RedisError(f"unexpected reply to SCRIPT LOAD: {sha!r}")
            self._shas[script] = sha.decode()

    def declined(self, group_name: str, offset: int) -> None:
        """The offset a claim of ours took in the group's history is no message: its
        stream was declined (another streams first)."""
        meta = self.keys(group_name)[0]
        self._link.send("EVALSHA", self._shas[scripts.DECLINED], 1, meta, offset)

    async def read(
        self, pub: RedisConnection, group_name: str, after: int, limit: int
    ) -> tuple[str, int, int, list[tuple[int, bytes, bytes]]]:
        """The group's history in Redis: epoch, last offset, last trimmed, and (``after``
        >= 0) up to ``limit`` (0: all) entries after ``after``: (offset, kind, body)."""
        args = self.args(scripts.HISTORY, group_name)
        reply = await pub.call(*args, after, limit, 0)  # (0: no renewal; see renew)
        if not (isinstance(reply, list) and len(reply) == 4):
            raise RedisError(f"unexpected reply to the history script: {reply!r}")
        epoch, last, trimmed, flat = reply
        if not (
            isinstance(epoch, bytes)
            and isinstance(last, int)
            and isinstance(trimmed, int)
            and isinstance(flat, list)
        ):
            raise RedisError(f"unexpected reply to the history script: {reply!r}")
        entries: list[tuple[int, bytes, bytes]] = []
        for offset, kind, body in zip(flat[::3], flat[1::3], flat[2::3], strict=True):
            if not (isinstance(offset, int) and isinstance(kind, bytes)):
                raise RedisError(f"unexpected entry from the history script: {offset!r}")
            entries.append((offset, kind, body if isinstance(body, bytes) else b""))
        return epoch.decode(), last, trimmed, entries

    async def recover(self, group_name: str, since: v1.Position, member_id: str) -> Recovered | str:
        """What ``member_id`` missed after ``since``, from the group's history in Redis,
        or why it cannot all be had (a Recovery reason)."""
        link = self._link
        pub = link.pub
        if pub is None or not link.up:
            raise ConnectionLost("the backplane is down")
        epoch, last, trimmed, entries = await self.read(pub, group_name, since.offset, 0)
        if epoch != since.epoch or since.offset > last:
            return v1.EPOCH_CHANGED
        if since.offset < trimmed:
            return v1.POSITION_TOO_OLD
        if [offset for offset, _, _ in entries] != list(range(since.offset + 1, last + 1)):
            # Every offset given out is in some batch until trimmed: entries are missing
            # (evicted by a maxmemory policy, deleted by hand). Never a silent gap.
            return v1.POSITION_TOO_OLD
        missed = missed_by(_entries(entries), since.offset, member_id)
        if isinstance(missed, str):
            return missed
        return Recovered(epoch, last, missed)

    async def page(self, group_name: str, after: int, limit: int) -> HistoryPage | None:
        """A page of the group's history for the HTTP API (None: history is off)."""
        if self.limits_of(group_name) is None:
            return None
        pub = self._link.publisher_or_fail()
        try:
            epoch, last, trimmed, entries = await self.read(pub, group_name, after, limit)
        except (ConnectionLost, RedisError) as exc:
            raise RegistryUnavailable(f"backplane unavailable: {exc}") from exc
        # (Batches were read: as many as messages asked for, and so at least as many.)
        return HistoryPage(epoch, trimmed + 1, last, _entries(entries)[:limit])

    async def renew(self, period: float) -> None:
        """Keep the histories of the groups with members here in Redis while they are
        quiet: a history expires only when nobody is there to recover it."""
        while True:
            await trio.sleep(period)
            for group in list(self._groups.values()):
                if group.members or group.holds:
                    args = self.args(scripts.HISTORY, group.name, group)
                    self._link.send(*args, -1, 0, 1)
