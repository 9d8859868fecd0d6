"""The schema a new database is made with, at once, in one transaction (storage/schema.py
create_fresh, which `migrate` calls for a database of version 0 with nothing in it): what migrations 1 to VERSION
(storage/migrations.py) leave in an empty database, the SQL of sqlite_master in its order, and the rows they write
there. Running the migrations one by one, SQLite re-parses the schema after each statement that changes it (~30 ms of
CPU, every new home, every first start); this takes a few. A database made one way or the other is the same
(tests/test_migrations_frozen.py compares them).

WRITTEN BY tests/tools/write_freshschema.py FROM THE MIGRATIONS: never edit it by hand; run that after adding a
migration. (A VERSION behind SCHEMA_VERSION is never used: new databases are then migrated one by one.)"""
# ruff: noqa: E501

from __future__ import annotations

VERSION = 40

# sqlite_master's SQL, in its order
SCHEMA: list[str] = [
    """CREATE TABLE schema_version (version INTEGER NOT NULL)""",
    """CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)""",
    """CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        user TEXT,
        name TEXT,
        model TEXT,
        settings TEXT NOT NULL DEFAULT '{}',
        status TEXT NOT NULL DEFAULT 'active',
        current_chat TEXT,
        created_at REAL NOT NULL,
        last_activity REAL NOT NULL,
        expires_at REAL,
        lamport INTEGER NOT NULL DEFAULT 0,
        stamps TEXT NOT NULL DEFAULT '{}'
    , access TEXT NOT NULL DEFAULT 'owner', policy TEXT NOT NULL DEFAULT '{}', tokens_used INTEGER NOT NULL DEFAULT 0, provenance TEXT, importing INTEGER NOT NULL DEFAULT 0)""",
    """CREATE INDEX sessions_user ON sessions(user, id)""",
    """CREATE INDEX sessions_status ON sessions(status, id)""",
    """CREATE TABLE chats (
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
        id TEXT NOT NULL,
        name TEXT,
        model TEXT,
        settings TEXT NOT NULL DEFAULT '{}',
        created_at REAL NOT NULL,
        stamps TEXT NOT NULL DEFAULT '{}', policy TEXT NOT NULL DEFAULT '{}', compacted TEXT,
        PRIMARY KEY (session_id, id)
    ) WITHOUT ROWID""",
    """CREATE TABLE messages (
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
        chat_id TEXT NOT NULL,
        device_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        lamport INTEGER NOT NULL,
        role TEXT NOT NULL,
        content TEXT NOT NULL,
        tokens INTEGER,
        created_at REAL NOT NULL,
        extra TEXT
    , content_head BLOB, created_ms INTEGER, tool_text TEXT)""",
    """CREATE UNIQUE INDEX messages_origin ON messages(session_id, device_id, seq)""",
    """CREATE INDEX messages_order ON messages(session_id, chat_id, lamport, device_id, seq)""",
    """CREATE TABLE ops (
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
        device_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        lamport INTEGER NOT NULL,
        kind TEXT NOT NULL,
        body TEXT NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (session_id, device_id, seq)
    ) WITHOUT ROWID""",
    """CREATE TABLE logs (
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
        device_id TEXT NOT NULL,
        last_seq INTEGER NOT NULL,
        PRIMARY KEY (session_id, device_id)
    ) WITHOUT ROWID""",
    """CREATE TABLE sync_state (
        session_id TEXT PRIMARY KEY REFERENCES sessions(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
        pushed_seq INTEGER NOT NULL DEFAULT 0,
        head_rev INTEGER NOT NULL DEFAULT 0,
        tree BLOB,
        pending BLOB,
        last_error TEXT,
        last_push REAL
    , rekey_claims BLOB, head_manifest BLOB, head_announce BLOB)""",
    """CREATE TABLE remotes (
        session_id TEXT PRIMARY KEY REFERENCES sessions(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
        store_url TEXT,
        announce_pk BLOB NOT NULL,
        members_rev INTEGER NOT NULL DEFAULT 0,
        announced INTEGER NOT NULL DEFAULT 0
    , frozen BLOB)""",
    """CREATE TABLE peers (
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
        head_pk BLOB NOT NULL,
        device_id TEXT,
        rev INTEGER NOT NULL DEFAULT 0,
        applied_seq INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        PRIMARY KEY (session_id, head_pk)
    ) WITHOUT ROWID""",
    """CREATE TABLE checkpoints (
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
        device_id TEXT NOT NULL,
        number INTEGER NOT NULL,
        hash BLOB NOT NULL,
        tokens INTEGER NOT NULL,
        messages INTEGER NOT NULL,
        frontier TEXT NOT NULL,
        created_at REAL NOT NULL,
        pk BLOB NOT NULL,
        signature BLOB NOT NULL, v INTEGER, more TEXT,
        PRIMARY KEY (session_id, device_id, number)
    ) WITHOUT ROWID""",
    """CREATE TABLE idempotency (
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
        key TEXT NOT NULL,
        request TEXT NOT NULL,
        result TEXT NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (session_id, key)
    )""",
    """CREATE INDEX idempotency_age ON idempotency(session_id, created_at)""",
    """CREATE TABLE shares (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
        capability TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at INTEGER,
        protected INTEGER NOT NULL,
        store_url TEXT,
        key_fp BLOB NOT NULL
    )""",
    """CREATE INDEX shares_session ON shares(session_id, id)""",
    """CREATE TABLE released (
        store_url TEXT NOT NULL,
        hash BLOB NOT NULL,
        session_id TEXT NOT NULL,
        released_at REAL NOT NULL,
        PRIMARY KEY (store_url, hash)
    ) WITHOUT ROWID""",
    """CREATE INDEX released_age ON released(released_at)""",
    """CREATE TABLE mirror_outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        store_url TEXT NOT NULL,
        kind TEXT NOT NULL,
        key BLOB NOT NULL,
        data BLOB NOT NULL,
        rev INTEGER NOT NULL DEFAULT 0,
        UNIQUE (store_url, kind, key)
    )""",
    """CREATE INDEX mirror_outbox_order ON mirror_outbox(store_url, id)""",
    """CREATE TABLE messages_fts_pending (id INTEGER PRIMARY KEY)""",
    """CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
        INSERT INTO messages_fts_pending(id) VALUES (new.rowid);
    END""",
    """CREATE TRIGGER messages_pushed_form_update AFTER UPDATE OF content, created_at ON messages BEGIN
        UPDATE messages SET content_head = NULL, created_ms = NULL WHERE rowid = new.rowid;
    END""",
    """CREATE INDEX sessions_id_nocase ON sessions(id COLLATE NOCASE)""",
    """CREATE TABLE file_imports (
        session_id TEXT PRIMARY KEY REFERENCES sessions(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED
    )""",
    """CREATE TABLE search_purge (id INTEGER PRIMARY KEY CHECK (id = 1))""",
    """CREATE TABLE kept_records (
        pk BLOB PRIMARY KEY,
        record BLOB NOT NULL,
        put_at REAL NOT NULL
    ) WITHOUT ROWID""",
    """CREATE VIRTUAL TABLE messages_fts USING fts5(
        content, tool_text, content='messages', content_rowid='rowid', tokenize='unicode61 remove_diacritics 2'
    )""",
    """CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
        INSERT INTO messages_fts(messages_fts, rowid, content, tool_text) SELECT 'delete', old.rowid, old.content, old.tool_text WHERE NOT EXISTS (SELECT 1 FROM messages_fts_pending WHERE id=old.rowid);
        DELETE FROM messages_fts_pending WHERE id=old.rowid;
    END""",
    """CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages BEGIN
        INSERT INTO messages_fts(messages_fts, rowid, content, tool_text) SELECT 'delete', old.rowid, old.content, old.tool_text WHERE NOT EXISTS (SELECT 1 FROM messages_fts_pending WHERE id=old.rowid);
        INSERT OR IGNORE INTO messages_fts_pending(id) VALUES (new.rowid);
    END""",
    """CREATE TRIGGER messages_tool_text_insert AFTER INSERT ON messages WHEN instr(new.extra, '"tool_calls"') BEGIN
        UPDATE messages SET tool_text = CASE WHEN instr(new.extra, '"tool_calls"') AND json_valid(new.extra) AND json_type(new.extra, '$.tool_calls') = 'array' THEN (SELECT group_concat(coalesce(json_extract(t.value, '$.function.name'), '') || ' ' || coalesce(json_extract(t.value, '$.function.arguments'), ''), char(10)) FROM json_each(new.extra, '$.tool_calls') AS t WHERE t.type = 'object') END WHERE rowid = new.rowid;
    END""",
    """CREATE TRIGGER messages_tool_text_update AFTER UPDATE OF extra ON messages BEGIN
        INSERT INTO messages_fts(messages_fts, rowid, content, tool_text) SELECT 'delete', old.rowid, old.content, old.tool_text WHERE NOT EXISTS (SELECT 1 FROM messages_fts_pending WHERE id=old.rowid);
        INSERT OR IGNORE INTO messages_fts_pending(id) VALUES (new.rowid);
        UPDATE messages SET tool_text = CASE WHEN instr(new.extra, '"tool_calls"') AND json_valid(new.extra) AND json_type(new.extra, '$.tool_calls') = 'array' THEN (SELECT group_concat(coalesce(json_extract(t.value, '$.function.name'), '') || ' ' || coalesce(json_extract(t.value, '$.function.arguments'), ''), char(10)) FROM json_each(new.extra, '$.tool_calls') AS t WHERE t.type = 'object') END WHERE rowid = new.rowid;
    END""",
    """CREATE TABLE mark_ends (
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
        seq INTEGER NOT NULL,
        PRIMARY KEY (session_id, seq)
    ) WITHOUT ROWID""",
    """CREATE TABLE revocations (
        session_id TEXT PRIMARY KEY REFERENCES sessions(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
        carried INTEGER
    ) WITHOUT ROWID""",
    """CREATE TRIGGER revocations_cleared AFTER UPDATE OF access ON sessions WHEN new.access IN ('owner', 'write')
    BEGIN
        DELETE FROM revocations WHERE session_id=new.id;
    END""",
    """CREATE TABLE session_texts (
        session_id TEXT PRIMARY KEY REFERENCES sessions(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
        system_prompt TEXT,
        initial_messages TEXT NOT NULL DEFAULT '[]',
        metadata TEXT NOT NULL DEFAULT '{}',
        tags TEXT NOT NULL DEFAULT '[]',
        preferences TEXT NOT NULL DEFAULT '{}'
    )""",
    """CREATE TABLE chat_prompts (
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
        chat_id TEXT NOT NULL,
        system_prompt TEXT NOT NULL,
        PRIMARY KEY (session_id, chat_id)
    )""",
    """CREATE TABLE chat_tokens (
    session_id TEXT NOT NULL,
    chat_id TEXT NOT NULL,
    active INTEGER NOT NULL, messages INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (session_id, chat_id)
) WITHOUT ROWID""",
    """CREATE TABLE text_gens (session_id TEXT PRIMARY KEY, gen INTEGER NOT NULL) WITHOUT ROWID""",
    """CREATE TRIGGER text_gens_session_insert AFTER INSERT ON session_texts BEGIN
    INSERT INTO text_gens(session_id, gen) VALUES (new.session_id, random()) ON CONFLICT(session_id) DO UPDATE SET gen = excluded.gen;
END""",
    """CREATE TRIGGER text_gens_session_update AFTER UPDATE ON session_texts BEGIN
    INSERT INTO text_gens(session_id, gen) VALUES (old.session_id, random()) ON CONFLICT(session_id) DO UPDATE SET gen = excluded.gen;
    INSERT INTO text_gens(session_id, gen) VALUES (new.session_id, random()) ON CONFLICT(session_id) DO UPDATE SET gen = excluded.gen;
END""",
    """CREATE TRIGGER text_gens_session_delete AFTER DELETE ON session_texts BEGIN
    INSERT INTO text_gens(session_id, gen) VALUES (old.session_id, random()) ON CONFLICT(session_id) DO UPDATE SET gen = excluded.gen;
END""",
    """CREATE TRIGGER text_gens_prompt_insert AFTER INSERT ON chat_prompts BEGIN
    INSERT INTO text_gens(session_id, gen) VALUES (new.session_id, random()) ON CONFLICT(session_id) DO UPDATE SET gen = excluded.gen;
END""",
    """CREATE TRIGGER text_gens_prompt_update AFTER UPDATE ON chat_prompts BEGIN
    INSERT INTO text_gens(session_id, gen) VALUES (old.session_id, random()) ON CONFLICT(session_id) DO UPDATE SET gen = excluded.gen;
    INSERT INTO text_gens(session_id, gen) VALUES (new.session_id, random()) ON CONFLICT(session_id) DO UPDATE SET gen = excluded.gen;
END""",
    """CREATE TRIGGER text_gens_prompt_delete AFTER DELETE ON chat_prompts BEGIN
    INSERT INTO text_gens(session_id, gen) VALUES (old.session_id, random()) ON CONFLICT(session_id) DO UPDATE SET gen = excluded.gen;
END""",
    """CREATE TRIGGER context_totals_session_delete AFTER DELETE ON sessions BEGIN
    DELETE FROM chat_tokens WHERE session_id=old.id;
    DELETE FROM text_gens WHERE session_id=old.id;
END""",
    """CREATE INDEX messages_system ON messages(session_id, chat_id, lamport, device_id, seq) WHERE role = 'system'""",
    """CREATE TABLE slot_objects (
        store_url TEXT NOT NULL,
        hash BLOB NOT NULL,
        session_id TEXT NOT NULL,
        slot_pk BLOB NOT NULL,
        rev INTEGER NOT NULL, gone_at REAL,
        PRIMARY KEY (store_url, hash)
    ) WITHOUT ROWID""",
    """CREATE INDEX slot_objects_slot ON slot_objects(store_url, slot_pk, rev)""",
    """CREATE TABLE chat_walks (
    session_id TEXT NOT NULL,
    chat_id TEXT NOT NULL,
    w_lamport INTEGER NOT NULL,
    w_device TEXT NOT NULL,
    w_seq INTEGER NOT NULL,
    walked INTEGER NOT NULL,
    waits INTEGER NOT NULL,
    wait_sum REAL NOT NULL,
    pending REAL,
    firsts INTEGER NOT NULL,
    first_ms INTEGER NOT NULL,
    answers INTEGER NOT NULL,
    answer_ms INTEGER NOT NULL,
    PRIMARY KEY (session_id, chat_id)
) WITHOUT ROWID""",
    """CREATE TRIGGER chat_walks_message_delete AFTER DELETE ON messages BEGIN
    DELETE FROM chat_walks WHERE session_id=old.session_id AND chat_id=old.chat_id;
END""",
    """CREATE TRIGGER chat_walks_message_update
AFTER UPDATE OF session_id, chat_id, device_id, seq, lamport, role, created_at, extra ON messages BEGIN
    DELETE FROM chat_walks WHERE session_id=old.session_id AND chat_id=old.chat_id;
    DELETE FROM chat_walks WHERE session_id=new.session_id AND chat_id=new.chat_id;
END""",
    """CREATE TRIGGER chat_walks_session_delete AFTER DELETE ON sessions BEGIN
    DELETE FROM chat_walks WHERE session_id=old.id;
END""",
    """CREATE TABLE session_tags (
        tag TEXT NOT NULL,
        session_id TEXT NOT NULL,
        PRIMARY KEY (tag, session_id)
    ) WITHOUT ROWID""",
    """CREATE INDEX session_tags_session ON session_tags(session_id)""",
    """CREATE TRIGGER session_tags_insert AFTER INSERT ON session_texts BEGIN
        INSERT OR IGNORE INTO session_tags(tag, session_id)
            SELECT j.value, new.session_id FROM json_each(CASE WHEN json_valid(new.tags) THEN new.tags ELSE '[]' END) AS j WHERE j.type = 'text';
    END""",
    """CREATE TRIGGER session_tags_update AFTER UPDATE OF session_id, tags ON session_texts BEGIN
        DELETE FROM session_tags WHERE session_id=old.session_id;
        INSERT OR IGNORE INTO session_tags(tag, session_id)
            SELECT j.value, new.session_id FROM json_each(CASE WHEN json_valid(new.tags) THEN new.tags ELSE '[]' END) AS j WHERE j.type = 'text';
    END""",
    """CREATE TRIGGER session_tags_delete AFTER DELETE ON session_texts BEGIN
        DELETE FROM session_tags WHERE session_id=old.session_id;
    END""",
    """CREATE TABLE frozen_taken (
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
        head_pk BLOB NOT NULL,
        rev INTEGER NOT NULL,
        last_seq INTEGER NOT NULL,
        PRIMARY KEY (session_id, head_pk, rev)
    ) WITHOUT ROWID""",
    """CREATE TABLE head_lies (
    session_id TEXT PRIMARY KEY REFERENCES sessions(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    store_url TEXT NOT NULL,
    how TEXT NOT NULL,
    head_rev INTEGER NOT NULL,
    synced INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID""",
    """CREATE TABLE logs_seen (
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
        store_url TEXT NOT NULL,
        head_pk BLOB NOT NULL,
        PRIMARY KEY (session_id, store_url, head_pk)
    ) WITHOUT ROWID""",
    """CREATE TABLE claims_walks (
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
        walk BLOB NOT NULL,
        cuts BLOB NOT NULL,
        PRIMARY KEY (session_id, walk)
    ) WITHOUT ROWID""",
    """CREATE TRIGGER chat_tokens_message_insert AFTER INSERT ON messages BEGIN
    INSERT INTO chat_tokens(session_id, chat_id, active, messages) SELECT new.session_id, new.chat_id, CASE WHEN (CASE WHEN instr(new.extra, '"context_tokens"') AND json_valid(new.extra) AND json_type(new.extra, '$.context_tokens') = 'integer' AND json_extract(new.extra, '$.context_tokens') BETWEEN 0 AND 1099511627776 THEN json_extract(new.extra, '$.context_tokens') ELSE coalesce(new.tokens, 0) END) <> 0 AND (new.role = 'system' OR NOT EXISTS (SELECT 1 FROM chats c WHERE c.session_id=new.session_id AND c.id=new.chat_id AND CASE WHEN json_valid(c.compacted) THEN CASE WHEN json_type(c.compacted) = 'array' THEN ((new.lamport, new.device_id, new.seq) > (json_extract(c.compacted, '$[0]'), json_extract(c.compacted, '$[1]'), json_extract(c.compacted, '$[2]'))) IS NOT TRUE END END)) THEN (CASE WHEN instr(new.extra, '"context_tokens"') AND json_valid(new.extra) AND json_type(new.extra, '$.context_tokens') = 'integer' AND json_extract(new.extra, '$.context_tokens') BETWEEN 0 AND 1099511627776 THEN json_extract(new.extra, '$.context_tokens') ELSE coalesce(new.tokens, 0) END) ELSE 0 END, 1 WHERE true ON CONFLICT(session_id, chat_id) DO UPDATE SET active = active + excluded.active, messages = messages + excluded.messages;
END""",
    """CREATE TRIGGER chat_tokens_message_delete AFTER DELETE ON messages BEGIN
    INSERT INTO chat_tokens(session_id, chat_id, active, messages) SELECT old.session_id, old.chat_id, -CASE WHEN (CASE WHEN instr(old.extra, '"context_tokens"') AND json_valid(old.extra) AND json_type(old.extra, '$.context_tokens') = 'integer' AND json_extract(old.extra, '$.context_tokens') BETWEEN 0 AND 1099511627776 THEN json_extract(old.extra, '$.context_tokens') ELSE coalesce(old.tokens, 0) END) <> 0 AND (old.role = 'system' OR NOT EXISTS (SELECT 1 FROM chats c WHERE c.session_id=old.session_id AND c.id=old.chat_id AND CASE WHEN json_valid(c.compacted) THEN CASE WHEN json_type(c.compacted) = 'array' THEN ((old.lamport, old.device_id, old.seq) > (json_extract(c.compacted, '$[0]'), json_extract(c.compacted, '$[1]'), json_extract(c.compacted, '$[2]'))) IS NOT TRUE END END)) THEN (CASE WHEN instr(old.extra, '"context_tokens"') AND json_valid(old.extra) AND json_type(old.extra, '$.context_tokens') = 'integer' AND json_extract(old.extra, '$.context_tokens') BETWEEN 0 AND 1099511627776 THEN json_extract(old.extra, '$.context_tokens') ELSE coalesce(old.tokens, 0) END) ELSE 0 END, -1 WHERE true ON CONFLICT(session_id, chat_id) DO UPDATE SET active = active + excluded.active, messages = messages + excluded.messages;
END""",
    """CREATE TRIGGER chat_tokens_message_update
AFTER UPDATE OF session_id, chat_id, device_id, seq, lamport, role, tokens, extra ON messages BEGIN
    INSERT INTO chat_tokens(session_id, chat_id, active, messages) SELECT old.session_id, old.chat_id, -CASE WHEN (CASE WHEN instr(old.extra, '"context_tokens"') AND json_valid(old.extra) AND json_type(old.extra, '$.context_tokens') = 'integer' AND json_extract(old.extra, '$.context_tokens') BETWEEN 0 AND 1099511627776 THEN json_extract(old.extra, '$.context_tokens') ELSE coalesce(old.tokens, 0) END) <> 0 AND (old.role = 'system' OR NOT EXISTS (SELECT 1 FROM chats c WHERE c.session_id=old.session_id AND c.id=old.chat_id AND CASE WHEN json_valid(c.compacted) THEN CASE WHEN json_type(c.compacted) = 'array' THEN ((old.lamport, old.device_id, old.seq) > (json_extract(c.compacted, '$[0]'), json_extract(c.compacted, '$[1]'), json_extract(c.compacted, '$[2]'))) IS NOT TRUE END END)) THEN (CASE WHEN instr(old.extra, '"context_tokens"') AND json_valid(old.extra) AND json_type(old.extra, '$.context_tokens') = 'integer' AND json_extract(old.extra, '$.context_tokens') BETWEEN 0 AND 1099511627776 THEN json_extract(old.extra, '$.context_tokens') ELSE coalesce(old.tokens, 0) END) ELSE 0 END, -1 WHERE true ON CONFLICT(session_id, chat_id) DO UPDATE SET active = active + excluded.active, messages = messages + excluded.messages;
    INSERT INTO chat_tokens(session_id, chat_id, active, messages) SELECT new.session_id, new.chat_id, CASE WHEN (CASE WHEN instr(new.extra, '"context_tokens"') AND json_valid(new.extra) AND json_type(new.extra, '$.context_tokens') = 'integer' AND json_extract(new.extra, '$.context_tokens') BETWEEN 0 AND 1099511627776 THEN json_extract(new.extra, '$.context_tokens') ELSE coalesce(new.tokens, 0) END) <> 0 AND (new.role = 'system' OR NOT EXISTS (SELECT 1 FROM chats c WHERE c.session_id=new.session_id AND c.id=new.chat_id AND CASE WHEN json_valid(c.compacted) THEN CASE WHEN json_type(c.compacted) = 'array' THEN ((new.lamport, new.device_id, new.seq) > (json_extract(c.compacted, '$[0]'), json_extract(c.compacted, '$[1]'), json_extract(c.compacted, '$[2]'))) IS NOT TRUE END END)) THEN (CASE WHEN instr(new.extra, '"context_tokens"') AND json_valid(new.extra) AND json_type(new.extra, '$.context_tokens') = 'integer' AND json_extract(new.extra, '$.context_tokens') BETWEEN 0 AND 1099511627776 THEN json_extract(new.extra, '$.context_tokens') ELSE coalesce(new.tokens, 0) END) ELSE 0 END, 1 WHERE true ON CONFLICT(session_id, chat_id) DO UPDATE SET active = active + excluded.active, messages = messages + excluded.messages;
END""",
    """CREATE TRIGGER chat_tokens_chat_insert AFTER INSERT ON chats BEGIN
    INSERT INTO chat_tokens(session_id, chat_id, active) SELECT new.session_id, new.id, (SELECT coalesce(sum((CASE WHEN instr(m.extra, '"context_tokens"') AND json_valid(m.extra) AND json_type(m.extra, '$.context_tokens') = 'integer' AND json_extract(m.extra, '$.context_tokens') BETWEEN 0 AND 1099511627776 THEN json_extract(m.extra, '$.context_tokens') ELSE coalesce(m.tokens, 0) END)), 0) FROM messages m WHERE m.session_id=new.session_id AND m.chat_id=new.id AND (m.role = 'system' OR NOT EXISTS (SELECT 1 FROM chats c WHERE c.session_id=m.session_id AND c.id=m.chat_id AND CASE WHEN json_valid(c.compacted) THEN CASE WHEN json_type(c.compacted) = 'array' THEN ((m.lamport, m.device_id, m.seq) > (json_extract(c.compacted, '$[0]'), json_extract(c.compacted, '$[1]'), json_extract(c.compacted, '$[2]'))) IS NOT TRUE END END))) WHERE true ON CONFLICT(session_id, chat_id) DO UPDATE SET active = excluded.active;
END""",
    """CREATE TRIGGER chat_tokens_chat_update AFTER UPDATE OF session_id, id, compacted ON chats
WHEN old.compacted IS NOT new.compacted OR old.session_id IS NOT new.session_id OR old.id IS NOT new.id BEGIN
    INSERT INTO chat_tokens(session_id, chat_id, active) SELECT old.session_id, old.id, (SELECT coalesce(sum((CASE WHEN instr(m.extra, '"context_tokens"') AND json_valid(m.extra) AND json_type(m.extra, '$.context_tokens') = 'integer' AND json_extract(m.extra, '$.context_tokens') BETWEEN 0 AND 1099511627776 THEN json_extract(m.extra, '$.context_tokens') ELSE coalesce(m.tokens, 0) END)), 0) FROM messages m WHERE m.session_id=old.session_id AND m.chat_id=old.id AND (m.role = 'system' OR NOT EXISTS (SELECT 1 FROM chats c WHERE c.session_id=m.session_id AND c.id=m.chat_id AND CASE WHEN json_valid(c.compacted) THEN CASE WHEN json_type(c.compacted) = 'array' THEN ((m.lamport, m.device_id, m.seq) > (json_extract(c.compacted, '$[0]'), json_extract(c.compacted, '$[1]'), json_extract(c.compacted, '$[2]'))) IS NOT TRUE END END))) WHERE true ON CONFLICT(session_id, chat_id) DO UPDATE SET active = excluded.active;
    INSERT INTO chat_tokens(session_id, chat_id, active) SELECT new.session_id, new.id, (SELECT coalesce(sum((CASE WHEN instr(m.extra, '"context_tokens"') AND json_valid(m.extra) AND json_type(m.extra, '$.context_tokens') = 'integer' AND json_extract(m.extra, '$.context_tokens') BETWEEN 0 AND 1099511627776 THEN json_extract(m.extra, '$.context_tokens') ELSE coalesce(m.tokens, 0) END)), 0) FROM messages m WHERE m.session_id=new.session_id AND m.chat_id=new.id AND (m.role = 'system' OR NOT EXISTS (SELECT 1 FROM chats c WHERE c.session_id=m.session_id AND c.id=m.chat_id AND CASE WHEN json_valid(c.compacted) THEN CASE WHEN json_type(c.compacted) = 'array' THEN ((m.lamport, m.device_id, m.seq) > (json_extract(c.compacted, '$[0]'), json_extract(c.compacted, '$[1]'), json_extract(c.compacted, '$[2]'))) IS NOT TRUE END END))) WHERE true ON CONFLICT(session_id, chat_id) DO UPDATE SET active = excluded.active;
END""",
    """CREATE TRIGGER chat_tokens_chat_delete AFTER DELETE ON chats BEGIN
    INSERT INTO chat_tokens(session_id, chat_id, active) SELECT old.session_id, old.id, (SELECT coalesce(sum((CASE WHEN instr(m.extra, '"context_tokens"') AND json_valid(m.extra) AND json_type(m.extra, '$.context_tokens') = 'integer' AND json_extract(m.extra, '$.context_tokens') BETWEEN 0 AND 1099511627776 THEN json_extract(m.extra, '$.context_tokens') ELSE coalesce(m.tokens, 0) END)), 0) FROM messages m WHERE m.session_id=old.session_id AND m.chat_id=old.id AND (m.role = 'system' OR NOT EXISTS (SELECT 1 FROM chats c WHERE c.session_id=m.session_id AND c.id=m.chat_id AND CASE WHEN json_valid(c.compacted) THEN CASE WHEN json_type(c.compacted) = 'array' THEN ((m.lamport, m.device_id, m.seq) > (json_extract(c.compacted, '$[0]'), json_extract(c.compacted, '$[1]'), json_extract(c.compacted, '$[2]'))) IS NOT TRUE END END))) WHERE true ON CONFLICT(session_id, chat_id) DO UPDATE SET active = excluded.active;
END""",
    """CREATE TABLE openai_choices (
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
        chat_id TEXT NOT NULL,
        recorded BLOB NOT NULL,
        other BLOB NOT NULL,
        PRIMARY KEY (session_id, chat_id, other)
    )""",
    """CREATE TABLE openai_made (
        session_id TEXT PRIMARY KEY REFERENCES sessions(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
        first_lamport INTEGER NOT NULL,
        last_lamport INTEGER NOT NULL
    )""",
]

# the rows the migrations write
ROWS: list[tuple[str, tuple]] = [
    ("INSERT INTO schema_version VALUES (?)", (40,)),
]

# the PRAGMAs the migrations set (in the database file's header)
PRAGMAS: list[tuple[str, int]] = []
