"""The push's bulk read (storage/logrun.py) takes the messages' columns in seq order without reading their
seqs: that holds because its statement walks the messages_origin index, which this checks."""

from __future__ import annotations

import sqlite3

from sessiond.storage import logrun
from sessiond.storage.schema import MIGRATIONS


def test_the_run_statement_walks_the_seq_index():
    conn = sqlite3.connect(":memory:")
    for migration in MIGRATIONS:
        conn.executescript(migration)
    for sql in (logrun._RUN_SQL, logrun._SEQS_SQL):
        plan = " ".join(row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, ("s", "d", 0, 10)))
        assert "INDEX messages_origin (session_id=? AND device_id=? AND seq>? AND seq<?)" in plan, plan
        assert "TEMP B-TREE" not in plan, plan
