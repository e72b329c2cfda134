r"""The one place that hides secrets in what is shown or stored: the values `${env:...}` references
resolved to, passwords inside URIs, and params whose name says secret. Everything else calls it
(``RunSpec.redact`` and friends delegate here).

A URI's credentials are found by a scan, not a backtracking pattern, so a 256 KiB string costs one
pass over it (a pattern like ``[a-z][a-z0-9+.-]*://[^\s:/@]*:[^\s]*@`` retries from every position
and takes minutes on such a string).

>>> mask_uri_passwords("postgresql://me:pw@db:5432/mlflow and http://u:p/q@h")
'postgresql://me:***@db:5432/mlflow and http://u:***@h'
>>> mask_uri_passwords("http://me:${env:MLFLOW_PASSWORD}@mlflow:5000")
'http://me:${env:MLFLOW_PASSWORD}@mlflow:5000'
>>> has_literal_password("http://me:${env:PW}@host"), has_literal_password("http://me:pw@host")
(False, True)
>>> split_uri_credentials("https://me:p%40ss@mlflow:5000/")
('https://mlflow:5000/', 'me', 'p@ss')
>>> mask_values("user s3cr3t-value in s3cr3t-value-2", ["s3cr3t-value", "s3cr3t-value-2"])
'user *** in ***'
>>> put_references("at s3cr3t-value", {"PW": "s3cr3t-value"})
'at ${env:PW}'
>>> loggable_params({"tracking.uri": "http://me:pw@h", "kubernetes.api_token": "x", "n": 1})
{'tracking.uri': 'http://me:***@h', 'n': 1}
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

MASK = "***"
_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-")
_USER_END = frozenset(":/@")
_TOKEN = re.compile(r"\S+")
_ENV_REFERENCE = re.compile(r"\$\{env:[A-Za-z_][A-Za-z0-9_]*\}")
# names of params and settings whose value is a secret whatever it looks like
_SECRET_NAME = re.compile(r"(password|passwd|secret|token|api_?key|credential)", re.IGNORECASE)


@dataclass(frozen=True)
class UriCredentials:
    """Where ``scheme://user:password@`` sits in a text: ``text[start:at + 1]``."""

    start: int  # the scheme's first letter
    user: int  # the user's first character (after `://`)
    password: int  # the password's first character (after `user:`)
    at: int  # the `@` that ends the password: the last one before whitespace

    def password_of(self, text: str) -> str:
        return text[self.password : self.at]


def uri_credentials(text: str) -> Iterator[UriCredentials]:
    """Every ``scheme://user:password@`` in ``text``, left to right. The password runs to the last
    `@` before whitespace, so one holding `/`, `:` or `@` is still found whole (a URI would have to
    percent-encode those; people do not). One pass: each character is looked at a bounded number of
    times."""
    for token in _TOKEN.finditer(text):
        found = _in_token(text, token.start(), token.end())
        if found is not None:
            yield found


def _in_token(text: str, begin: int, end: int) -> UriCredentials | None:
    """The first credentials in ``text[begin:end]`` (no whitespace there). A password runs to the
    token's last `@`, so a token holds at most one."""
    last_at = text.rfind("@", begin, end)
    if last_at < 0:
        return None
    pos = begin
    while True:
        sep = text.find("://", pos, end)
        if sep < 0:
            return None
        pos = sep + 3  # `://` holds no scheme character: the next scheme starts after it
        start = sep
        while start > begin and text[start - 1] in _SCHEME_CHARS:
            start -= 1
        while start < sep and not (text[start].isascii() and text[start].isalpha()):
            start += 1
        if start == sep:
            continue
        colon = pos
        while colon < end and text[colon] not in _USER_END:
            colon += 1
        if colon >= end or text[colon] != ":":
            continue
        if last_at <= colon:
            return None  # every later candidate's password starts further right still
        return UriCredentials(start, pos, colon + 1, last_at)


def split_uri_credentials(uri: str) -> tuple[str, str | None, str | None]:
    """An http(s) URI without its ``user:password@``, and the user and password (percent-decoded,
    as HTTP clients read them); a URI without both is returned as it is, with ``None, None``."""
    if not uri.lower().startswith(("http://", "https://")):
        return uri, None, None
    found = next(uri_credentials(uri), None)
    if found is None or found.start != 0 or found.password == found.at:
        return uri, None, None
    user, password = uri[found.user : found.password - 1], found.password_of(uri)
    return uri[: found.user] + uri[found.at + 1 :], unquote(user), unquote(password)


def is_reference_only(password: str) -> bool:
    """A password written as `${env:NAME}` references only: no secret in the text itself."""
    return bool(password) and not _ENV_REFERENCE.sub("", password)


def mask_uri_passwords(text: str) -> str:
    """Every `scheme://user:password@` in ``text`` with the password replaced by `***` (a password
    written as `${env:NAME}` references is no secret and stays)."""
    parts, done = [], 0
    for found in uri_credentials(text):
        if is_reference_only(found.password_of(text)):
            continue
        parts += [text[done : found.password], MASK]
        done = found.at
    return "".join(parts) + text[done:] if parts else text


def has_literal_password(text: str) -> bool:
    """`scheme://user:password@host` where the password is not made of `${env:...}` references."""
    return any(_ENV_REFERENCE.sub("", found.password_of(text)) for found in uri_credentials(text))


def mask_values(text: str, values: Iterable[str]) -> str:
    """``text`` with every one of the secret ``values`` replaced by `***`, the longest first (a
    secret that contains another is masked whole)."""
    for value in sorted((v for v in values if v), key=len, reverse=True):
        text = text.replace(value, MASK)
    return text


def put_references(text: str, secrets: dict[str, str]) -> str:
    """``text`` with each resolved secret (``{NAME: value}``) put back as its `${env:NAME}`
    reference, the longest value first."""
    for name, value in sorted(secrets.items(), key=lambda item: len(item[1]), reverse=True):
        if value:
            text = text.replace(value, f"${{env:{name}}}")
    return text


def mask_data(tree: Any, mask: Callable[[str], str]) -> Any:
    """``mask`` applied to every string (keys too) of JSON-like data, before it is serialised: JSON
    escapes quotes, backslashes and non-ASCII, so masking the serialised text could miss a secret."""
    if isinstance(tree, dict):
        return {mask(str(k)): mask_data(v, mask) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [mask_data(item, mask) for item in tree]
    return mask(tree) if isinstance(tree, str) else tree


def is_secret_name(name: str) -> bool:
    """A setting or param whose name says its value is secret (password, token, api_key, ...)."""
    return bool(_SECRET_NAME.search(name))


def loggable_params(params: dict[str, Any]) -> dict[str, Any]:
    """Params fit to store: those whose name says secret dropped, passwords in URIs masked."""
    return {
        k: mask_uri_passwords(v) if isinstance(v, str) else v
        for k, v in params.items()
        if not is_secret_name(k)
    }
