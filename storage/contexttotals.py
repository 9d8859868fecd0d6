"""What an append to a chat with a context budget reads of the chat, in O(1) whatever its length (schema
migration 22): its active tokens, kept by trigger in `chat_tokens`, and its fixed tokens (system prompt and
initial messages), cached in memory under a stamp that triggers change with the texts (`text_gens`).

Why triggers: the active total depends on every message of the chat and on its compaction cutoff, which many
writers change (appends, operations from other devices in any order and before the cut, compaction and its undo
by op, deletes and their cascades, imports, clones and forks). A trigger runs in the statement that makes the
change, whichever path runs it, in its transaction (a rollback takes the total back with it): no writer can
forget it. The invariant, after every statement: `chat_tokens.active` of (session, chat) is the sum of
coalesce(tokens, 0) of the chat's messages that storage/context.py `active` returns (after the chat's cut, or
system), a missing row meaning 0. A message in or out adds or takes its tokens if it counts; a change of the
cut (the chat's row made, changed or deleted) counts the chat again, once per compaction, not per append.

Why a cache for the fixed tokens, not a column: they are counted with the daemon's estimator (config.toml's
token_estimator, Python), which SQL cannot run and which may differ from one start to the next. The stamp is a
random 64-bit value that triggers set on every change of the session's texts or of one of its chats' prompts
(and on the session's creation): a rolled-back change or a session deleted and made again with the same id
gets a stamp of its own, so a value cached for a stamp is the value of those texts (a stamp repeats with
probability 2^-64), where a counter would come back to a value a rolled-back transaction had cached."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def _set_aside(m: str, c: str) -> str:
    """SQL: message row `m` is at or before chat row `c`'s cut (its `compacted`: a JSON array [lamport, device,
    seq]), as storage/context.py `active` leaves it out (a key not after the cut, NULL compared too). No cut (NULL,
    or not an array) sets nothing aside; the CASEs keep json_type and json_extract from text that is not JSON."""
    cut = f"{c}.compacted"
    after = (
        f"({m}.lamport, {m}.device_id, {m}.seq) >"
        f" (json_extract({cut}, '$[0]'), json_extract({cut}, '$[1]'), json_extract({cut}, '$[2]'))"
    )
    return f"CASE WHEN json_valid({cut}) THEN CASE WHEN json_type({cut}) = 'array' THEN ({after}) IS NOT TRUE END END"


def _counts(m: str) -> str:
    """SQL: message row `m` counts in its chat's context as the chat's row stands (no row: no cut): one lookup."""
    return (
        f"({m}.role = 'system' OR NOT EXISTS (SELECT 1 FROM chats c WHERE c.session_id={m}.session_id"
        f" AND c.id={m}.chat_id AND {_set_aside(m, 'c')}))"
    )


counts_in_context = _counts  # (storage/chatstats.py's triggers, migration 25, keep the active tokens as _add did)


def _add(m: str, sign: str = "") -> str:
    """Add message row `m`'s tokens to its chat's total (`sign` "-": take them) if it counts. An upsert either
    way: by the invariant a row is there whenever a counted message with tokens is (taking from none: never)."""
    return (
        f"INSERT INTO chat_tokens(session_id, chat_id, active) SELECT {m}.session_id, {m}.chat_id,"
        f" {sign}coalesce({m}.tokens, 0) WHERE coalesce({m}.tokens, 0) <> 0 AND {_counts(m)}"
        " ON CONFLICT(session_id, chat_id) DO UPDATE SET active = active + excluded.active;"
    )


def _recount(c: str, tokens: Callable[[str], str] = lambda m: f"coalesce({m}.tokens, 0)") -> str:
    """Count chat `c` (a chats row, old or new) again from its messages, under its row as it stands now: each
    message's `tokens(row)` (SQL; migration 22's: its tokens, migration 36's: context_tokens)."""
    return (
        f"INSERT INTO chat_tokens(session_id, chat_id, active) SELECT {c}.session_id, {c}.id,"
        f" (SELECT coalesce(sum({tokens('m')}), 0) FROM messages m"
        f" WHERE m.session_id={c}.session_id AND m.chat_id={c}.id AND {_counts('m')})"
        " WHERE true ON CONFLICT(session_id, chat_id) DO UPDATE SET active = excluded.active;"
    )


recount_chat = _recount  # (migration 36's triggers, storage/contextcount.py)


def _restamp(sid: str) -> str:
    return (
        f"INSERT INTO text_gens(session_id, gen) VALUES ({sid}, random())"
        " ON CONFLICT(session_id) DO UPDATE SET gen = excluded.gen;"
    )


def _stamps() -> str:
    """The triggers that stamp a session's texts anew on each change of its row of `session_texts` or of one of
    its chats' rows of `chat_prompts` (both the old row's session and the new's, on an update)."""
    out = []
    for table, name in (("session_texts", "session"), ("chat_prompts", "prompt")):
        for event, rows in (("INSERT", ("new",)), ("UPDATE", ("old", "new")), ("DELETE", ("old",))):
            body = "\n    ".join(_restamp(f"{r}.session_id") for r in rows)
            out.append(
                f"CREATE TRIGGER text_gens_{name}_{event.lower()} AFTER {event} ON {table} BEGIN\n    {body}\nEND;"
            )
    return "\n".join(out) + "\n"


_STAMPS = _stamps()


# the columns of a message whose update moves it in or out of a chat's counts (migration 36's: its extra too)
MOVED = "session_id, chat_id, device_id, seq, lamport, role, tokens"


def message_triggers(add: Callable[[str, str], str], moved: str = MOVED) -> str:
    """The triggers of a message in, out or moved (an update of the columns `moved`), each running `add(row,
    sign)` (sign "-": take it) on the message's row: migration 22's with `_add`, migration 25's
    (storage/chatstats.py) with its count too, migration 36's (storage/contextcount.py) with context_tokens."""
    return f"""CREATE TRIGGER chat_tokens_message_insert AFTER INSERT ON messages BEGIN
    {add("new", "")}
END;
CREATE TRIGGER chat_tokens_message_delete AFTER DELETE ON messages BEGIN
    {add("old", "-")}
END;
CREATE TRIGGER chat_tokens_message_update
AFTER UPDATE OF {moved} ON messages BEGIN
    {add("old", "-")}
    {add("new", "")}
END;
"""


def chat_triggers(recount: Callable[[str], str]) -> str:
    """The triggers of a chat's row made, its cut changed or the row deleted, each running `recount(row)` (the chat
    counted again): migration 22's with `_recount`, migration 36's (storage/contextcount.py) with context_tokens."""
    return f"""CREATE TRIGGER chat_tokens_chat_insert AFTER INSERT ON chats BEGIN
    {recount("new")}
END;
CREATE TRIGGER chat_tokens_chat_update AFTER UPDATE OF session_id, id, compacted ON chats
WHEN old.compacted IS NOT new.compacted OR old.session_id IS NOT new.session_id OR old.id IS NOT new.id BEGIN
    {recount("old")}
    {recount("new")}
END;
CREATE TRIGGER chat_tokens_chat_delete AFTER DELETE ON chats BEGIN
    {recount("old")}
END;
"""


_TRIGGERS = message_triggers(_add) + chat_triggers(_recount) + _STAMPS

# 22: see the module's docstring. MIGRATION is the SQL migration 22 ran on every home: the helpers above are part of
# it, so a change to what they make is a new migration (dropping and making the triggers again), never an edit here.
# Neither table has a foreign key: a cascade's triggers write them while the
# session's row is going (and sessions' own trigger, which runs after its cascades, takes its rows out).
MIGRATION = f"""
CREATE TABLE chat_tokens (
    session_id TEXT NOT NULL,
    chat_id TEXT NOT NULL,
    active INTEGER NOT NULL,
    PRIMARY KEY (session_id, chat_id)
) WITHOUT ROWID;
INSERT INTO chat_tokens(session_id, chat_id, active)
    SELECT m.session_id, m.chat_id, sum(coalesce(m.tokens, 0)) FROM messages m WHERE {_counts("m")}
    GROUP BY m.session_id, m.chat_id;
CREATE TABLE text_gens (session_id TEXT PRIMARY KEY, gen INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO text_gens(session_id, gen) SELECT id, random() FROM sessions;
{_TRIGGERS}CREATE TRIGGER context_totals_session_delete AFTER DELETE ON sessions BEGIN
    DELETE FROM chat_tokens WHERE session_id=old.id;
    DELETE FROM text_gens WHERE session_id=old.id;
END;
"""

# The one read an append's budget check makes of them: the chat's active tokens and the session's texts' stamp.
TOTALS_READ = (
    "SELECT (SELECT active FROM chat_tokens WHERE session_id=?1 AND chat_id=?2),"
    " (SELECT gen FROM text_gens WHERE session_id=?1)"
)
CACHE_MAX = 4096  # (session, chat) fixed counts kept; past it the cache starts again (each costs one recount)


class FixedCache:
    """The fixed tokens of chats, by (session, chat), each with the stamp of the texts it was counted from
    and the estimator that counted it: a value is used only for the same stamp and estimator."""

    def __init__(self) -> None:
        self._values: dict[tuple[str, str], tuple[Any, Any, int]] = {}

    def get(self, sid: str, chat: str, gen: int | None, estimate: Any) -> int | None:
        got = self._values.get((sid, chat))
        if got is None or got[0] != gen or got[1] is not estimate:
            return None
        return got[2]

    def put(self, sid: str, chat: str, gen: int | None, estimate: Any, tokens: int) -> None:
        if len(self._values) >= CACHE_MAX:
            self._values.clear()
        self._values[(sid, chat)] = (gen, estimate, tokens)
