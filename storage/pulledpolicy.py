"""A session's or a chat's policy as its operations give it, kept as the API takes it (schema migration 40 for the
rows of earlier pulls).

Another device's operation is stored as it came (`ops`), and was materialised so too: its policy's values went into
the session's and the chat's rows whatever they were. sessiond's API takes each a number in a range (api/sessions.py
POLICY_RANGES, `auto_compact` true or false), and every reader here counts on it: a text `token_quota`,
`max_context_tokens` or `context_margin` (which no sessiond writes: a forged or broken writer's) failed every append to
the session here with a TypeError, an internal error to the app, and a policy that is no object failed every read of
it. Such a value is dropped as the row is written, as an answer's field the API would not take is
(storage/pulledextra.py); the rest is kept, a newer sessiond's keys among them. The operation itself is kept as it
came (the log, its checkpoints' settings, are its writer's)."""

from __future__ import annotations

from typing import Any

_YEARS_10 = 10 * 365 * 86400  # (api/types.py YEARS_10: storage/ imports nothing of api/)
# key -> (least, most, whole): as api/sessions.py POLICY_RANGES
RANGES = {
    "token_quota": (1, 1 << 50, True),
    "checkpoint_interval": (1, 1 << 40, True),
    "idle_timeout": (1, _YEARS_10, False),
    "max_context_tokens": (1, 1 << 40, True),
    "context_margin": (0.05, 1, False),
}


_DROP = object()


def _taken(k: str, v: Any) -> Any:
    """`v` as the API takes it for policy key `k`, _DROP if it would not take it."""
    if v is None or (k not in RANGES and k != "auto_compact"):  # (none: as not set, every reader's; a newer key's)
        return v
    if k == "auto_compact":
        return v if type(v) is bool else _DROP
    lo, hi, whole = RANGES[k]
    if whole and type(v) is float and v.is_integer():  # (the API's whole number: 1.0 is 1, api/types.py Number)
        v = int(v)
    ok = type(v) is int if whole else type(v) in (int, float)
    return v if ok and lo <= v <= hi else _DROP  # (NaN compares false)


def kept(policy: Any) -> dict:
    """`policy` (an operation's) as its row keeps it: an object, its values the API would not take dropped (a whole
    number written as a fraction, which the API takes, kept as the number)."""
    if not isinstance(policy, dict):
        return {}
    return {k: x for k, x in ((k, _taken(k, v)) for k, v in policy.items()) if x is not _DROP}


def _dropped(col: str) -> dict[str, str]:
    """SQL, by key: policy text `col` (a JSON object) holds a value of the key that `kept` drops."""
    out = {}
    for k, (lo, hi, whole) in RANGES.items():
        t, n = f"json_type({col}, '$.{k}')", f"json_extract({col}, '$.{k}')"
        whole_sql = f"({t} = 'integer' OR ({t} = 'real' AND {n} = CAST({n} AS INTEGER)))"  # (100.0: 100, as the API)
        number = whole_sql if whole else f"{t} IN ('integer', 'real')"
        out[k] = f"{t} <> 'null' AND NOT ({number} AND {n} BETWEEN {lo} AND {hi})"
    out["auto_compact"] = f"json_type({col}, '$.auto_compact') NOT IN ('null', 'true', 'false')"
    return out


def _mend(table: str) -> str:
    dropped = _dropped("policy")
    paths = ", ".join(f"CASE WHEN {v} THEN '$.{k}' ELSE '$[0]' END" for k, v in dropped.items())
    anyone = " OR ".join(f"({v})" for v in dropped.values())
    wholes = "".join(
        f"""UPDATE {table} SET policy = json_set(policy, '$.{k}', CAST(json_extract(policy, '$.{k}') AS INTEGER))
WHERE json_valid(policy) AND json_type(policy) = 'object' AND json_type(policy, '$.{k}') = 'real';
"""
        for k, (_lo, _hi, whole) in RANGES.items()
        if whole
    )
    return f"""UPDATE {table} SET policy = CASE WHEN json_valid(policy) AND json_type(policy) = 'object'
    THEN json_remove(policy, {paths}) ELSE '{{}}' END
WHERE policy IS NOT NULL AND CASE WHEN json_valid(policy) AND json_type(policy) = 'object' THEN {anyone} ELSE 1 END;
{wholes}"""


# 40: see the module's docstring. The rows of earlier pulls: a policy that is no object made {}, each value `kept`
# drops taken out ('$[0]', no field of an object, removes nothing), a whole number written as a fraction that is left
# (in range) made the number. A row no such value reached is not written (a
# chat's policy NULL, none, left so).
# (Frozen with it: a change to what these helpers make is a new migration.)
MIGRATION = _mend("sessions") + _mend("chats")
