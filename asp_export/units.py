"""How asp prints sizes and latencies: one convention for every command and report.

- Sizes are decimal (SI): 1 kB = 1,000 bytes, 1 MB = 1,000,000 bytes, 1 GB = 10^9 bytes, as
  `ls --si` and most vendors count; JSON files keep the exact `size_bytes`.
- Latencies are milliseconds with four significant digits (0.004123 ms, 12.35 ms), so the ratio of
  two printed latencies gives back the speedup printed next to them to its two decimals.

Leaf module: imports nothing from the package (bench and check use it without TensorFlow).
"""

from __future__ import annotations

import math

SIGNIFICANT_DIGITS = 4
_SIZE_UNITS = (("GB", 1e9), ("MB", 1e6), ("kB", 1e3))


def significant(value: float, digits: int = SIGNIFICANT_DIGITS) -> str:
    """`value` with `digits` significant digits in plain notation (never exponent form).

    Example:
        >>> significant(0.0041234), significant(12.3456), significant(1234.5)
        ('0.004123', '12.35', '1234')
    """
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    text = f"{value:.{decimals}f}"
    if decimals and len(text.replace("-", "").replace(".", "").lstrip("0")) > digits:
        text = f"{value:.{decimals - 1}f}"  # rounding carried into a new digit (9.9996 -> 10.000)
    return text


def format_ms(value: float | None) -> str:
    """A latency in milliseconds for people, e.g. `0.004123 ms`; `-` when unknown."""
    return "-" if value is None else f"{significant(value)} ms"


def format_bytes(n: int | None) -> str:
    """A size in decimal units, e.g. `59.95 MB` for 59,945,661 bytes; `-` when unknown.

    Example:
        >>> format_bytes(59_945_661), format_bytes(812)
        ('59.95 MB', '812 B')
    """
    if n is None:
        return "-"
    for unit, size in _SIZE_UNITS:
        if abs(n) >= size:
            return f"{significant(n / size)} {unit}"
    return f"{int(n)} B"
