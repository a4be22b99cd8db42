"""Durations as Ollama reads them: Go ``time.ParseDuration`` strings and numbers of seconds.

``keep_alive`` and ``OLLAMA_KEEP_ALIVE`` / ``OLLAMA_LOAD_TIMEOUT`` all go through here.
A duration is a ``float`` of seconds; ``math.inf`` stands for "forever" (any negative value).
"""

from __future__ import annotations

import math
import re

__all__ = ["FOREVER", "format_duration", "parse_go_duration", "parse_keep_alive"]

FOREVER = math.inf
"""Seconds of a keep-alive that never expires (Ollama: any negative duration)."""

# Go's time.ParseDuration units, in seconds (https://pkg.go.dev/time#ParseDuration).
_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_TERM = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_go_duration(text: str) -> float:
    """Parse a Go duration string into seconds.

    >>> parse_go_duration("5m")
    300.0
    >>> parse_go_duration("1h30m")
    5400.0
    >>> parse_go_duration("-1m")
    -60.0
    >>> parse_go_duration("0")
    0.0
    >>> parse_go_duration("1.5s")
    1.5
    >>> parse_go_duration("3600")
    Traceback (most recent call last):
    ...
    ValueError: time: missing unit in duration "3600"
    """
    s = text.strip()
    original = s
    sign = 1.0
    if s[:1] in "+-" and s:
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise ValueError(f'time: invalid duration "{original}"')
    total = 0.0
    pos = 0
    while pos < len(s):
        m = _TERM.match(s, pos)
        if m is None:
            if re.fullmatch(r"[\d.]+", s[pos:]):
                raise ValueError(f'time: missing unit in duration "{original}"')
            raise ValueError(f'time: invalid duration "{original}"')
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    return sign * total


_MAX_SECONDS = (2**63 - 1) / 1e9
"""Go's largest ``time.Duration`` (about 292 years)."""


def parse_keep_alive(value: str | float | int | None, *, numbers_as_strings: bool = False) -> float | None:
    """Parse a keep-alive value into seconds (``None`` if absent, ``FOREVER`` if negative).

    Numbers are seconds. Strings are Go durations; with ``numbers_as_strings`` (the environment
    variable form) a bare integer string is also taken as seconds, as Ollama's envconfig does.

    >>> parse_keep_alive("10m")
    600.0
    >>> parse_keep_alive(0)
    0.0
    >>> parse_keep_alive(-1)
    inf
    >>> parse_keep_alive("3600", numbers_as_strings=True)
    3600.0
    >>> parse_keep_alive(None) is None
    True
    >>> parse_keep_alive(1e308)  # past Go's largest duration
    inf
    >>> parse_keep_alive("99999999999h")
    Traceback (most recent call last):
    ...
    ValueError: time: invalid duration "99999999999h"
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"invalid keep_alive {value!r}: use a duration such as 5m or a number of seconds")
    if isinstance(value, (int, float)):
        seconds = float(value)
        if seconds > _MAX_SECONDS:  # past Go's largest Duration Ollama's conversion wraps negative: forever
            return FOREVER
    else:
        text = value.strip().strip("\"'")
        try:
            seconds = parse_go_duration(text)
        except ValueError:
            if numbers_as_strings and re.fullmatch(r"[-+]?\d+", text):
                seconds = float(int(text))
            else:
                raise
        if abs(seconds) > _MAX_SECONDS:  # Go's ParseDuration refuses what overflows a Duration
            raise ValueError(f'time: invalid duration "{text}"')
    if math.isnan(seconds):
        raise ValueError("invalid keep_alive: NaN")
    return FOREVER if seconds < 0 else seconds


def format_duration(seconds: float) -> str:
    """Format seconds the way Go prints a ``time.Duration`` (used in ``--verbose`` output).

    >>> format_duration(1.2345678)
    '1.2345678s'
    >>> format_duration(0.0123)
    '12.3ms'
    >>> format_duration(0.0000421)
    '42.1µs'
    >>> format_duration(75.5)
    '1m15.5s'
    >>> format_duration(0)
    '0s'
    """
    if seconds == 0:
        return "0s"
    if math.isinf(seconds):
        return "forever"
    ns = round(seconds * 1e9)
    if abs(ns) < 1000:
        return f"{ns}ns"
    if abs(ns) < 1_000_000:
        return _trim(ns / 1e3) + "µs"
    if abs(ns) < 1_000_000_000:
        return _trim(ns / 1e6) + "ms"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    hours, rem = divmod(ns, 3600 * 10**9)
    minutes, rem = divmod(rem, 60 * 10**9)
    secs = _trim(rem / 1e9) + "s"
    out = ""
    if hours:
        out += f"{hours}h"
    if hours or minutes:
        out += f"{minutes}m"
    return sign + out + secs


def _trim(value: float) -> str:
    text = f"{value:.9f}".rstrip("0").rstrip(".")
    return text or "0"
