"""simonw/llm's logs.db, read on this side of the socket: its `conversations` and `responses` rows (and,
from llm 0.26, its `tool_calls` and `tool_results`) become the JSON that POST /v1/import-file takes with
format "llm" (docs/FORMATS.md), so the daemon never opens a database file it is handed a path to.
Read-only; a logs.db llm is writing is fine."""

from __future__ import annotations

import os
import sqlite3

from ..storage.fsutil import sqlite_ro_uri
from .errors import EXIT_USAGE, CliError

SQLITE_MAGIC = b"SQLite format 3\x00"
RESPONSE_COLUMNS = ("id", "model", "prompt", "system", "response", "conversation_id", "datetime_utc")
NEEDED = {"id", "prompt", "response", "conversation_id", "datetime_utc"}
CONVERSATION_COLUMNS = ("id", "name", "model")
# llm 0.26 on: a response's tool calls, and the results its prompt sent back (migrations m017, m021)
TOOL_CALL_COLUMNS = ("id", "response_id", "name", "arguments", "tool_call_id")
TOOL_RESULT_COLUMNS = ("id", "response_id", "name", "output", "tool_call_id", "exception")


def is_sqlite(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
    except (OSError, ValueError):
        return False  # reading it as JSON reports why


def _rows(con: sqlite3.Connection, path: str, table: str, columns: tuple[str, ...], order: str) -> list[dict]:
    have = {r[1] for r in con.execute(f"PRAGMA table_info({table})")}
    pick = [c for c in columns if c in have]
    out = []
    for i, row in enumerate(con.execute(f"SELECT {', '.join(pick)} FROM {table} ORDER BY {order}")):
        item = dict(zip(pick, row))
        for k, x in item.items():
            if isinstance(x, bytes):
                raise CliError(f"{path}: {table} row {i} (id {item.get('id')!r:.60}): {k} holds binary data, not text")
        out.append(item)
    return out


def read_logs_db(path: str) -> dict:
    """{"conversations": [...], "responses": [...]}, the responses in the order llm logged them."""
    if not os.path.isfile(path):
        raise CliError(f"cannot read {path}: no such file (`llm logs path` prints where llm keeps it)", EXIT_USAGE)
    try:
        con = sqlite3.connect(sqlite_ro_uri(os.path.abspath(path)), uri=True)
    except sqlite3.Error as exc:
        raise CliError(f"cannot open {path}: {exc}", EXIT_USAGE) from None
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "responses" not in tables:
            raise CliError(
                f"{path} has no responses table: it is not simonw/llm's logs.db (`llm logs path` prints where that is)",
                EXIT_USAGE,
            )
        missing = NEEDED - {r[1] for r in con.execute("PRAGMA table_info(responses)")}
        if missing:
            raise CliError(
                f"{path}: the responses table lacks {', '.join(sorted(missing))}; run `llm logs` once to let llm"
                " upgrade it, then import again",
                EXIT_USAGE,
            )
        conversations = (
            _rows(con, path, "conversations", CONVERSATION_COLUMNS, "rowid") if "conversations" in tables else []
        )
        responses = _rows(con, path, "responses", RESPONSE_COLUMNS, "datetime_utc, rowid")
        tools = {
            table: _rows(con, path, table, columns, "rowid")
            for table, columns in (("tool_calls", TOOL_CALL_COLUMNS), ("tool_results", TOOL_RESULT_COLUMNS))
            if table in tables
        }
    except sqlite3.Error as exc:
        raise CliError(f"{path} cannot be read as llm's logs.db: {exc}", EXIT_USAGE) from None
    finally:
        con.close()
    return {"conversations": conversations, "responses": responses, **tools}
