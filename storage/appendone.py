"""An append of one message as one statement: `INSERT INTO append_one(...)`, a view of the writer's own (TEMP:
in its connection's memory, nothing in the database file) whose INSTEAD OF trigger writes the message, its
log's last seq, the session's clock and tokens and, with an Idempotency-Key, the key's record
(storage/messages.py). One statement instead of four: each is a hop through the sqlite3 module, and a
statement is atomic (one that fails changes nothing), so an append whose only write it is needs no SAVEPOINT
in a shared commit (storage/groupcommit.py, Transaction.execute_alone). The same writes as the four
statements Messages.append makes for a batch (MESSAGE_COLUMNS' INSERT, LOG_UPSERT, SESSION_UPDATE,
KEY_INSERT)."""

from __future__ import annotations

from .model import PUSHED_COLUMNS

# The message's columns, then the session's last_activity, the tokens charged to it, the key, the request's
# digest, the key's result ("FIRST_SEQ COUNT") and its stamp (storage/clock.py `steady`: what its keeping is
# judged by)
_COLUMNS = [c.strip() for c in PUSHED_COLUMNS.split(",")] + ["activity", "charge", "key", "request", "result", "kept"]
APPEND_ONE = f"INSERT INTO append_one({', '.join(_COLUMNS)}) VALUES ({','.join('?' * len(_COLUMNS))})"
APPEND_ONE_SQL = f"""
CREATE TEMP VIEW append_one AS SELECT {", ".join(f"NULL AS {c}" for c in _COLUMNS)};
CREATE TEMP TRIGGER append_one_insert INSTEAD OF INSERT ON append_one BEGIN
    INSERT INTO messages({PUSHED_COLUMNS})
        VALUES ({", ".join(f"new.{c.strip()}" for c in PUSHED_COLUMNS.split(","))});
    INSERT INTO logs(session_id, device_id, last_seq) VALUES (new.session_id, new.device_id, new.seq)
        ON CONFLICT(session_id, device_id) DO UPDATE SET last_seq=excluded.last_seq;
    UPDATE sessions SET lamport=new.lamport, last_activity=new.activity, tokens_used=tokens_used+new.charge
        WHERE id=new.session_id;
    INSERT INTO idempotency(session_id, key, request, result, created_at)
        SELECT new.session_id, new.key, new.request, new.result, new.kept WHERE new.key IS NOT NULL;
END;
"""
