"""Deterministic pseudo-randomness from hashes: no global random state anywhere.

Every random choice of the simulated model is derived from a SHA-256 of the things it
depends on (the request's seed, its messages, a purpose tag), so the same request always
gets the same answer and a different seed or prompt gets a different one.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from typing import Any


def digest(*parts: Any) -> bytes:
    """SHA-256 of the canonical JSON of `parts`."""
    payload = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(payload.encode("utf-8")).digest()


def derive_seed(*parts: Any) -> int:
    """A 64-bit integer seed derived from `parts`."""
    return int.from_bytes(digest(*parts)[:8], "big")


def uniform(*parts: Any) -> float:
    """A number in (0, 1) derived from `parts`."""
    return (derive_seed(*parts) + 0.5) / 2.0**64


def normal(*parts: Any) -> float:
    """A standard normal number derived from `parts` (Box-Muller)."""
    u1 = uniform("normal-1", *parts)
    u2 = uniform("normal-2", *parts)
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


def rng(*parts: Any) -> random.Random:
    """A private `random.Random` seeded from `parts`; never the module-level generator."""
    return random.Random(derive_seed(*parts))
