"""The database's migrations, in order: the SQL that brings a schema of version N-1 to N (storage/schema.py runs
them, one per transaction). A migration once on main is never edited: a change is a new one."""

from __future__ import annotations

from . import chatstats, contexttotals
from .indexedtext import UNINDEX_OLD, tool_text
from .migrationslate import LATE

# (migration 26) the tags of session_texts row `t`: its text values, as a list's filter matched them (json_each's)
TAGS_OF = "json_each(CASE WHEN json_valid({t}.tags) THEN {t}.tags ELSE '[]' END) AS j WHERE j.type = 'text'"

MIGRATIONS: list[str] = [
    # 1: sessions, chats, messages, operations
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        user TEXT,
        name TEXT,
        system_prompt TEXT,
        model TEXT,
        settings TEXT NOT NULL DEFAULT '{}',
        initial_messages TEXT NOT NULL DEFAULT '[]',
        metadata TEXT NOT NULL DEFAULT '{}',
        tags TEXT NOT NULL DEFAULT '[]',
        preferences TEXT NOT NULL DEFAULT '{}',
        status TEXT NOT NULL DEFAULT 'active',
        current_chat TEXT,
        created_at REAL NOT NULL,
        last_activity REAL NOT NULL,
        expires_at REAL,
        lamport INTEGER NOT NULL DEFAULT 0,
        stamps TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX sessions_user ON sessions(user, id);
    CREATE INDEX sessions_status ON sessions(status, id);
    CREATE TABLE chats (
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
        id TEXT NOT NULL,
        name TEXT,
        system_prompt TEXT,
        model TEXT,
        settings TEXT NOT NULL DEFAULT '{}',
        created_at REAL NOT NULL,
        stamps TEXT NOT NULL DEFAULT '{}',
        PRIMARY KEY (session_id, id)
    ) WITHOUT ROWID;
    CREATE TABLE messages (
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
    );
    CREATE UNIQUE INDEX messages_origin ON messages(session_id, device_id, seq);
    CREATE INDEX messages_order ON messages(session_id, chat_id, lamport, device_id, seq);
    CREATE TABLE ops (
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
        device_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        lamport INTEGER NOT NULL,
        kind TEXT NOT NULL,
        body TEXT NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (session_id, device_id, seq)
    ) WITHOUT ROWID;
    CREATE TABLE logs (
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
        device_id TEXT NOT NULL,
        last_seq INTEGER NOT NULL,
        PRIMARY KEY (session_id, device_id)
    ) WITHOUT ROWID;
    """,
    # 2: push state per session (what of this device's log is safely in the store)
    """
    CREATE TABLE sync_state (
        session_id TEXT PRIMARY KEY REFERENCES sessions(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
        pushed_seq INTEGER NOT NULL DEFAULT 0,
        head_rev INTEGER NOT NULL DEFAULT 0,
        tree BLOB,
        pending BLOB,
        last_error TEXT,
        last_push REAL
    );
    """,
    # 3: sessions shared between devices: where they sync, what this device may do, whom it follows
    """
    ALTER TABLE sessions ADD COLUMN access TEXT NOT NULL DEFAULT 'owner';
    CREATE TABLE remotes (
        session_id TEXT PRIMARY KEY REFERENCES sessions(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
        store_url TEXT,
        announce_pk BLOB NOT NULL,
        members_rev INTEGER NOT NULL DEFAULT 0,
        announced INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE peers (
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
        head_pk BLOB NOT NULL,
        device_id TEXT,
        rev INTEGER NOT NULL DEFAULT 0,
        applied_seq INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        PRIMARY KEY (session_id, head_pk)
    ) WITHOUT ROWID;
    """,
    # 4: policies (quotas, context budgets, checkpoints), compaction, provenance, checkpoints
    """
    ALTER TABLE sessions ADD COLUMN policy TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE sessions ADD COLUMN tokens_used INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE sessions ADD COLUMN provenance TEXT;
    ALTER TABLE chats ADD COLUMN policy TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE chats ADD COLUMN compacted TEXT;
    CREATE TABLE checkpoints (
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
        device_id TEXT NOT NULL,
        number INTEGER NOT NULL,
        hash BLOB NOT NULL,
        tokens INTEGER NOT NULL,
        messages INTEGER NOT NULL,
        frontier TEXT NOT NULL,
        created_at REAL NOT NULL,
        pk BLOB NOT NULL,
        signature BLOB NOT NULL,
        PRIMARY KEY (session_id, device_id, number)
    ) WITHOUT ROWID;
    UPDATE sessions SET tokens_used = (SELECT coalesce(sum(tokens), 0) FROM messages WHERE session_id = sessions.id);
    """,
    # 5: idempotency keys of appends (this device only, never synced): a retried append is answered with
    # the first one's result. Written in the append's own transaction, so a crash cannot split them.
    # `result` names the messages the append wrote, "FIRST_SEQ COUNT" in this device's log, read back for
    # a retry (storage/messages.py); a record written before that holds the answer's JSON itself.
    """
    CREATE TABLE idempotency (
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
        key TEXT NOT NULL,
        request TEXT NOT NULL,
        result TEXT NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (session_id, key)
    );
    CREATE INDEX idempotency_age ON idempotency(session_id, created_at);
    """,
    # 6: a session being imported in several write transactions (storage/applyremote.py, apply_remote) is
    # hidden from every read until its last one: `importing` is 1 meanwhile. One left so by a crash is
    # deleted when the database is opened (Connections.open).
    """
    ALTER TABLE sessions ADD COLUMN importing INTEGER NOT NULL DEFAULT 0;
    """,
    # 7: this device's own records, never synced. `shares`: the share codes it issued, described, never the code or its
    # secrets (`key_fp` is a keyed hash of the session key it opened: a rekey since makes it differ).
    # `released`: objects of this device's logs no current head references any more, and since when
    # (what `sessiond gc` may free after its grace period).
    """
    CREATE TABLE shares (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
        capability TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at INTEGER,
        protected INTEGER NOT NULL,
        store_url TEXT,
        key_fp BLOB NOT NULL
    );
    CREATE INDEX shares_session ON shares(session_id, id);
    CREATE TABLE released (
        store_url TEXT NOT NULL,
        hash BLOB NOT NULL,
        session_id TEXT NOT NULL,
        released_at REAL NOT NULL,
        PRIMARY KEY (store_url, hash)
    ) WITHOUT ROWID;
    CREATE INDEX released_age ON released(released_at);
    """,
    # 8: the outbox of each mirror store (sync/mirror.py): what a store that was down has not taken yet,
    # objects and heads in the order they were written (a head goes after the objects it names). A head
    # replaces an older one of the same key still waiting. Drained, in order, once the store answers.
    """
    CREATE TABLE mirror_outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        store_url TEXT NOT NULL,
        kind TEXT NOT NULL,
        key BLOB NOT NULL,
        data BLOB NOT NULL,
        rev INTEGER NOT NULL DEFAULT 0,
        UNIQUE (store_url, kind, key)
    );
    CREATE INDEX mirror_outbox_order ON mirror_outbox(store_url, id);
    """,
    # 9: full-text search over every message's content (storage/search.py). An external-content FTS5
    # table: it holds only the index, and reads the text from `messages` by rowid. A message written goes
    # first into `messages_fts_pending` (a trigger, whatever path writes it: an append, operations from
    # another device, an import): indexing it there and then cost an append as much as all the rest of
    # it (FTS5 writes a segment per statement and merges them as they pile up), so the index takes the
    # pending messages in batches instead, before every search and a few times a second in the
    # background (Search.catch_up). A message deleted or changed leaves the index (or the pending list)
    # at once, by trigger (ON DELETE CASCADE fires them too). The rowids of `messages` are stable because
    # nothing runs VACUUM; one that ever does must 'rebuild' this index after it. A local table: nothing
    # of it is pushed. 'rebuild' indexes the messages already here.
    """
    CREATE VIRTUAL TABLE messages_fts USING fts5(
        content, content='messages', content_rowid='rowid', tokenize='unicode61 remove_diacritics 2'
    );
    CREATE TABLE messages_fts_pending (id INTEGER PRIMARY KEY);
    CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
        INSERT INTO messages_fts_pending(id) VALUES (new.rowid);
    END;
    CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
        INSERT INTO messages_fts(messages_fts, rowid, content) SELECT 'delete', old.rowid, old.content
            WHERE NOT EXISTS (SELECT 1 FROM messages_fts_pending WHERE id=old.rowid);
        DELETE FROM messages_fts_pending WHERE id=old.rowid;
    END;
    CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages BEGIN
        INSERT INTO messages_fts(messages_fts, rowid, content) SELECT 'delete', old.rowid, old.content
            WHERE NOT EXISTS (SELECT 1 FROM messages_fts_pending WHERE id=old.rowid);
        INSERT OR IGNORE INTO messages_fts_pending(id) VALUES (new.rowid);
    END;
    INSERT INTO messages_fts(messages_fts) VALUES ('rebuild');
    """,
    # 10: two values of each message as a page stores them (docs/FORMATS.md), written with the message by
    # this device's appends, so that a push's read (storage/logrun.py) takes them as they are rather than
    # working them out again for every row: its content's head (the CBOR head of its text item: its UTF-8
    # length in the shortest form) and its time in whole milliseconds (Python's round(created_at * 1000)).
    # Together 40% of the read's statement for chat-sized messages (bench/results/profile-push.md). Null
    # for the messages written before (the columns are added, nothing is rewritten: instant on any
    # database) and for those from other devices, which are never pushed from here: the read works out
    # theirs as before. A content or time changed in place loses both (the trigger): never a stale one.
    """
    ALTER TABLE messages ADD COLUMN content_head BLOB;
    ALTER TABLE messages ADD COLUMN created_ms INTEGER;
    CREATE TRIGGER messages_pushed_form_update AFTER UPDATE OF content, created_at ON messages BEGIN
        UPDATE messages SET content_head = NULL, created_ms = NULL WHERE rowid = new.rowid;
    END;
    """,
    # 11: session ids looked up regardless of case (storage/sessions.py case_twin): two ids that differ only
    # in case would name one key file on a case-insensitive disk (macOS, Windows), so a new one is refused.
    # Not unique: a database may hold such a pair already (made on a case-sensitive disk).
    """
    CREATE INDEX sessions_id_nocase ON sessions(id COLLATE NOCASE);
    """,
    # 12: the sessions an import from a file (`sessiond import-file`) is making, listed from the transaction
    # that creates each until the one that ends the import: an import is all or nothing, so the sessions a
    # crash left listed are deleted at the daemon's next start, before it serves (daemon/server.py).
    """
    CREATE TABLE file_imports (
        session_id TEXT PRIMARY KEY REFERENCES sessions(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED
    );
    """,
    # 13: the search index holds deleted messages' words: FTS5 takes a message out of an external-content
    # index by adding a delete marker, and the words stay in the older segments until they are merged. A
    # delete of indexed messages (storage/sessions.py) sets this row in its own transaction; the background
    # indexer then merges the whole index, a few pages at a time, and clears it in the transaction whose
    # merge found nothing left (storage/search.py, Search.purge). Kept across a restart.
    """
    CREATE TABLE search_purge (id INTEGER PRIMARY KEY CHECK (id = 1));
    """,
    # 14: this device's rekey claims (docs/FORMATS.md §6: each names a rekey notice this device published,
    # or is about to), as the DAG-CBOR list every manifest it pushes carries: a device taking a notice
    # checks that the device it names claims it, and that no other device claims another (sync/rekey.py)
    """
    ALTER TABLE sync_state ADD COLUMN rekey_claims BLOB;
    """,
    # 15: the frozen logs of a shared session's members slot (the logs of writers a rekey dropped, docs/FORMATS.md
    # §6), as the DAG-CBOR list this device last read or wrote there, merged with those noted before: a slot
    # the store lost is written again with them (sync/members.py), even by a daemon that has not read it
    # since it started
    """
    ALTER TABLE remotes ADD COLUMN frozen BLOB;
    """,
    # 16: the last signed IPNS record of each head this device publishes or follows on a store whose heads
    # a DHT forgets (Kubo: 48 h after a record was put, whatever its end of life), and when this device
    # last put it there: the same bytes are put again before the DHT forgets them (sync/reput.py), so a
    # head stays readable while its writer is away. The best record seen (highest sequence, then latest
    # end of life) is kept; rows of heads no session follows any more are dropped.
    """
    CREATE TABLE kept_records (
        pk BLOB PRIMARY KEY,
        record BLOB NOT NULL,
        put_at REAL NOT NULL
    ) WITHOUT ROWID;
    """,
    # 17: the search index takes a model's tool calls too: each call's function name and arguments, in a
    # second column of the index, `tool_text`, which reads them from the message row's new column of the
    # same name, written from its `extra` (tool_text(); null when it has no calls) by trigger whatever
    # path writes the message (an append, another device's operations, an import, a fork's copy), and
    # here for the messages already stored. That write changes nothing the index holds yet (the row is
    # pending, whichever trigger runs first); a change of `extra` in place (none does so today) takes the
    # old text out as a change of content does. The index is made again: every message is listed pending,
    # and the indexer takes them in the background (each search first, as after any write).
    f"""
    ALTER TABLE messages ADD COLUMN tool_text TEXT;
    UPDATE messages SET tool_text = {tool_text("messages")} WHERE instr(extra, '"tool_calls"');
    DROP TRIGGER messages_fts_delete;
    DROP TRIGGER messages_fts_update;
    DROP TABLE messages_fts;
    DELETE FROM search_purge;
    CREATE VIRTUAL TABLE messages_fts USING fts5(
        content, tool_text, content='messages', content_rowid='rowid', tokenize='unicode61 remove_diacritics 2'
    );
    CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
        {UNINDEX_OLD}
        DELETE FROM messages_fts_pending WHERE id=old.rowid;
    END;
    CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages BEGIN
        {UNINDEX_OLD}
        INSERT OR IGNORE INTO messages_fts_pending(id) VALUES (new.rowid);
    END;
    CREATE TRIGGER messages_tool_text_insert AFTER INSERT ON messages WHEN instr(new.extra, '"tool_calls"') BEGIN
        UPDATE messages SET tool_text = {tool_text("new")} WHERE rowid = new.rowid;
    END;
    CREATE TRIGGER messages_tool_text_update AFTER UPDATE OF extra ON messages BEGIN
        {UNINDEX_OLD}
        INSERT OR IGNORE INTO messages_fts_pending(id) VALUES (new.rowid);
        UPDATE messages SET tool_text = {tool_text("new")} WHERE rowid = new.rowid;
    END;
    INSERT OR IGNORE INTO messages_fts_pending(id) SELECT rowid FROM messages;
    """,
    # 18: where this device's appends that passed a session's checkpoint mark ended (this device only, never
    # synced): the seq of each one's last message in this device's log, written in the append's own
    # transaction, so that the start after a crash that lost the checkpoint (storage/missedmarks.py) makes it
    # over exactly that append, also when the next append came in the same millisecond. Only such an append
    # writes one (one in a checkpoint interval's worth of tokens, none for the others); a checkpoint of this
    # device drops those it covers. A new table: no existing row is read or written.
    """
    CREATE TABLE mark_ends (
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
        seq INTEGER NOT NULL,
        PRIMARY KEY (session_id, seq)
    ) WITHOUT ROWID;
    """,
    # 19: what a revocation learnt (this device only, never synced): a session a rekey left this device out
    # of (access `revoked`, storage/statuschanges.py mark_revoked) has a row, written in the transaction that
    # marks it, naming how far the rekey carried this device's log over (the seq its notice names, `carried`;
    # null: the notice does not say). What this device wrote past it is held here only (sync/rekey.py), and
    # `rm`, the clean-up and an expiry keep it (daemon/operations.py). Sessions revoked before this are taken
    # as not knowing how far. Access given again (a new code imported, a later rekey boxing the key to this
    # device) clears the row by trigger, whichever path writes it: the writes go out with its log then.
    """
    CREATE TABLE revocations (
        session_id TEXT PRIMARY KEY REFERENCES sessions(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
        carried INTEGER
    ) WITHOUT ROWID;
    INSERT INTO revocations(session_id) SELECT id FROM sessions WHERE access='revoked';
    CREATE TRIGGER revocations_cleared AFTER UPDATE OF access ON sessions WHEN new.access IN ('owner', 'write')
    BEGIN
        DELETE FROM revocations WHERE session_id=new.id;
    END;
    """,
    # 20: a checkpoint's version (docs/FORMATS.md §8): null for version 1 (every checkpoint made before it,
    # and those of sessiond before it on other devices), 2 for those whose hash covers the whole conversation;
    # and, as JSON, the fields of a newer version's proof beyond those with columns here, so that its proof
    # is listed whole (and a newer sessiond can verify it). New columns: no existing row is rewritten.
    """
    ALTER TABLE checkpoints ADD COLUMN v INTEGER;
    ALTER TABLE checkpoints ADD COLUMN more TEXT;
    """,
    # 21: a session's system prompt, initial messages, metadata, tags and preferences, and a chat's system prompt,
    # out of the rows every append reads and rewrites: into tables of their own, `session_texts` (a row per
    # session, written with it) and `chat_prompts` (a row per chat that has a prompt). People paste documents
    # into system prompts (metadata, tags and preferences may hold 1 MiB each); in the row, an append's read
    # walked the text's overflow pages to the columns after it and its UPDATE of the session's clock wrote the
    # whole record again (an 8-million-character prompt: ~20-36 ms per append, bench/results/bigfields.json).
    # The append reads neither table (storage/messages.py, SESSION_READ), nor does a checkpoint; what shows a
    # session or sends its prompt to a model joins them (storage/sessions.py SESSION_SELECT, session_row's
    # `texts`; storage/chats.py CHAT_SELECT; storage/context.py fixed_tokens). Both go with their session (ON
    # DELETE CASCADE). The values are copied as they are, then the columns dropped (each table is rewritten
    # without them, in this one transaction).
    """
    CREATE TABLE session_texts (
        session_id TEXT PRIMARY KEY REFERENCES sessions(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
        system_prompt TEXT,
        initial_messages TEXT NOT NULL DEFAULT '[]',
        metadata TEXT NOT NULL DEFAULT '{}',
        tags TEXT NOT NULL DEFAULT '[]',
        preferences TEXT NOT NULL DEFAULT '{}'
    );
    INSERT INTO session_texts(session_id, system_prompt, initial_messages, metadata, tags, preferences)
        SELECT id, system_prompt, initial_messages, metadata, tags, preferences FROM sessions;
    ALTER TABLE sessions DROP COLUMN system_prompt;
    ALTER TABLE sessions DROP COLUMN initial_messages;
    ALTER TABLE sessions DROP COLUMN metadata;
    ALTER TABLE sessions DROP COLUMN tags;
    ALTER TABLE sessions DROP COLUMN preferences;
    CREATE TABLE chat_prompts (
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
        chat_id TEXT NOT NULL,
        system_prompt TEXT NOT NULL,
        PRIMARY KEY (session_id, chat_id)
    );
    INSERT INTO chat_prompts(session_id, chat_id, system_prompt)
        SELECT session_id, id, system_prompt FROM chats WHERE system_prompt IS NOT NULL;
    ALTER TABLE chats DROP COLUMN system_prompt;
    """,
    # 22: a chat's active tokens kept by trigger, and a stamp of its session's texts, so that an append to a chat
    # with a context budget reads neither all its messages nor the texts (storage/contexttotals.py)
    contexttotals.MIGRATION,
    # 23: the system messages of each chat in an index of their own (a partial index: no other message is in it,
    # so an append of any other role writes nothing more), so that a chat's context (storage/context.py
    # `context`) counts those a compaction keeps before its cut without reading the rows it set aside
    """
    CREATE INDEX messages_system ON messages(session_id, chat_id, lamport, device_id, seq) WHERE role = 'system';
    """,
    # 24: the objects this device put for a members slot to name (this device only, never synced): a members
    # object, a rekey's notice, each with the slot's key (0xed | announce key) and the revision it was put to
    # be named at, written with its gc note before the put (sync/context.py put_to_name). Once the slot is
    # seen at that revision or past it naming another object (written over: by this device or another),
    # the row becomes a gc candidate (`released`) and goes: nothing names it again (each object is sealed
    # under a salt of its own). A home from before it has no rows: the members objects it wrote and that
    # were written over before are left in the store (it cannot tell its own from another device's).
    """
    CREATE TABLE slot_objects (
        store_url TEXT NOT NULL,
        hash BLOB NOT NULL,
        session_id TEXT NOT NULL,
        slot_pk BLOB NOT NULL,
        rev INTEGER NOT NULL,
        PRIMARY KEY (store_url, hash)
    ) WITHOUT ROWID;
    CREATE INDEX slot_objects_slot ON slot_objects(store_url, slot_pk, rev);
    """,
    # 25: each chat's message count kept by trigger beside its active tokens, and the walk of its messages that a
    # session's statistics make kept as far as the last one read (storage/chatstats.py), so that the statistics and
    # a session shown read a row per chat and the messages written since, not every message
    chatstats.MIGRATION,
    # 26: each session's tags in a table of their own, `session_tags`, kept by trigger from `session_texts.tags` (a
    # JSON array: its text values; text that is not JSON holds none), so that a list of the sessions with a tag seeks
    # the tag's rows in the order of the sessions' ids rather than reading every session's tags until its page is
    # found (storage/sessions.py list). The texts are written only when a session is made or changed: an append
    # writes nothing more.
    f"""
    CREATE TABLE session_tags (
        tag TEXT NOT NULL,
        session_id TEXT NOT NULL,
        PRIMARY KEY (tag, session_id)
    ) WITHOUT ROWID;
    CREATE INDEX session_tags_session ON session_tags(session_id);
    INSERT OR IGNORE INTO session_tags(tag, session_id) SELECT j.value, t.session_id FROM session_texts t,
        {TAGS_OF.format(t="t")};
    CREATE TRIGGER session_tags_insert AFTER INSERT ON session_texts BEGIN
        INSERT OR IGNORE INTO session_tags(tag, session_id)
            SELECT j.value, new.session_id FROM {TAGS_OF.format(t="new")};
    END;
    CREATE TRIGGER session_tags_update AFTER UPDATE OF session_id, tags ON session_texts BEGIN
        DELETE FROM session_tags WHERE session_id=old.session_id;
        INSERT OR IGNORE INTO session_tags(tag, session_id)
            SELECT j.value, new.session_id FROM {TAGS_OF.format(t="new")};
    END;
    CREATE TRIGGER session_tags_delete AFTER DELETE ON session_texts BEGIN
        DELETE FROM session_tags WHERE session_id=old.session_id;
    END;
    """,
    # 27: the frozen logs (docs/FORMATS.md §6) this device took whole from their manifests (this device only, never
    # synced): by head key and revision, the last seq the manifest held. Only a writer that took a frozen log whole
    # puts it back when the store loses its manifest (sync/frozenrepair.py), and only as far as that seq: one that
    # holds less (it pulled the dropped writer in part, and the log was lost before it took it) would name a log
    # holding less than the rekey froze, and every later import would lack the rest.
    """
    CREATE TABLE frozen_taken (
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
        head_pk BLOB NOT NULL,
        rev INTEGER NOT NULL,
        last_seq INTEGER NOT NULL,
        PRIMARY KEY (session_id, head_pk, rev)
    ) WITHOUT ROWID;
    """,
    # 28: when a deleted session's members slot last read as gone from a store whose heads expire (Kubo), its rows
    # kept while what they name is still there: gc reads it again only once SLOT_GONE_READ_EVERY has passed since
    # (sync/gc.py), not at every run. NULL: not read as gone.
    "ALTER TABLE slot_objects ADD COLUMN gone_at REAL;",
    # 29: a store found serving this device's head forged or rolled back, by session (storage/headlies.py reads and
    # writes it); a session's row goes with it. (Its text at the margin, as it was first written: pinned by digest)
    """
CREATE TABLE head_lies (
    session_id TEXT PRIMARY KEY REFERENCES sessions(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    store_url TEXT NOT NULL,
    how TEXT NOT NULL,
    head_rev INTEGER NOT NULL,
    synced INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
""",
    *LATE,  # (30 on: storage/migrationslate.py)
]
SCHEMA_VERSION = len(MIGRATIONS)
