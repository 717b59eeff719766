"""Which model answers a request: the primary, or (canary) the challenger for a share of them.

* ``single``: the primary answers everything; the challenger alias is not loaded.
* ``canary``: each request is answered by the challenger with probability
  ``canary_percent / 100`` (independently per request, so a client retrying gets a fresh
  draw), by the primary otherwise. Until the challenger alias exists, the primary answers all.
* ``shadow``: the primary answers everything; the challenger also scores every request after
  the answer has gone (off the request path), and its predictions are captured with role
  ``shadow`` and the same prediction ids, so the two can be compared row by row.

A seed makes the split reproducible (tests); the response header ``x-model-role`` says which
one answered.
"""

from __future__ import annotations

import random
from typing import Literal

Role = Literal["primary", "canary"]


class TrafficRouter:
    def __init__(self, mode: str = "single", canary_percent: float = 0.0, seed: int | None = None):
        if not 0 <= canary_percent <= 100:
            raise ValueError("canary_percent must be between 0 and 100")
        self.mode = mode
        self.share = canary_percent / 100.0 if mode == "canary" else 0.0
        self._random = random.Random(seed)

    def choose(self, challenger_ready: bool) -> Role:
        if self.share > 0 and challenger_ready and self._random.random() < self.share:
            return "canary"
        return "primary"

    @property
    def shadows(self) -> bool:
        return self.mode == "shadow"


__all__ = ["Role", "TrafficRouter"]
