"""Small text helpers for what people read: one-line errors, durations, numbers.

>>> format_duration(3725), format_number(None), format_number(0.123456)
('1h02m', 'n/a', '0.1235')
"""

from __future__ import annotations


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (its type name when it has none), at most `limit`."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:limit]


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
