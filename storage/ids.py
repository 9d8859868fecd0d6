"""Identifiers: time-sortable generated ids and validation of caller-chosen ones."""

from __future__ import annotations

import re
import secrets
from typing import Any

from .clock import wall
from .errors import Invalid

_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")  # \Z: "$" also matches before a final newline
LONGEST_ID = 128  # ID_RE's: what is longer is no id, and is not quoted (it may be a secret given where an id goes)
_SHARE_CODE = "sessiond1"  # sync/sharecode.py PREFIX (storage imports nothing of sync)
NOT_QUOTED = "not quoted here: whoever sees a code can read its session"


def share_code_given(value: str) -> bool:
    """Whether `value`, given where an id goes, is a share code (no id: longer than one can be, and its prefix),
    to be named as one and quoted nowhere (unknown.no_session, check_id, the OpenAI endpoint's session header)."""
    return len(value) > LONGEST_ID and value.startswith(_SHARE_CODE)


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
    """`value`, an id given by the caller, or Invalid. What is longer than an id is not quoted (was: its first 80
    characters, a share code's given as `new --id CODE`), and a share code is named as one, with the way on."""
    if isinstance(value, str) and share_code_given(value):
        raise Invalid(
            f"{what}: a share code was given where an id goes ({NOT_QUOTED}); to take in the session it shares,"
            " `sessiond import` with the code on standard input (it keeps the session's id)"
        )  # (api/types.py Ident's refusal, word for word)
    if not isinstance(value, str) or not ID_RE.match(value):
        got = (
            f"got {len(value)} characters"
            if isinstance(value, str) and len(value) > LONGEST_ID
            else f"got {value!r:.80}"
        )
        raise Invalid(
            f"{what} must be 1-128 characters of letters, digits, '.', '_' or '-', starting with a letter or digit"
            f" ({got})"
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
