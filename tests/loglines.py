"""Log records awaited as they come (instead of polled for)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import trio


class LogLines(logging.Handler):
    """Log records as they come, to await a line instead of polling for what it reports."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []
        self._grew = trio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self._grew.set()
        self._grew = trio.Event()

    def count(self, text: str) -> int:
        return sum(text in record.getMessage() for record in self.records)

    async def wait_for(self, text: str, count: int = 1, within: float = 15) -> None:
        """Wait until ``count`` records say ``text``."""
        with trio.fail_after(within):
            while self.count(text) < count:
                await self._grew.wait()


@contextmanager
def log_lines(name: str) -> Iterator[LogLines]:
    """What the logger ``name`` logs at INFO and above while the block runs."""
    logger = logging.getLogger(name)
    lines, level = LogLines(), logger.level
    logger.addHandler(lines)
    logger.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        logger.removeHandler(lines)
        logger.setLevel(level)
