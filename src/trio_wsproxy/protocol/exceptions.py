"""Exception groups, unwrapped the same way everywhere: a nursery reports one failure as
a group of one, and callers of the package want the failure itself."""

from __future__ import annotations

from collections.abc import Iterator
from typing import NoReturn


def leaves(error: BaseException) -> Iterator[BaseException]:
    """The exceptions inside ``error``, groups flattened (``error`` itself if no group)."""
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from leaves(inner)
    else:
        yield error


def first_leaf(error: BaseException) -> BaseException:
    """The first exception inside ``error`` (the failure worth naming in a log line)."""
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


def sole_error(
    group: BaseExceptionGroup[BaseException],
    ignore: tuple[type[BaseException], ...] = (),
) -> BaseException | None:
    """The one exception in ``group`` that is not an instance of ``ignore``, or None
    when there are several (or none)."""
    real = [error for error in leaves(group) if not isinstance(error, ignore)]
    return real[0] if len(real) == 1 else None


def raise_sole_error(
    group: BaseExceptionGroup[BaseException],
    ignore: tuple[type[BaseException], ...] = (),
) -> NoReturn:
    """Re-raise the one real error in ``group`` on its own (see :func:`sole_error`), so
    that ``async with`` raises what went wrong rather than a group around it. Several
    real errors stay grouped."""
    error = sole_error(group, ignore)
    if error is None:
        raise group
    context = error.__context__
    try:
        raise error
    finally:
        # Keep the error's own context rather than the group being handled.
        error.__context__ = context
        del error, context
