"""A message's tokens in its chat's context where they are not those its quota is charged (schema migration 36):
its extra field `context_tokens` (docs/FORMATS.md §4).

One message so far: the answer an OpenAI-endpoint app went on from, of several it asked for (OpenAI's `n`,
daemon/openai_choices.py). The provider billed it with the request that asked for it, so it is recorded with
`tokens` 0, what every device's count of the quota reads (storage/model.py charge, CHARGE_SUM_SQL, on every version
since 0.36: never changed here); but it is in the chat's context as much as any other message, and counted there
as 0 the context budget compacted the chat late and let through a request the provider refused for its length. It
carries its context tokens (the daemon's estimate) in `context_tokens`, which the context's counts read in place
of its tokens: the triggers of the chat's active tokens (storage/contexttotals.py, made again here), a compaction's
cut (storage/context.py active) and an append's budget check (`of`).

A count is a whole number from 0 to 2^40 (PROMPT_TOKENS_MAX, as an answer's usage holds); anything else is no
count, and the message's tokens stand (a pull drops it, storage/pulledextra.py; a session file's is refused,
daemon/sessionfile.py). An older sessiond keeps the field as another device's unknown extra field: it reads the
message, charges its quota as before, counts it as 0 in the context as before, and carries the field on."""

from __future__ import annotations

from .chatstats import count_message
from .contexttotals import MOVED, chat_triggers, counts_in_context, message_triggers, recount_chat
from .pulledextra import CONTEXT_TOKENS as FIELD
from .pulledextra import COUNT_MAX, is_count


def of(m: dict) -> int:
    """Message `m`'s tokens in its chat's context: its context_tokens, else its tokens (none: 0)."""
    n = m.get(FIELD)
    tokens: int = n if isinstance(n, int) and is_count(n) else m.get("tokens") or 0
    return tokens


def _is_count(e: str) -> str:
    """SQL: extra JSON text `e` (valid) holds a context_tokens that is a count."""
    return f"json_type({e}, '$.{FIELD}') = 'integer' AND json_extract({e}, '$.{FIELD}') BETWEEN 0 AND {COUNT_MAX}"


def _named(e: str) -> str:
    """SQL: extra text `e` names the field, and is JSON (the cheap look first)."""
    return f"instr({e}, '\"{FIELD}\"') AND json_valid({e})"


def sql(m: str) -> str:
    """SQL: `of` of message row `m` (its extra JSON text: read only when it names the field)."""
    e = f"{m}.extra"
    value = f"json_extract({e}, '$.{FIELD}')"
    return f"(CASE WHEN {_named(e)} AND {_is_count(e)} THEN {value} ELSE coalesce({m}.tokens, 0) END)"


def _not_a_count(e: str) -> str:
    there = f"json_type({e}) = 'object' AND json_type({e}, '$.{FIELD}') IS NOT NULL"
    return f"{_named(e)} AND {there} AND NOT ({_is_count(e)})"


def _count(m: str, sign: str) -> str:
    return count_message(m, sign, sql(m))


def _recount(c: str) -> str:
    return recount_chat(c, sql)


# 36: see the module's docstring. A context_tokens that is no count, which an older sessiond's pull kept as it came,
# taken out of its row (as a pull drops it now: `export` would write it into a file `import-file` refuses); the
# triggers of migrations 22 and 25 that count a chat's active tokens made again counting `sql` (and an update of a
# message's extra too); the chats holding a message that names the field counted again. As with contexttotals.py's,
# a change to what these helpers make is a new migration, never an edit here.
MIGRATION = f"""
UPDATE messages SET extra = nullif(json_remove(extra, '$.{FIELD}'), '{{}}') WHERE {_not_a_count("extra")};
DROP TRIGGER chat_tokens_message_insert;
DROP TRIGGER chat_tokens_message_delete;
DROP TRIGGER chat_tokens_message_update;
{message_triggers(_count, MOVED + ", extra")}DROP TRIGGER chat_tokens_chat_insert;
DROP TRIGGER chat_tokens_chat_update;
DROP TRIGGER chat_tokens_chat_delete;
{chat_triggers(_recount)}UPDATE chat_tokens SET active = (SELECT coalesce(sum({sql("m")}), 0)
    FROM messages m WHERE m.session_id=chat_tokens.session_id AND m.chat_id=chat_tokens.chat_id
    AND {counts_in_context("m")})
WHERE EXISTS (SELECT 1 FROM messages m WHERE m.session_id=chat_tokens.session_id AND m.chat_id=chat_tokens.chat_id
    AND instr(m.extra, '"{FIELD}"'));
"""
