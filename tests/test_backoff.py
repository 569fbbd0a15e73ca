"""One backoff and one exception-group helper for the whole package (protocol/)."""

from __future__ import annotations

import pytest

from trio_wsproxy.protocol.backoff import Backoff, backoff_delay
from trio_wsproxy.protocol.exceptions import first_leaf, leaves, raise_sole_error, sole_error


def test_backoff_doubles_up_to_its_longest() -> None:
    delays = [backoff_delay(n, first=0.1, longest=1.0) for n in range(6)]
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])


def test_jitter_shortens_by_at_most_its_fraction() -> None:
    assert backoff_delay(3, first=1, longest=100, jitter=0.5, rand=lambda: 1.0) == 4.0
    assert backoff_delay(3, first=1, longest=100, jitter=0.5, rand=lambda: 0.0) == 8.0


def test_huge_attempt_numbers_do_not_overflow() -> None:
    assert backoff_delay(10**6, first=0.5, longest=30) == 30


def test_a_backoff_counts_failures_and_starts_over_after_a_success() -> None:
    backoff = Backoff(0.1, 5.0)
    assert [backoff.next_delay() for _ in range(3)] == pytest.approx([0.1, 0.2, 0.4])
    backoff.reset()
    assert backoff.next_delay() == pytest.approx(0.1)


def test_leaves_flatten_nested_groups() -> None:
    a, b, c = ValueError("a"), KeyError("b"), OSError("c")
    group = BaseExceptionGroup("outer", [a, BaseExceptionGroup("inner", [b, c])])
    assert list(leaves(group)) == [a, b, c]
    assert first_leaf(group) is a
    assert first_leaf(a) is a


def test_the_sole_real_error_is_raised_on_its_own() -> None:
    error = ValueError("the one")
    group = BaseExceptionGroup("g", [KeyboardInterrupt(), BaseExceptionGroup("i", [error])])
    assert sole_error(group, ignore=(KeyboardInterrupt,)) is error
    with pytest.raises(ValueError, match="the one"):
        raise_sole_error(group, ignore=(KeyboardInterrupt,))


def test_several_real_errors_stay_grouped() -> None:
    group = ExceptionGroup("g", [ValueError(), KeyError()])
    assert sole_error(group) is None
    with pytest.raises(ExceptionGroup):
        raise_sole_error(group)
