"""The push's bulk read (storage/logrun.py) takes the messages' columns in seq order without reading their
seqs: that holds because its statement walks the messages_origin index, which this checks."""

from __future__ import annotations

import sqlite3

from sessiond.storage import logrun
from sessiond.storage.model import text_head
from sessiond.storage.schema import MIGRATIONS


def test_the_run_statement_walks_the_seq_index():
    conn = sqlite3.connect(":memory:")
    for migration in MIGRATIONS:
        conn.executescript(migration)
    for sql in (logrun._RUN_SQL, logrun._SEQS_SQL, logrun._LAMS_SQL, logrun._COLUMN_SQL.format("tokens")):
        plan = " ".join(row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, ("s", "d", 0, 10)))
        assert "INDEX messages_origin (session_id=? AND device_id=? AND seq>? AND seq<?)" in plan, plan
        assert "TEMP B-TREE" not in plan, plan


def _chat(sid: str, seq: int) -> str:
    return "side" if sid == "some" and seq % 5 == 0 else "main"


def test_tokens_and_extra_fields_read_whether_none_some_or_all_are_set():
    """Counted first, listed only when needed (and the chat, when there are several): the columns as
    written, and the seqs of messages with other operations between them (read by a statement of their
    own)."""
    conn = sqlite3.connect(":memory:")
    for migration in MIGRATIONS:
        conn.executescript(migration)
    cases = {
        "none": lambda i: (None, None),
        "all": lambda i: (i * 7, f'{{"k": {i}}}'),
        "some": lambda i: (i if i % 3 else None, '{"m": 1}' if i % 4 == 1 else None),
    }
    for sid, values in cases.items():
        for seq in range(1, 41):
            if seq in (1, 17):
                conn.execute(
                    "INSERT INTO ops(session_id, device_id, seq, lamport, kind, body, created_at)"
                    " VALUES (?, 'd', ?, ?, 'chat.create', '{}', 1.0)",
                    (sid, seq, seq),
                )
                continue
            tokens, extra = values(seq)
            conn.execute(
                "INSERT INTO messages(session_id, chat_id, device_id, seq, lamport, role, content, tokens,"
                " created_at, extra) VALUES (?, ?, 'd', ?, ?, 'user', ?, ?, 2.5, ?)",
                (sid, _chat(sid, seq), seq, seq, f"m{seq}", tokens, extra),
            )
        conn.commit()
        for after, upto in ((0, 40), (1, 16), (17, 40), (5, 30)):
            run = logrun.read_run(conn, sid, "d", after, upto)
            assert not conn.in_transaction  # its statements' snapshot is let go
            seqs = range(after + 1, upto + 1)
            assert run.seqs == list(seqs), (sid, after, upto)
            msgs = [s for s in seqs if s not in (1, 17)]
            assert [t for t, s in zip(run.toks, seqs) if s in msgs] == [values(s)[0] for s in msgs], sid
            assert [e for e, s in zip(run.extras, seqs) if s in msgs] == [values(s)[1] for s in msgs], sid
            assert [c for c, s in zip(run.chats, seqs) if s in msgs] == [_chat(sid, s) for s in msgs], sid
            assert [k for k, s in zip(run.kinds, seqs) if s not in msgs] == ["chat.create"] * (len(seqs) - len(msgs))


def test_the_contents_carry_the_heads_of_every_width():
    """The statement writes each content's CBOR head (1, 2, 3 or 5 bytes) as group_concat's separator:
    the blob is the items a page stores, at each edge of the head widths."""
    conn = sqlite3.connect(":memory:")
    for migration in MIGRATIONS:
        conn.executescript(migration)
    sizes = [0, 1, 23, 24, 255, 256, 257, 65535, 65536, 70000, 5, 300, 30]
    contents = ["\u00e9" * (n // 2) + "x" * (n % 2) for n in sizes]  # two bytes a character, then one
    for seq, content in enumerate(contents, 1):
        conn.execute(
            "INSERT INTO messages(session_id, chat_id, device_id, seq, lamport, role, content, created_at)"
            " VALUES ('s', 'main', 'd', ?, ?, 'user', ?, 1.0)",
            (seq, seq, content),
        )
    run = logrun.read_run(conn, "s", "d", 0, len(sizes))
    assert run.sizes == sizes
    assert run.blob == b"".join(text_head(n) + c.encode() for n, c in zip(sizes, contents))


def test_lamports_are_made_from_the_seqs_when_they_are_the_seqs_plus_one_constant():
    """A device's own operations take the next Lamport value each: lamport - seq is then one constant and
    the lamports are made from the seqs, the column not read; where another device's operation moved the
    clock between two of them it is read in full. Other operations among the messages either way."""
    conn = sqlite3.connect(":memory:")
    for migration in MIGRATIONS:
        conn.executescript(migration)
    lamports = {
        "plain": lambda seq: seq,
        "offset": lambda seq: seq + 5,
        "moved": lambda seq: seq + (0 if seq < 20 else 30),
    }
    for sid, lam in lamports.items():
        for seq in range(1, 41):
            if seq == 17:
                conn.execute(
                    "INSERT INTO ops(session_id, device_id, seq, lamport, kind, body, created_at)"
                    " VALUES (?, 'd', ?, ?, 'chat.create', '{}', 1.0)",
                    (sid, seq, lam(seq)),
                )
                continue
            conn.execute(
                "INSERT INTO messages(session_id, chat_id, device_id, seq, lamport, role, content, created_at)"
                " VALUES (?, 'main', 'd', ?, ?, 'user', 'm', 2.5)",
                (sid, seq, lam(seq)),
            )
    conn.commit()
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    for sid, lam in lamports.items():
        for after, upto in ((0, 40), (0, 16), (17, 40), (5, 30), (18, 19)):
            statements.clear()
            run = logrun.read_run(conn, sid, "d", after, upto)
            assert run.lams == [lam(s) for s in range(after + 1, upto + 1)], (sid, after, upto)
            read_in_full = any("group_concat(lamport)" in s for s in statements)
            assert read_in_full == (sid == "moved" and after < 19 < upto), (sid, after, upto)


def test_a_run_read_keeps_its_first_head_and_contents_as_pieces_through_its_heads_and_tails():
    """The first content's head (not written by group_concat) and the rest are not joined: the run's
    heads and tails (a long push's carried page) are views of the pieces, with the bytes of the joined
    blob, and the join is made only when the blob itself is asked for."""
    conn = sqlite3.connect(":memory:")
    for migration in MIGRATIONS:
        conn.executescript(migration)
    contents = [f"{seq} " + "w" * (seq * 37 % 300) for seq in range(1, 31)]
    for seq, content in enumerate(contents, 1):
        conn.execute(
            "INSERT INTO messages(session_id, chat_id, device_id, seq, lamport, role, content, created_at)"
            " VALUES ('s', 'main', 'd', ?, ?, 'user', ?, 1.0)",
            (seq, seq, content),
        )
    conn.commit()
    want = b"".join(text_head(len(c)) + c.encode() for c in contents)
    offs = logrun.read_run(conn, "s", "d", 0, 30).offsets()
    for i in (0, 1, 7, 29, 30):
        run = logrun.read_run(conn, "s", "d", 0, 30)
        head, tail = run.head(i), run.tail(i)
        assert run._parts is not None and head._parts is not None and tail._parts is not None  # no join made
        assert b"".join(head.blob_views(0, offs[i])) == want[: offs[i]], i
        assert bytes(tail.blob) == want[offs[i] :] and bytes(head.blob) == want[: offs[i]], i
        assert tail.tail(1).seqs == list(range(i + 2, 31)) and bytes(tail.tail(1).blob) == want[offs[min(i + 1, 30)] :]
        assert run._parts is not None and bytes(run.blob) == want and run._parts is None
