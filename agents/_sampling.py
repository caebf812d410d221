"""``Sampling``: settings a caller imposes on every model call of one run.

A served workflow's client may ask for a ``seed``, a ``temperature`` or a
``max_tokens``; each agent of the workflow has its own, so the request's values are
applied by the run's call ledger to every call, before the call's record key is
made (a resumed run replays exactly what was sent):

* ``temperature`` replaces each call's temperature;
* ``max_tokens`` caps each call's ``max_tokens`` (a call asking fewer keeps its own);
* ``seed`` gives each call a seed of its own, derived from the request's seed and the
  call's key (stable across reruns, different between the calls of a fan-out, so a
  seeded rerun on a seeded server is identical and its samples still differ).

Example:
    >>> s = Sampling(seed=7, temperature=0.0, max_tokens=64)
    >>> body = s.apply({"messages": [], "max_tokens": 256, "temperature": 0.8}, "vote.0")
    >>> body["temperature"], body["max_tokens"], body["seed"] == s.apply({}, "vote.0")["seed"]
    (0.0, 64, True)
    >>> s.apply({}, "vote.0")["seed"] != s.apply({}, "vote.1")["seed"]
    True
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_SEED_RANGE = 2**31  # what every OpenAI-compatible server takes as a seed


@dataclass(frozen=True)
class Sampling:
    """Per-run overrides of every call's sampling settings (``None``: the agent's own)."""

    seed: int | None = None
    temperature: float | None = None
    max_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.temperature is not None and not 0 <= self.temperature <= 2:
            raise ValueError(f"temperature must be within [0, 2], got {self.temperature}")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}")

    def call_seed(self, key: str) -> int | None:
        """The seed of the call named ``key`` (``None`` without a run seed)."""
        if self.seed is None:
            return None
        return zlib.crc32(f"{self.seed}\x00{key}".encode()) % _SEED_RANGE

    def apply(self, body: Mapping[str, Any], key: str) -> dict[str, Any]:
        """``body`` with these settings applied to the call named ``key``."""
        out = dict(body)
        if self.temperature is not None:
            out["temperature"] = self.temperature
        if self.max_tokens is not None:
            own = out.get("max_tokens")
            out["max_tokens"] = self.max_tokens if not own else min(int(own), self.max_tokens)
        if self.seed is not None:
            out["seed"] = self.call_seed(key)
        return out
