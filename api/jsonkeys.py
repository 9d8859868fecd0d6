"""JSON read as the API reads it: an object that gives a key twice is refused, not read as its last value
(json.loads keeps the last silently, and JSON readers differ on which one counts). The daemon reads every
request body so (daemon/routes/common.py); the CLI reads the JSON given to its options and its files so
(cli/inputs.py). Standard library only."""

from __future__ import annotations

import json
import math
from typing import Any


class DuplicateKey(ValueError):
    """A JSON object giving a key twice."""

    def __init__(self, key: str):
        super().__init__(key)
        self.key = key

    def message(self, where: str = "request body", verb: str = "send") -> str:
        """The refusal, of `where` the JSON came from (an app is told to send each key once, a user to give)."""
        return (
            f"{where} gives the key {self.key[:100]!r} twice in one object: {verb} each key once (JSON"
            f" readers differ on which one counts)"
        )


def unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    """json.loads' object_pairs_hook: the object, unless it gives a key twice (DuplicateKey naming it)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise DuplicateKey(k)
            seen.add(k)
    return obj


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON number (JSON has no NaN or Infinity)")


def _finite(text: str) -> float:
    x = float(text)
    if math.isinf(x):  # (1e999: read as Infinity, and written back so, which no JSON holds)
        raise ValueError(f"{text[:40]} is past the range of a JSON number (a double's, as JSON readers take it)")
    return x


def loads(raw: str | bytes, *, strict_numbers: bool = False) -> Any:
    """json.loads, refusing an object that gives a key twice (DuplicateKey); `strict_numbers`: NaN and Infinity,
    which json.loads takes and no JSON holds, too (a ValueError), and a number past a double's range (1e999, which
    json.loads reads as Infinity), for a body passed on to another server."""
    if strict_numbers:
        return json.loads(raw, object_pairs_hook=unique_keys, parse_constant=_not_json, parse_float=_finite)
    return json.loads(raw, object_pairs_hook=unique_keys)
