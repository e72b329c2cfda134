"""Kubernetes resource quantities: read the ones a spec holds, write the ones a manifest needs.

>>> to_bytes("1.5Gi"), memory(3 * 2**30), cpu(0.5), cpu(4.0)
(1610612736, '3Gi', '500m', '4')
"""

from __future__ import annotations

import math
import re
from decimal import Decimal

_SUFFIX = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
GIB = 2**30
MIB = 2**20


def to_bytes(text: str) -> int:
    """A plain, decimal-suffixed or binary-suffixed quantity as a whole number (rounded up)."""
    match = _QUANTITY.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a quantity such as 512Mi or 8Gi")
    number, suffix = match.groups()
    return math.ceil(Decimal(number) * _SUFFIX[suffix or ""])


def memory(n_bytes: int) -> str:
    """Bytes in the largest binary unit that writes them exactly (Gi, Mi, Ki or plain)."""
    for suffix in ("Gi", "Mi", "Ki"):
        if n_bytes % _SUFFIX[suffix] == 0:
            return f"{n_bytes // _SUFFIX[suffix]}{suffix}"
    return str(n_bytes)


def cpu(cores: float) -> str:
    """CPU cores as whole cores when they are whole, else millicores (rounded up)."""
    millis = math.ceil(round(cores * 1000, 6))
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def amount(value: float) -> str:
    """A custom resource amount (Ray's own resources may be fractional)."""
    return cpu(value)


def ceil_gib(n_bytes: float) -> int:
    return math.ceil(n_bytes / GIB) * GIB
