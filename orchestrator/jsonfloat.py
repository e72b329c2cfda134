"""Floats in JSON without losing NaN and infinities.

Strict JSON has no NaN or Infinity, and ``null`` already means "no value" in the report. So a
non-finite float is written as one of the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` (the
spellings of JavaScript and of Python's ``float()``), and read back to the same float:

>>> encode_float(float("inf")), decode_float("-Infinity")
('Infinity', -inf)
"""

from __future__ import annotations

import math

NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def encode_float(value: float | None) -> float | str | None:
    if value is None or math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def decode_float(value: float | int | str | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return NON_FINITE[value]
        except KeyError:
            raise ValueError(
                f"not a float: {value!r} (expected a number, NaN, Infinity or -Infinity)"
            ) from None
    return float(value)


def encode_floats(values: list) -> list:
    # the common case, all finite, without a function call per value
    return [v if v is None or -math.inf < v < math.inf else encode_float(v) for v in values]
