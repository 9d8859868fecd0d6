"""Identifiers: time-sortable generated ids and validation of caller-chosen ones."""

from __future__ import annotations

import re
import secrets
from typing import Any

from .clock import wall
from .errors import Invalid

_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")  # \Z: "$" also matches before a final newline


def new_id() -> str:
    """26 characters, Crockford base32: 48 bits of milliseconds then 80 random bits (ULID layout),
    so ids sort by creation time."""
    n = (int(wall() * 1000) << 80) | secrets.randbits(80)
    out = []
    for _ in range(26):
        n, r = divmod(n, 32)
        out.append(_CROCKFORD[r])
    return "".join(reversed(out))


def check_id(value: object, what: str = "id") -> str:
    if not isinstance(value, str) or not ID_RE.match(value):
        raise Invalid(
            f"{what} must be 1-128 characters of letters, digits, '.', '_' or '-', "
            f"starting with a letter or digit (got {value!r:.80})"
        )
    return value


def new_device_id() -> str:
    return secrets.token_hex(8)


async def case_twin(q: Any, sid: str) -> str | None:
    """A session here whose id differs from `sid` only in case, if any: the two would share key files
    (keys/sessions/<id>.key) on a case-insensitive disk (macOS, Windows), so no second one is made or
    imported."""
    twin = await held_twin(q, sid)
    return None if twin is None else twin[0]


async def held_twin(q: Any, sid: str) -> tuple[str, bool] | None:
    """case_twin's session and whether it is being imported (hidden, 404 by its id, until its import ends: an
    import that fails frees its id, so the refusal is to wait, not to delete it)."""
    row = await q.fetchone("SELECT id, importing FROM sessions WHERE id=? COLLATE NOCASE AND id<>?", (sid, sid))
    return None if row is None else (row[0], bool(row[1]))
