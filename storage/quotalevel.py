"""The token quota's warning levels: the one definition, which an append's event, a pull's, a change of the quota's
(storage/messages.py, applyremote.py, sessions.py) and the quota's answer (storage/context.py: its `thresholds`)
all read."""

from __future__ import annotations

import json
from typing import Any

# each level from its fraction of the quota used up
WARNING_LEVELS = ((1.0, "exhausted"), (0.9, "critical"), (0.7, "warning"), (0.0, "safe"))
THRESHOLDS = {name: limit for limit, name in reversed(WARNING_LEVELS) if limit}


def warning_level(used: int, quota: int | None) -> str:
    if not isinstance(quota, int) or isinstance(quota, bool) or quota <= 0:  # none (or, written around the API's
        return "safe"  # checks, one no quota could be: a level of none)
    frac = used / quota  # (below 0, written around the API's checks: safe too)
    return next((name for limit, name in WARNING_LEVELS if frac >= limit), "safe")


def level_of(policy: str, used: int) -> str:
    """The level of a session's token quota from its row's `policy` (JSON text) and `tokens_used`."""
    return warning_level(used, json.loads(policy).get("token_quota"))


async def quota_level(tx: Any, sid: str) -> str:
    """The level of the session's token quota as the transaction `tx` reads it ("safe" with no quota)."""
    row = await tx.fetchone("SELECT policy, tokens_used FROM sessions WHERE id=?", (sid,))
    return level_of(row[0], row[1]) if row else "safe"
