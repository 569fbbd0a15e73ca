"""Namespaces: a group-name prefix with a policy of its own (DESIGN.md §9).

A group whose name starts with a namespace's ``prefix`` (``game-``, ``chat:``) gets that
namespace's policy; the longest matching prefix wins, and a group outside every
namespace gets the relay's settings. A policy overrides, for its groups only: the most
members (``max_group_members``), how many messages its histories keep
(``history_size``), from what size its messages go compressed (``compression``),
whether v1 members hear of joins and leaves
(``presence``) and above what size they get counts only (``presence_limit``), and who
may publish (``publish``: members, or the application's back end only, through the
HTTP API), the back end's hooks asked for its joins and messages (``join_hook``,
``publish_hook``) and what a hook that cannot be asked decides (``hook_failure``). A
setting a namespace leaves out is the relay's.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import attrs

#: Who may publish into a namespace's groups.
PUBLISH_MEMBERS = "members"
PUBLISH_BACKEND = "backend"


def _positive_or_none(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not (isinstance(value, int) and not isinstance(value, bool)):
        raise ValueError(f"{attribute.name} must be a whole number, got {value!r}")
    if value is not None and value <= 0:
        raise ValueError(f"{attribute.name} must be positive, got {value!r}")


def _count_or_none(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not (
        isinstance(value, int) and not isinstance(value, bool) and value >= 0
    ):
        raise ValueError(f"{attribute.name} must be a whole number (0: none), got {value!r}")


def _publish(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value not in (PUBLISH_MEMBERS, PUBLISH_BACKEND):
        raise ValueError(
            f'publish must be "{PUBLISH_MEMBERS}" or "{PUBLISH_BACKEND}", got {value!r}'
        )


def hook_url(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    """An http:// or https:// URL the relay POSTs to (a hook, a webhook), or None."""
    if value is None:
        return
    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{attribute.name} must be an http:// or https:// URL, got {value!r}")


def _hook_failure(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and value not in ("refuse", "allow"):
        raise ValueError(f'hook_failure must be "refuse" or "allow", got {value!r}')


def _prefix(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not value or not value.isprintable():
        raise ValueError(f"prefix must be a non-empty printable string, got {value!r}")


@attrs.frozen(kw_only=True)
class Namespace:
    """One namespace: its ``name`` (the config file's ``[namespaces.NAME]``), the group
    name ``prefix`` it covers, and its policy (None: the relay's setting)."""

    name: str
    prefix: str = attrs.field(validator=_prefix)
    max_group_members: int | None = attrs.field(default=None, validator=_positive_or_none)
    #: Whether v1 members of its groups hear who is there (welcome lists, presence
    #: events). Off: their welcome gives the count only, as above the presence limit.
    presence: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))
    presence_limit: int | None = attrs.field(default=None, validator=_positive_or_none)
    #: How many messages its groups' histories keep (0: none; None: the relay's
    #: ``history_size``). Their age and size bounds are the relay's.
    history_size: int | None = attrs.field(default=None, validator=_count_or_none)
    #: From how many bytes its groups' messages go compressed to members that agreed to
    #: permessage-deflate (0: never; None: the relay's ``compression``).
    compression: int | None = attrs.field(default=None, validator=_count_or_none)
    #: ``"members"``: every member may send; ``"backend"``: only the HTTP API may post.
    publish: str = attrs.field(default=PUBLISH_MEMBERS, validator=_publish)
    #: The back end's URLs asked before each join of its groups and each member's
    #: message into them (None: the relay's ``join_hook``/``publish_hook``).
    join_hook: str | None = attrs.field(default=None, validator=hook_url)
    publish_hook: str | None = attrs.field(default=None, validator=hook_url)
    #: What a hook that times out or fails decides here (None: the relay's).
    hook_failure: str | None = attrs.field(default=None, validator=_hook_failure)

    def covers(self, group: str) -> bool:
        """Whether the group ``group`` is in this namespace."""
        return group.startswith(self.prefix)


#: The policy keys a namespace takes besides ``prefix`` (the config file's, one to one).
POLICY_KEYS = (
    "compression",
    "history_size",
    "max_group_members",
    "presence",
    "presence_limit",
    "publish",
    "join_hook",
    "publish_hook",
    "hook_failure",
)


def namespace_of(namespaces: tuple[Namespace, ...], group: str) -> Namespace | None:
    """The namespace of ``group``: the one with the longest prefix it starts with."""
    best: Namespace | None = None
    for namespace in namespaces:
        if namespace.covers(group) and (best is None or len(namespace.prefix) > len(best.prefix)):
            best = namespace
    return best


def check_namespaces(namespaces: tuple[Namespace, ...]) -> None:
    """Raise ValueError if two namespaces share a name or a prefix (which would win?)."""
    names: set[str] = set()
    prefixes: dict[str, str] = {}
    for namespace in namespaces:
        if not isinstance(namespace, Namespace):
            raise ValueError(f"namespaces must be Namespace objects, got {namespace!r}")
        if namespace.name in names:
            raise ValueError(f"namespaces: two are called {namespace.name!r}")
        names.add(namespace.name)
        other = prefixes.get(namespace.prefix)
        if other is not None:
            raise ValueError(
                f"namespaces {other!r} and {namespace.name!r} have one prefix, "
                f"{namespace.prefix!r}: give each its own"
            )
        prefixes[namespace.prefix] = namespace.name
