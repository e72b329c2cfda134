r"""Small text helpers for what people read: one-line errors, durations, numbers, and text made safe
to show (passwords in URIs masked, control characters escaped).

>>> format_duration(3725), format_number(None), format_number(0.123456)
('1h02m', 'n/a', '0.1235')
>>> print(printable("run \x1b[2J\x1b]0;owned\x07 \x1b[31mred\x1b[0m \u202etxt.exe"))
run \x1b[2J\x1b]0;owned\x07 red \u202etxt.exe
"""

from __future__ import annotations

import re
from typing import TextIO

from orchestrator.masking import mask_uri_passwords

# Colours (SGR) only change how text looks: dropped. Every other control character (escape
# sequences that move the cursor, clear the screen, set the title or the clipboard; carriage returns
# that overwrite a line) and the invisible bidirectional marks that reorder text are escaped.
_COLOUR = re.compile(r"\x1b\[[0-9;]*m")
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (its type name when it has none), at most `limit`."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:limit]


_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit|Warning)\b:?.*$")


def error_summary(text: str, limit: int = 1000) -> str:
    r"""An error for a person: a message that quotes tracebacks (Ray's worker errors do) becomes its
    first line plus the last exception line of each traceback; any other message is kept as it is.

    >>> error_summary("Training failed:\nTraceback (most recent call last):\n  File x\nOSError: disk")
    'Training failed: OSError: disk'
    """
    if "Traceback (most recent call last)" not in text:
        return text[:limit]
    lines = text.strip().splitlines()
    head = lines[0].rstrip(":") + ":" if not lines[0].startswith("Traceback") else ""
    finals, in_traceback = [], False
    for line in lines:
        if line.startswith("Traceback (most recent call last)"):
            in_traceback = True
        elif in_traceback and _EXCEPTION_LINE.match(line):
            in_traceback = False
            if line not in finals:
                finals.append(line)
    return " ".join(filter(None, [head, "; ".join(finals[-3:])]))[:limit]


def format_duration(seconds: float) -> str:
    """`42s`, `3m05s`, `1h02m`."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def format_number(value: float | None, spec: str = ".4f") -> str:
    """A float for a table or a summary line; `n/a` for a missing one."""
    return "n/a" if value is None else format(value, spec)


__all__ = [
    "PrintableStream",
    "first_line",
    "format_duration",
    "format_number",
    "mask_uri_passwords",
    "printable",
]


def printable(text: str) -> str:
    """``text`` safe to show on a terminal: newlines and tabs kept, colours dropped, every other
    control or bidirectional character written as an escape (``\\x1b``, ``\\u202e``)."""
    return _UNSAFE.sub(_escape, _COLOUR.sub("", text))


def encodable(text: str, encoding: str | None) -> str:
    """``text`` with what ``encoding`` cannot hold written as escapes (``\\xe9``, ``\\U0001f3c3``):
    an ASCII terminal (PYTHONIOENCODING=ascii, LANG=C) or a lone surrogate never ends a command."""
    if not encoding:
        return text
    try:
        text.encode(encoding)
    except UnicodeEncodeError:
        return text.encode(encoding, "backslashreplace").decode(encoding)
    except LookupError:  # an encoding Python does not know: leave it to the stream
        return text
    return text


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


class PrintableStream:
    """A text stream that writes ``printable`` text: what the command line prints (names, logs and
    errors that come from files, MLflow or a cluster) cannot drive the terminal. ``unescaped`` is
    the stream itself, for this tool's own terminal control (the progress bar)."""

    def __init__(self, stream: TextIO):
        self.unescaped = stream

    def write(self, text: str) -> int:
        self.unescaped.write(encodable(printable(text), getattr(self.unescaped, "encoding", None)))
        return len(text)

    def __getattr__(self, name: str):
        return getattr(self.unescaped, name)
