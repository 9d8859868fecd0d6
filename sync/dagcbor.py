"""Deterministic DAG-CBOR, as the manifests use it (docs/FORMATS.md, "Manifests").

Rules: map keys are strings, sorted by length and then bytewise; integers in their shortest form;
floats always as 64-bit (cbor2's canonical mode writes short floats, which DAG-CBOR forbids, so we
use its plain mode on maps we have put in order ourselves); no NaN or Infinity; links are tag 42 over
the binary CID with a leading 0x00. Decoding is strict: bytes that do not re-encode to themselves
are rejected, so every value has exactly one encoding.
"""

from __future__ import annotations

import math
from typing import Any

import cbor2


class DagCborError(ValueError):
    pass


# The integers a DAG-CBOR value can hold: major type 0 up to 2^64-1, major type 1 down to -2^64.
INT_MIN, INT_MAX = -(1 << 64), (1 << 64) - 1


class Link(bytes):
    """A CID (binary form) to be written as a tag-42 link."""


def _key(k: str) -> tuple[int, bytes]:
    b = k.encode()
    return (len(b), b)


def canon(value: Any) -> Any:
    """A copy of `value` whose maps are in DAG-CBOR key order, checked for what DAG-CBOR forbids."""
    if isinstance(value, dict):
        for k in value:
            if not isinstance(k, str):
                raise DagCborError(f"map keys must be strings, not {type(k).__name__}")
        return {k: canon(value[k]) for k in sorted(value, key=_key)}
    if isinstance(value, (list, tuple)):
        return [canon(v) for v in value]
    if isinstance(value, Link):
        return cbor2.CBORTag(42, b"\x00" + bytes(value))
    if isinstance(value, float):
        if not math.isfinite(value):
            raise DagCborError("NaN and Infinity are not allowed")
        return value
    if value is None or isinstance(value, (bool, int, str, bytes)):
        if isinstance(value, int) and not isinstance(value, bool) and not INT_MIN <= value <= INT_MAX:
            raise DagCborError("integer out of the 64-bit range")
        return value
    raise DagCborError(f"cannot encode {type(value).__name__} in DAG-CBOR")


def encode(value: Any) -> bytes:
    return cbor2.dumps(canon(value))


def encode_ordered(value: Any) -> bytes:
    """Encode a value whose maps are already in DAG-CBOR order (a hot path: no copy is made)."""
    return cbor2.dumps(value)


def head(major: int, n: int) -> bytes:
    """A CBOR head in its shortest form (as DAG-CBOR requires): an array's (major 4) or a map's (5)
    before items encoded apart and put together."""
    if n < 24:
        return bytes([major << 5 | n])
    for extra, width in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < 1 << (8 * width):
            return bytes([major << 5 | extra]) + n.to_bytes(width, "big")
    raise ValueError("CBOR lengths stop at 2^64")


def _tag_hook(*args):
    # cbor2 5.x calls tag_hook(decoder, tag); 6.x calls tag_hook(tag, immutable)
    tag = next(a for a in args if isinstance(a, cbor2.CBORTag))
    if tag.tag != 42 or not isinstance(tag.value, bytes) or not tag.value.startswith(b"\x00"):
        raise DagCborError(f"tag {tag.tag} is not allowed (only tag 42 links)")
    return Link(tag.value[1:])


def decode(data: bytes, *, strict: bool = True) -> Any:
    try:
        value = cbor2.loads(data, tag_hook=_tag_hook)
    except DagCborError:
        raise
    except Exception as exc:  # cbor2 raises several types for malformed input
        raise DagCborError(f"not valid CBOR: {exc}") from None
    if strict:
        try:
            again = encode(value)
        except DagCborError as exc:
            raise DagCborError(f"not valid DAG-CBOR: {exc}") from None
        if again != data:
            raise DagCborError("not deterministic DAG-CBOR (keys out of order, non-shortest or short-float encoding)")
    return value
