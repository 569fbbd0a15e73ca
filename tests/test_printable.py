"""Client-supplied text is escaped before it reaches a log (protocol/printable.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from trio_wsproxy.protocol.printable import printable


def test_ordinary_text_is_left_alone() -> None:
    assert printable("alice in lobby-1, é ü 日本") == "alice in lobby-1, é ü 日本"


def test_controls_and_separators_are_escaped_as_python_writes_them() -> None:
    assert printable("bye\nERROR forged") == "bye\\nERROR forged"
    assert printable("\r\t\x1b[31m\x7f") == "\\r\\t\\x1b[31m\\x7f"
    assert printable("a\u2028b\u2029c\u0085d") == "a\\u2028b\\u2029c\\x85d"
    assert printable("bidi\u202eflip") == "bidi\\u202eflip"


def test_a_backslash_is_doubled_so_an_escape_cannot_be_typed() -> None:
    assert printable("looks\\nlike a newline") == "looks\\\\nlike a newline"


@given(st.text())
def test_the_result_is_always_one_printable_line(text: str) -> None:
    escaped = printable(text)
    assert escaped.isprintable()
    assert "\n" not in escaped and "\r" not in escaped


@given(st.text())
def test_different_texts_stay_different(text: str) -> None:
    assert printable(text) != printable(text + "\n")
