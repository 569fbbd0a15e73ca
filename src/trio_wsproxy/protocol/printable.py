"""Client-supplied text made safe for a log line.

A member chooses its id, its group's name, its close reason (up to 123 bytes, newlines
allowed) and the path it asks for. Written into a text log as they are, a newline and a
made-up ``ERROR ... Traceback`` would read as the relay's own line. Every such value
goes through :func:`printable` before it reaches a log, in the text and the JSON format
alike (so both say the same).
"""

from __future__ import annotations


def printable(text: str) -> str:
    """``text`` with every character that ``str.isprintable`` refuses (controls, line
    and paragraph separators, format characters, spaces other than the plain one)
    escaped the way Python's ``repr`` writes it (``\\n``, ``\\x1b``, ``\\u2028``), and
    backslashes doubled, so that an escape cannot be mistaken for what a client typed."""
    if text.isprintable() and "\\" not in text:
        return text  # the common case: nothing to do
    return "".join(_escape(char) for char in text)


def _escape(char: str) -> str:
    if char == "\\":
        return "\\\\"
    if char.isprintable():
        return char
    return repr(char)[1:-1]
