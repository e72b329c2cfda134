"""Small text helpers for what people read: one-line errors, durations, numbers, and text made safe
to show (passwords in URIs masked).

>>> format_duration(3725), format_number(None), format_number(0.123456)
('1h02m', 'n/a', '0.1235')
>>> mask_uri_passwords("postgresql://me:pw@db:5432/mlflow and http://u:p/q@h")
'postgresql://me:***@db:5432/mlflow and http://u:***@h'
>>> mask_uri_passwords("http://me:${env:MLFLOW_PASSWORD}@mlflow:5000")
'http://me:${env:MLFLOW_PASSWORD}@mlflow:5000'
"""

from __future__ import annotations

import re

# scheme://user:password@ - the password runs to the last "@" before whitespace, so one holding "/"
# or ":" is still masked whole (a URL would have to percent-encode those, people do not).
_URI_PASSWORD = re.compile(
    r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^\s:/@]*):(?P<password>[^\s]*)@", re.IGNORECASE
)
_ENV_REFERENCES = re.compile(r"^(\$\{env:[A-Za-z_][A-Za-z0-9_]*\})+$")


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


def mask_uri_passwords(text: str) -> str:
    """Every `scheme://user:password@` in ``text`` with the password replaced by `***` (a password
    written as `${env:NAME}` references is no secret and stays)."""

    def mask(match: re.Match) -> str:
        if _ENV_REFERENCES.match(match.group("password")):
            return match.group()
        return f"{match.group('scheme')}{match.group('user')}:***@"

    return _URI_PASSWORD.sub(mask, text)
