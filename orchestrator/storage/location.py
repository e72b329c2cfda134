"""Where something is stored, parsed once: a local (or shared, mounted) path, or an object-store URI.

Pure and light (no filesystem library is imported here), so the spec can check a location while
`validate` stays fast. Only two kinds exist, and anything that looks like another scheme is refused
rather than turned into a directory name (``s3:/bucket`` would otherwise become ``./s3:/bucket``).

>>> parse_location("s3://bucket/runs/")
Location(scheme='s3', bucket='bucket', key='runs')
>>> parse_location("./checkpoints").scheme
'local'
>>> location_problem("gs://bucket/x").split(";")[0]
"the scheme 'gs://' is not served"
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SCHEMES = ("s3",)
# S3's bucket rules (3-63 characters, lower-case letters, digits, dots and hyphens).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*):(?P<rest>.*)$", re.DOTALL)
_HINT = "use a local or mounted path, or s3://bucket/prefix (any S3-compatible store)"


@dataclass(frozen=True)
class Location:
    scheme: str  # "local" or "s3"
    bucket: str = ""  # s3 only
    key: str = ""  # s3: the prefix inside the bucket, no leading or trailing "/"; local: the path

    @property
    def is_local(self) -> bool:
        return self.scheme == "local"

    @property
    def uri(self) -> str:
        if self.is_local:
            return self.key
        return f"s3://{self.bucket}/{self.key}" if self.key else f"s3://{self.bucket}"

    def child(self, *parts: str) -> Location:
        """This location with path parts appended (``parts`` are names, not paths)."""
        names = [p.strip("/") for p in parts if p.strip("/")]
        if self.is_local:
            return Location("local", key="/".join([self.key.rstrip("/") or "/", *names]).replace("//", "/"))
        return Location(self.scheme, self.bucket, "/".join(filter(None, [self.key, *names])))


class LocationError(ValueError):
    """A location the storage layer does not serve."""


def parse_location(text: str) -> Location:
    problem = location_problem(text)
    if problem:
        raise LocationError(f"{text!r}: {problem}")
    match = _SCHEME.match(text)
    if match and match["scheme"].lower() == "s3":
        bucket, _, key = match["rest"][2:].partition("/")
        return Location("s3", bucket, key.strip("/"))
    if match and match["scheme"].lower() == "file":
        return Location("local", key=match["rest"][2:])
    return Location("local", key=text)


def location_problem(text: str) -> str | None:
    """Why ``text`` is not a location the storage layer serves, or None."""
    if not text or "\x00" in text:
        return "an empty path (or one holding a NUL byte)"
    match = _SCHEME.match(text)
    if match is None or _is_windows_drive(text):
        return None  # a plain path
    scheme, rest = match["scheme"].lower(), match["rest"]
    if scheme == "file":
        return None if rest.startswith("///") else "file: URIs take an absolute path (file:///data/...)"
    if not rest.startswith("//"):
        if scheme in SCHEMES:
            return f"{scheme}:{rest} is missing a slash; write {scheme}://{rest.lstrip('/')}"
        return f"{text!r} looks like a URI with scheme {scheme!r}, which is not served; {_HINT}"
    if scheme not in SCHEMES:
        return f"the scheme '{scheme}://' is not served; {_HINT}"
    bucket = rest[2:].partition("/")[0]
    if not _BUCKET.match(bucket):
        return (
            f"{bucket!r} is not an S3 bucket name (3-63 lower-case letters, digits, '.' and '-'); "
            "write s3://bucket/prefix"
        )
    key = rest[2:].partition("/")[2]
    if any(part in (".", "..") for part in key.split("/")):
        return "an object key with '.' or '..' parts; name the prefix plainly"
    return None


def _is_windows_drive(text: str) -> bool:
    return len(text) > 1 and text[1] == ":" and text[0].isalpha() and len(text.split(":")[0]) == 1
