"""A group's views: its members by encoding, rebuilt only after a change, without the
members a distributed group holds back."""

from __future__ import annotations

import attrs

from trio_wsproxy.protocol.encoding import PLAIN, V1, Encoding
from trio_wsproxy.relay.views import Views


@attrs.frozen(eq=False)
class Member:
    id: str
    encoding: Encoding


def test_audiences_group_members_by_encoding_and_follow_each_change() -> None:
    a, b, c = Member("a", PLAIN), Member("b", V1), Member("c", PLAIN)
    members = {"a": a, "b": b}
    views = Views(members)
    assert views.audiences() == ((PLAIN, (a,)), (V1, (b,)))
    assert views.audiences() is views.audiences()  # (built once, until a change)
    members["c"] = c
    assert views.audiences() == ((PLAIN, (a,)), (V1, (b,)))  # (not told yet)
    views.refresh()
    assert views.audiences() == ((PLAIN, (a, c)), (V1, (b,)))
    assert views.sessions() == (a, b, c)


def test_members_held_back_are_in_the_sessions_but_in_no_audience() -> None:
    a, b = Member("a", V1), Member("b", V1)
    views = Views({"a": a, "b": b})
    catching = {b}
    views.held_back = catching
    views.refresh()
    assert views.audiences() == ((V1, (a,)),)
    assert views.sessions() == (a, b)
    catching.discard(b)
    views.refresh()
    assert views.audiences() == ((V1, (a, b)),)


def test_an_empty_group_has_no_audience() -> None:
    views: Views[Member] = Views({})
    assert views.audiences() == ()
    views.refresh()
    assert views.audiences() == () and views.sessions() == ()
