"""The token quota's warning levels: the one definition, which an append's event, a pull's, a change of the quota's
(storage/messages.py, applyremote.py, sessions.py) and the quota's answer (storage/context.py: its `thresholds`)
all read."""

from __future__ import annotations

import json
from typing import Any, TypeGuard

# each level from its fraction of the quota used up
WARNING_LEVELS = ((1.0, "exhausted"), (0.9, "critical"), (0.7, "warning"), (0.0, "safe"))
THRESHOLDS = {name: limit for limit, name in reversed(WARNING_LEVELS) if limit}


def is_quota(quota: Any) -> TypeGuard[int]:
    """Whether a policy's token_quota is one: none, or (written around the API's checks) one no quota could be,
    is not (its level: "safe" whatever the tokens)."""
    return isinstance(quota, int) and not isinstance(quota, bool) and quota > 0


def warning_level(used: int, quota: int | None) -> str:
    if not is_quota(quota):  # (a level of none)
        return "safe"
    frac = used / quota  # (below 0, written around the API's checks: safe too)
    return next((name for limit, name in WARNING_LEVELS if frac >= limit), "safe")


def quota_of(policy: str) -> Any:
    """A session's token_quota from its row's `policy` (JSON text), as written (is_quota says if it is one)."""
    return json.loads(policy).get("token_quota")


async def quota_level(tx: Any, sid: str) -> str:
    """The level of the session's token quota as the transaction `tx` reads it ("safe" with no quota)."""
    row = await tx.fetchone("SELECT policy, tokens_used FROM sessions WHERE id=?", (sid,))
    return warning_level(row[1], quota_of(row[0])) if row else "safe"
