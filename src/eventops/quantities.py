"""Durations ("10m", "7d") and sizes ("512MB") as users write them in settings and URLs."""

from __future__ import annotations

import re

from eventops.errors import ConfigError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)


def parse_duration(value: str | float | int, *, field: str) -> float:
    """Seconds from a number or a string with a unit (ms, s, m, h, d, w)."""
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(value)
        if not match:
            raise ConfigError(
                f"{value!r} is not a duration; write a number of seconds or e.g. 500ms, 10m, 7d",
                field=field,
                rule="duration",
            )
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2) or "s"]
    if seconds < 0:
        raise ConfigError("must not be negative", field=field, rule="duration")
    return seconds


def parse_size(value: str | int, *, field: str) -> int:
    """Bytes from a number or a string with a unit (KB, MB, GB, TB; KiB... are powers of 2)."""
    if isinstance(value, int):
        size = value
    else:
        match = _SIZE.match(value)
        if not match:
            raise ConfigError(
                f"{value!r} is not a size; write bytes or e.g. 512MB, 2GiB",
                field=field,
                rule="size",
            )
        unit = (match.group(2) or "").lower()
        base = 1024 if "i" in unit else 1000
        power = "bkmgt".index(unit[0]) if unit else 0
        size = int(float(match.group(1)) * base**power)
    if size < 0:
        raise ConfigError("must not be negative", field=field, rule="size")
    return size
