"""What the search index holds of a message beside its content, as SQL for migration 17's triggers
(storage/migrations.py): the text of its tool calls, kept in the row's `tool_text`, and the step that takes a
message's old text out of the index. Part of migrations' SQL, pinned by digest (tests/test_migrations_frozen.py):
never edited; a change is a new migration with SQL of its own."""

from __future__ import annotations

# (migration 17's triggers) a message's old content and tool text out of the index, unless it is pending
UNINDEX_OLD = (
    "INSERT INTO messages_fts(messages_fts, rowid, content, tool_text)"
    " SELECT 'delete', old.rowid, old.content, old.tool_text"
    " WHERE NOT EXISTS (SELECT 1 FROM messages_fts_pending WHERE id=old.rowid);"
)


def tool_text(m: str) -> str:
    """The SQL of the text the search index holds of message row `m`'s tool calls (migration 17): each call's
    function name and arguments (JSON text), a line each; null when it has none. Only what is certain of
    `extra` is read (valid JSON, a list of calls, calls that are objects). Kept in the row by trigger: FTS5
    cannot read it through a view, as its own statements refuse virtual tables (json_each), which broke
    its 'rebuild' and 'integrity-check'."""
    return (
        f"CASE WHEN instr({m}.extra, '\"tool_calls\"') AND json_valid({m}.extra)"
        f" AND json_type({m}.extra, '$.tool_calls') = 'array' THEN"
        " (SELECT group_concat(coalesce(json_extract(t.value, '$.function.name'), '') || ' '"
        " || coalesce(json_extract(t.value, '$.function.arguments'), ''), char(10))"
        f" FROM json_each({m}.extra, '$.tool_calls') AS t WHERE t.type = 'object') END"
    )
