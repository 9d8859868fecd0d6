"""The database's migrations from 30 on (storage/migrations.py lists them all, in order: MIGRATIONS). A migration once
on main is never edited: a change is a new one."""

from __future__ import annotations

from . import contextcount, pulledpolicy

# (migration 35, frozen with it) by field `k`: whether the message's extra holds it as a pull drops it
# (storage/pulledextra.py). Those removed from the text (json_remove), the others kept as their text stands (was: the
# row built again from json_each's SQL values: a number past SQLite's integers, or a fraction of 17 digits, made
# another, than the one the peer's page signed)
_OWN_35 = ("id", "chat", "role", "content", "tokens", "created_at", "device", "seq", "lamport", "tool_calls_dropped")
_T_35 = "json_type(extra, '$.{k}')"
_COUNTED_35 = """NOT EXISTS (SELECT 1 FROM json_each(messages.extra, '$.{k}') AS c WHERE c.type = 'integer'
    AND c.value BETWEEN 0 AND 1099511627776 AND c.key IN ({fields}))"""
_DROPPED_35 = {
    **dict.fromkeys(_OWN_35, "1"),
    **{
        # (its length counted with each NUL, written \u0000 in the text, read as a space: SQLite's length() and
        # json_extract stop at a NUL; `\\u0000`, a backslash written out before u0000, so keeps its length too)
        k: f"{_T_35} <> 'text' OR length(json_extract(replace(extra, '\\u0000', '\\u0020'), '$.{k}')) > {n}"
        for k, n in (("model", 200), ("provider", 200), ("error", 2000))
    },
    "interrupted": f"{_T_35} NOT IN ('true', 'false')",
    "usage": f"{_T_35} <> 'object' OR {_COUNTED_35}".replace("{fields}", "'prompt_tokens', 'completion_tokens'"),
    "response": f"{_T_35} <> 'object' OR {_COUNTED_35}".replace("{fields}", "'first_token_ms', 'total_ms'"),
}
_DROPPED_35 = {  # (the text names it, a cheap look first)
    k: f"instr(extra, '\"{k}\"') AND {_T_35} IS NOT NULL AND ({v})".replace("{k}", k) for k, v in _DROPPED_35.items()
}
# ('$[0]': no field of an object, removes nothing)
_REMOVED_35 = ", ".join(f"CASE WHEN {v} THEN '$.{k}' ELSE '$[0]' END" for k, v in _DROPPED_35.items())
_ANY_35 = " OR ".join(f"({v})" for v in _DROPPED_35.values())
# (migration 35, frozen with it) the extra's object `k` (usage or response) holding its counts `fields` alone
_COUNT_35 = "type = 'integer' AND value BETWEEN 0 AND 1099511627776 AND key IN ({fields})"
_COUNTS_KEPT_35 = f"""UPDATE messages SET extra = json_set(extra, '$.{{k}}', (
        SELECT json_group_object(key, value) FROM json_each(messages.extra, '$.{{k}}') WHERE {_COUNT_35}
    )) WHERE CASE WHEN instr(extra, '"{{k}}"') AND json_valid(extra) AND json_type(extra, '$.{{k}}') = 'object'
        THEN EXISTS (SELECT 1 FROM json_each(messages.extra, '$.{{k}}') WHERE NOT ({_COUNT_35})) ELSE 0 END;"""

# (migration 38, frozen with it) the extra's `k` (usage or response) a text holding a JSON object: what 35 set where
# SQLite dropped the JSON subtype of its rebuilt object through a subquery (3.54.1). json(), a direct argument, carries
# the subtype on every SQLite, and every value 38 sets passes through it.
_TEXT_38 = """CASE WHEN json_type(extra, '$.{k}') = 'text' AND json_valid(json_extract(extra, '$.{k}'))
        THEN json_type(json_extract(extra, '$.{k}')) = 'object' ELSE 0 END"""
_MENDED_38 = " OR ".join(_TEXT_38.format(k=k) for k in ("usage", "response"))
_COUNTED_38 = f"EXISTS (SELECT 1 FROM json_each(messages.extra, '$.{{k}}') WHERE {_COUNT_35})"
_MEND_38 = f"""UPDATE messages SET extra = json_set(extra, '$.{{k}}', json(json_extract(extra, '$.{{k}}')))
    WHERE rowid IN (SELECT r FROM mended_38) AND {_TEXT_38};
    UPDATE messages SET extra = nullif(CASE WHEN {_COUNTED_38} THEN json_set(extra, '$.{{k}}', json((
        SELECT json_group_object(key, value) FROM json_each(messages.extra, '$.{{k}}') WHERE {_COUNT_35}
    ))) ELSE json_remove(extra, '$.{{k}}') END, '{{{{}}}}')
    WHERE rowid IN (SELECT r FROM mended_38) AND json_type(extra, '$.{{k}}') = 'object' AND (NOT {_COUNTED_38}
        OR EXISTS (SELECT 1 FROM json_each(messages.extra, '$.{{k}}') WHERE NOT ({_COUNT_35})));"""

# (migration 33, frozen with it; 38's recount too) storage/model.py CHARGE_SUM_SQL as it stands in 0.37.0, written out
_CHARGE_SUM_33 = """coalesce(sum(tokens), 0) + coalesce(sum(CASE WHEN json_valid(extra) THEN
            CASE WHEN json_type(extra, '$.usage.prompt_tokens') = 'integer'
                AND json_extract(extra, '$.usage.prompt_tokens') BETWEEN 1 AND 1099511627776
                THEN json_extract(extra, '$.usage.prompt_tokens') ELSE 0 END
            + CASE WHEN json_type(extra, '$.usage.completion_tokens') = 'integer'
                AND json_extract(extra, '$.usage.completion_tokens') BETWEEN coalesce(tokens, 0) + 1 AND 1099511627776
                THEN json_extract(extra, '$.usage.completion_tokens') - coalesce(tokens, 0) ELSE 0 END END), 0)"""

LATE: list[str] = [
    # 30: (this device's only) `sync_state.head_manifest`: the manifest its last published head names, written by the
    # push with it, that a head published again over one a store forged or rolled back names as `prev` (sync/pusher.py),
    # after a restart too (NULL: not known). `logs_seen`: the stores of a mirror a verify found holding another device's
    # log whole, by head key (storage/logsseen.py): one holding none of it later lost it, not a note (sync/verify.py).
    """
    ALTER TABLE sync_state ADD COLUMN head_manifest BLOB;
    CREATE TABLE logs_seen (
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
        store_url TEXT NOT NULL,
        head_pk BLOB NOT NULL,
        PRIMARY KEY (session_id, store_url, head_pk)
    ) WITHOUT ROWID;
    """,
    # 31: (this device's only) `sync_state.head_announce`: the announce key of the members slot the session was on when
    # its last published head was sealed, written by the push with it (sync/pusher.py). A shared session now on
    # another slot holds its head under a key from before a rekey, pushed again (sync/rekey.py Rekeyer.owes: a
    # catch-up through a chain of rekeys leaves that push to the chain's end, and a kill in between must not lose
    # it). NULL: not known (pushed before this, or a head this database did not publish): nothing owed.
    """
    ALTER TABLE sync_state ADD COLUMN head_announce BLOB;
    """,
    # 32: (this device's only) `claims_walks`: where a pull's walk down an author's older manifests for its claim of a
    # rekey notice stopped, cut short by its bound (sync/rekeywalk.py), by session and walk (storage/claimswalks.py):
    # the next pull goes on there after a restart too, not from the author's head. Dropped when the walk is done.
    """
    CREATE TABLE claims_walks (
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
        walk BLOB NOT NULL,
        cuts BLOB NOT NULL,
        PRIMARY KEY (session_id, walk)
    ) WITHOUT ROWID;
    """,
    # 33: each session's quota count (`tokens_used`) recounted from its messages, as 0.37.0 charges them
    # (storage/model.py charge, CHARGE_SUM_SQL: a model's answer its tokens and its prompt's, and, where the provider
    # billed more completion tokens than the answer's own, several answers asked (OpenAI's `n`) and one recorded,
    # those). A 0.36.0 device charged such an answer, pulled from a 0.37.0 one, its own tokens alone, and kept that
    # count: its quota under what was billed and every other device's, for good. (CHARGE_SUM_SQL as it stands in
    # 0.37.0, written out: a migration is never edited, the code's may be.)
    f"""
    UPDATE sessions SET tokens_used = (
        SELECT {_CHARGE_SUM_33}
        FROM messages WHERE session_id = sessions.id
    );
    """,
    # 34: the tokens a fork says it copied (`provenance.copied_tokens`, which the statistics of several sessions
    # subtract, so that its source's history is counted once, storage/stats.py) recounted as migration 33 counts the
    # quota, where 0.36.0 counted them: a copied model's answer its tokens and its prompt's alone, not the completion
    # tokens billed past its own (several answers asked, one recorded). Such a fork's quota use held them since
    # migration 33, its copied tokens did not, and `stats` counted them twice. Only a fork whose source is here and
    # whose count is 0.36.0's for the source's messages up to its fork point (storage/copies.py fork: each chat's, by
    # (lamport, device, seq)), where the two counts differ: anything else is left as it was (a count made since, or
    # not made of those messages).
    """
    CREATE TEMP TABLE fork_recount AS
    SELECT s.id AS id, json_extract(s.provenance, '$.copied_tokens') AS copied,
        coalesce(sum(m.tokens), 0) + coalesce(sum(CASE WHEN json_valid(m.extra)
            AND json_type(m.extra, '$.usage.prompt_tokens') = 'integer'
            AND json_extract(m.extra, '$.usage.prompt_tokens') BETWEEN 1 AND 1099511627776
            THEN json_extract(m.extra, '$.usage.prompt_tokens') ELSE 0 END), 0) AS then_count,
        coalesce(sum(m.tokens), 0) + coalesce(sum(CASE WHEN json_valid(m.extra) THEN
            CASE WHEN json_type(m.extra, '$.usage.prompt_tokens') = 'integer'
                AND json_extract(m.extra, '$.usage.prompt_tokens') BETWEEN 1 AND 1099511627776
                THEN json_extract(m.extra, '$.usage.prompt_tokens') ELSE 0 END
            + CASE WHEN json_type(m.extra, '$.usage.completion_tokens') = 'integer'
                AND json_extract(m.extra, '$.usage.completion_tokens')
                    BETWEEN coalesce(m.tokens, 0) + 1 AND 1099511627776
                THEN json_extract(m.extra, '$.usage.completion_tokens') - coalesce(m.tokens, 0) ELSE 0 END END), 0)
            AS now_count
    FROM sessions s
    JOIN messages p ON p.session_id = json_extract(s.provenance, '$.session') AND p.session_id <> s.id
        AND p.device_id = substr(json_extract(s.provenance, '$.message'), 1,
            instr(json_extract(s.provenance, '$.message'), '-') - 1)
        AND p.seq = CAST(substr(json_extract(s.provenance, '$.message'),
            instr(json_extract(s.provenance, '$.message'), '-') + 1) AS INTEGER)
    JOIN messages m ON m.session_id = p.session_id
        AND (m.lamport, m.device_id, m.seq) <= (p.lamport, p.device_id, p.seq)
    WHERE s.provenance IS NOT NULL AND json_valid(s.provenance) AND json_extract(s.provenance, '$.kind') = 'fork'
        AND json_type(s.provenance, '$.copied_tokens') = 'integer' AND json_type(s.provenance, '$.message') = 'text'
    GROUP BY s.id;
    UPDATE sessions SET provenance = json_set(provenance, '$.copied_tokens',
        (SELECT now_count FROM fork_recount f WHERE f.id = sessions.id))
    WHERE id IN (SELECT id FROM fork_recount WHERE copied = then_count AND then_count <> now_count);
    DROP TABLE fork_recount;
    """,
    # 35: the extra fields of the message rows a pull stored before it checked them, as a pull keeps them now
    # (storage/pulledextra.py): those naming one of the message's own (0.38.0 drops them at the pull, the rows of pulls
    # before kept them: a message with two contents in its row, which a frozen log built again from the rows carries
    # on), an answer's `tool_calls_dropped`, and answer fields the API would not take (0.39.0 drops them: `export`
    # wrote them into a file `import-file` refused); of `usage` and `response`, the counts kept alone. A row holding
    # none of them is not written. (pulledextra.py as it stands in 0.39.0, written out: a migration is never edited.)
    f"""
    UPDATE messages SET extra = nullif(json_remove(extra, {_REMOVED_35}), '{{}}')
    WHERE CASE WHEN json_valid(extra) AND json_type(extra) = 'object' THEN {_ANY_35} ELSE 0 END;
    {_COUNTS_KEPT_35.format(k="usage", fields="'prompt_tokens', 'completion_tokens'")}
    {_COUNTS_KEPT_35.format(k="response", fields="'first_token_ms', 'total_ms'")}
    """,
    # 36: a message's tokens in its chat's context where they are not its quota's, `extra.context_tokens` (an answer an
    # OpenAI-endpoint app went on from, of several asked, recorded with `tokens` 0: billed with its request), read by
    # the triggers of each chat's active tokens, made again (storage/contextcount.py)
    contextcount.MIGRATION,
    # 37: (this device's only, never synced) `openai_choices`: the other answers of the OpenAI endpoint's latest request
    # for several (`n`) of each chat, by their texts' digests beside the digest of the answer recorded
    # (storage/openaichoices.py): an app going on from one of them is not charged it again, after a restart too (they
    # were kept in the daemon's memory). A session's rows go with it. (IF NOT EXISTS: the tests that set a database
    # of this schema back to an older version to migrate it again keep their tables.)
    """
    CREATE TABLE IF NOT EXISTS openai_choices (
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
        chat_id TEXT NOT NULL,
        recorded BLOB NOT NULL,
        other BLOB NOT NULL,
        PRIMARY KEY (session_id, chat_id, other)
    );
    """,
    # 38: what migration 35 (0.39.0) wrote where SQLite drops a JSON function's subtype through a subquery (3.54.1, as a
    # user's Python may bring): the counts kept of a `usage` or `response`, rebuilt as an object passed to json_set
    # through a subquery, were set as a string holding its text (`"usage": "{\"completion_tokens\":3}"`): its tokens
    # out of the quota's recount at the next pull and of the chat's statistics, `verify` finding the row unlike the
    # peer's page, `import-file` refusing its export. Such a field (a text that is a JSON object: 35 left no other
    # text there, a pull keeps none) is made that object again, then kept as a pull keeps it (storage/pulledextra.py:
    # its counts alone, none: the field dropped, nothing left: no extra); the quota of the sessions holding such a row
    # recounted as a pull recounts it (33's sum: 0.37.0's CHARGE_SUM_SQL). A home SQLite did not so damage (3.40 to
    # 3.54.0) holds no such row: nothing is written. Written so that no value passes a subquery without json().
    f"""
    CREATE TEMP TABLE mended_38 AS SELECT rowid AS r, session_id AS s FROM messages
    WHERE CASE WHEN (instr(extra, '"usage"') OR instr(extra, '"response"')) AND json_valid(extra)
        AND json_type(extra) = 'object' THEN {_MENDED_38} ELSE 0 END;
    {_MEND_38.format(k="usage", fields="'prompt_tokens', 'completion_tokens'")}
    {_MEND_38.format(k="response", fields="'first_token_ms', 'total_ms'")}
    UPDATE sessions SET tokens_used = (SELECT {_CHARGE_SUM_33}
        FROM messages WHERE session_id = sessions.id)
    WHERE id IN (SELECT s FROM mended_38);
    DROP TABLE mended_38;
    """,
    # 39: (this device's only, never synced) `openai_made`: the sessions OpenAI-endpoint requests made whose ids their
    # apps were not given yet, with the lamports of the request's messages (storage/openaimade.py): a start after a kill
    # -9 deletes those that hold nothing else, as the request would have had its model failed it (openai_cut.drop_made),
    # so that the SDK's retry makes the one session holding the question. A session's row goes with it. (IF NOT EXISTS:
    # the tests that set a database of this schema back to an older version to migrate it again keep their tables.)
    """
    CREATE TABLE IF NOT EXISTS openai_made (
        session_id TEXT PRIMARY KEY REFERENCES sessions(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
        first_lamport INTEGER NOT NULL,
        last_lamport INTEGER NOT NULL
    );
    """,
    # 40: a session's or a chat's policy as another device's operations gave it, kept as the API takes it (a value it
    # would not take failed every append here): the rows of earlier pulls (storage/pulledpolicy.py)
    pulledpolicy.MIGRATION,
]
