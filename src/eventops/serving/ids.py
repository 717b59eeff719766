"""Prediction ids: UUIDv7 (RFC 9562), so ids sort by the time they were made.

The layout is 48 bits of Unix milliseconds, the version, a 12-bit counter and 62 random bits.
Within one millisecond the counter goes up by one per id (it starts at a random point below
2048, leaving room), so the ids of one process stay strictly increasing even for a 1,000-row
request; when the counter runs out the timestamp is moved forward by a millisecond, as RFC 9562
allows. Ids from several processes interleave by time and never collide (62 random bits).

They are not secrets: feedback is authorised by the token, not by knowing an id.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

_COUNTER_MAX = 0xFFF
_VERSION_7 = 0x7000
_VARIANT = 0x8000_0000_0000_0000
_RANDOM_62 = 0x3FFF_FFFF_FFFF_FFFF


class PredictionIds:
    """A thread-safe source of increasing UUIDv7 strings."""

    def __init__(self, clock: Callable[[], int] | None = None) -> None:
        self._lock = threading.Lock()
        self._last_ms = 0
        self._counter = 0
        self._random = random.Random()
        self._clock = clock or time.time_ns

    def new(self, count: int = 1) -> list[str]:
        """`count` new ids, in increasing order."""
        out: list[str] = []
        getbits = self._random.getrandbits
        with self._lock:
            now_ms = self._clock() // 1_000_000
            if now_ms > self._last_ms:
                self._last_ms, self._counter = now_ms, getbits(11)
            for _ in range(count):
                self._counter += 1
                if self._counter > _COUNTER_MAX:
                    self._last_ms, self._counter = self._last_ms + 1, 0
                high = (self._last_ms << 16) | _VERSION_7 | self._counter
                low = _VARIANT | getbits(62)
                text = f"{high:016x}{low:016x}"
                out.append(f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}")
        return out


_DEFAULT = PredictionIds()


def new_prediction_ids(count: int = 1) -> list[str]:
    """`count` new prediction ids from the process's shared source."""
    return _DEFAULT.new(count)


__all__ = ["PredictionIds", "new_prediction_ids"]
