"""Automatic checkpoints, one per mark passed: an app that sets a checkpoint interval is given a checkpoint for
each append that takes the session's tokens past a multiple of it, over the conversation as it stood right after
that append. Before, the on-time checkpoint was made over the conversation as it was when it ran: appends that came
meanwhile were folded into it, and marks passed quickly (a pipelined stream: ten appends crossing ten marks) shared
one checkpoint; while the start after a crash (kill -9) made one per mark (storage/missedmarks.py). The same
appends gave other checkpoints depending on whether the daemon had crashed."""

from __future__ import annotations

import json
import sqlite3

import pytest

from conftest import wait_for
from sessiond.client.wsframes import AppendStream, frame
from sessiond.storage.model import Op, RemoteLog

MARKS = 10
INTERVAL = 10
INTERVAL_BIG = 100
REMOTE = "f0f0f0f0f0f0f0f0"  # another device


def _pipelined(d, sid: str, n: int, first: int = 0) -> AppendStream:
    """n appends of INTERVAL tokens each (each passes one mark), sent at once on a pipelined stream."""
    st = AppendStream(d.socket, 10, pipeline=True)
    assert st.sock is not None
    st.sock.sendall(
        b"".join(
            frame(
                json.dumps({"tag": i + 1, "session": sid, "key": f"{sid}-k{first + i}"}).encode()
                + b"\n"
                + json.dumps({"role": "user", "content": f"m{first + i}", "tokens": INTERVAL}).encode()
            )
            for i in range(n)
        )
    )
    return st


def _proven(c, sid: str, n: int) -> list[dict]:
    """The session's checkpoints once one covers its n messages (the last mark's, made after the others)."""
    wait_for(
        lambda: any(k["messages"] == n for k in c.checkpoints(sid)["checkpoints"]),
        timeout=30,
        what="the last mark's checkpoint",
    )
    return c.checkpoints(sid)["checkpoints"]


def _walk_steps(db, sid: str, every: int = 1) -> tuple[int, list]:
    """The SQLite VM steps (counted every `every`) of missedmarks' read of `sid`'s marks due, and what it read."""
    from sessiond.storage import missedmarks

    n = [0]
    with sqlite3.connect(db.path, isolation_level=None) as conn:
        conn.set_progress_handler(lambda: n.__setitem__(0, n[0] + 1), every)
        got = missedmarks._due(conn, db.device_id, sid)
        conn.set_progress_handler(None, every)
    return n[0], got


def _summary(proofs: list[dict], device: str) -> list[tuple]:
    return [(k["number"], k["messages"], k["tokens"], k["frontier"].get(device)) for k in proofs]


def test_pipelined_appends_across_marks_get_a_checkpoint_each(make_daemon):
    d = make_daemon()
    d.start()
    c = d.client()
    sid = c.create_session(name="marks", policy={"checkpoint_interval": INTERVAL})["id"]
    st = _pipelined(d, sid, MARKS)
    try:
        wait_for(lambda: len(c.messages(sid)["messages"]) == MARKS, timeout=30, what="the appends")
        got = _proven(c, sid, MARKS)
    finally:
        st.close()
    held = c.messages(sid)["messages"]
    assert [(k["number"], k["messages"], k["tokens"]) for k in got] == [
        (i + 1, i + 1, (i + 1) * INTERVAL) for i in range(MARKS)
    ], got
    for k, proof in enumerate(got):
        # exactly the messages up to its mark's append: this device's log up to that message
        assert proof["frontier"][proof["device"]] == held[k]["seq"], (k, proof["frontier"])
        assert c.verify_proof(sid, proof)["ok"], proof


def test_a_crash_and_no_crash_give_the_same_checkpoints(make_daemon):
    d = make_daemon()
    d.start()
    c = d.client()
    crashed = c.create_session(name="crashed", policy={"checkpoint_interval": INTERVAL})["id"]
    calm = c.create_session(name="calm", policy={"checkpoint_interval": INTERVAL})["id"]
    d.env["SESSIOND_CRASH_AT"] = "checkpoint.auto"
    d.restart()
    st = _pipelined(d, crashed, MARKS)
    assert d.proc is not None
    d.proc.wait(20)  # killed at the first automatic checkpoint: none of the marks' made
    st.close()
    d.env.pop("SESSIOND_CRASH_AT")
    d.start()
    c = d.client()
    held = len(c.messages(crashed)["messages"])
    assert held >= 1
    if held < MARKS:  # those the daemon had not taken when it died: sent again, on time now
        st = _pipelined(d, crashed, MARKS - held, first=held)
        wait_for(lambda: len(c.messages(crashed)["messages"]) == MARKS, timeout=30, what="the rest")
        st.close()
    after_crash = _proven(c, crashed, MARKS)
    st = _pipelined(d, calm, MARKS)
    try:
        on_time = _proven(c, calm, MARKS)
    finally:
        st.close()
    device = after_crash[0]["device"]
    assert _summary(after_crash, device) == _summary(on_time, device), (after_crash, on_time)
    assert len(on_time) == MARKS
    for sid, proofs in ((crashed, after_crash), (calm, on_time)):
        assert all(c.verify_proof(sid, p)["ok"] for p in proofs)


async def test_each_marks_checkpoint_carries_the_chain_on_from_the_one_before(devices, monkeypatch):
    """The marks' checkpoints made together cost one pass over their messages, not one from the start each (the
    start after a crash hashed the whole conversation again for every mark it made)."""
    from sessiond.sync import proofs

    hashed: list[tuple[bool, int]] = []  # (from the start, messages) of each extend
    real = proofs.extend

    def counted(chain, frontier, rows, *args):
        hashed.append((chain is None, len(rows)))
        return real(chain, frontier, rows, *args)

    monkeypatch.setattr(proofs, "extend", counted)
    a, _ = await devices.open()
    db = devices.dba
    sid = (await db.create_session({"name": "marks", "policy": {"checkpoint_interval": INTERVAL}}))["id"]
    for i in range(MARKS):  # (the daemon's on-time task is not running here: all ten are due together)
        await db.append_messages(sid, [{"role": "user", "content": f"m{i}", "tokens": INTERVAL}])
    made = await a.checkpoint_marks(sid)
    assert [(k["number"], k["messages"], k["tokens"]) for k in made] == [
        (i + 1, i + 1, (i + 1) * INTERVAL) for i in range(MARKS)
    ]
    assert sum(n for _, n in hashed) == MARKS, hashed  # each message hashed once
    assert [start for start, n in hashed if n] == [True] + [False] * (MARKS - 1), hashed
    assert await a.checkpoint_marks(sid) == []  # none due now
    assert [k["number"] for k in await db.checkpoints(sid)] == list(range(1, MARKS + 1))


async def test_one_sessions_marks_are_read_without_walking_the_others(db):
    """The marks due of one session (read after each append that passes one) cost the same however many other
    sessions have marks due: the read walked every active session's row, its latest checkpoint and its messages
    since, once per mark passed (bench/load.py: 1,000 sessions, two marks each, every one read all the others)."""

    async def due_session() -> str:
        sid = (await db.create_session({"name": "marks", "policy": {"checkpoint_interval": INTERVAL}}))["id"]
        for i in range(3):  # three marks passed, no checkpoint made (no daemon here)
            await db.append_messages(sid, [{"role": "user", "content": f"m{i}", "tokens": INTERVAL}])
        return sid

    one = await due_session()
    alone, got = _walk_steps(db, one, 10)
    assert [s for s, _ in got] == [one] and len(got[0][1]) == 3, got
    for _ in range(40):
        await due_session()
    among, got_among = _walk_steps(db, one, 10)
    assert got_among == got
    assert among <= alone + 2, (alone, among)  # before: +24 (tens of steps: the 40 others walked)


async def test_the_marks_walk_reads_each_message_once_without_a_lookup(db):
    """The walk of one session's marks due reads the messages since its latest checkpoint, and which of them ended
    an append that passed a mark (mark_ends: a handful of rows): read with a lookup of mark_ends per message (a
    LEFT JOIN), each message cost ~14 SQLite VM steps more, half again the read of the message itself."""
    sid = (await db.create_session({"name": "walk", "policy": {"checkpoint_interval": 1000}}))["id"]

    async def append(k: int, tokens: int) -> None:
        for i in range(k):
            await db.append_messages(sid, [{"role": "user", "content": f"m{i}", "tokens": tokens}])

    await append(10, 100)  # a mark passed at the tenth
    few, got = _walk_steps(db, sid)
    assert [len(f) for _, f in got] == [1], got
    await append(60, 1)  # 60 more messages since, no mark
    many, got_many = _walk_steps(db, sid)
    assert got_many == got
    assert (many - few) / 60 < 34, (few, many)  # before: ~41 a message (the sum ~16, the read ~25); now ~27


async def test_the_marks_walk_charges_each_message_once(db, monkeypatch):
    """The walk after each append that passed a mark (on the bulk-read thread, which the event loop takes the GIL
    from in turn) counted each message's charge twice: once for the tokens before the messages since the latest
    checkpoint, again for each append's run; counted once, the two sums are of the same list."""
    from sessiond.storage import missedmarks

    sid = (await db.create_session({"name": "walk", "policy": {"checkpoint_interval": 1000}}))["id"]
    for i in range(70):  # a mark passed at the tenth, 60 more messages since
        await db.append_messages(sid, [{"role": "user", "content": f"m{i}", "tokens": 100 if i < 10 else 1}])
    charged = []
    real = missedmarks.row_charge
    monkeypatch.setattr(missedmarks, "row_charge", lambda *a: charged.append(1) or real(*a))
    got = await db.missed_checkpoints(sid)
    assert [len(f) for _, f in got] == [1], got
    assert len(charged) == 70, len(charged)  # before: 140


def test_the_marks_walk_makes_one_python_call_a_message(monkeypatch):
    """The walk's Python work per message since the latest checkpoint (it runs on the bulk-read thread after each
    append that passes a mark, taking the GIL from the event loop in turn): one call, the message's charge; its
    append's time and the ends' order were a call or a generator step more each (~5 a message)."""
    import sys

    from sessiond.storage import missedmarks

    def calls(n: int) -> int:
        # this device's appends of one message each, a second apart, after the session was made; a mark passed
        # at the tenth (its end noted); each row: rowid, device, seq, tokens, extra, created_at, noted end
        since = [(i, "me", i, 100 if i <= 10 else 1, None, 1000.0 + i) for i in range(1, n + 1)]
        events = []
        sys.setprofile(lambda frame, event, arg: events.append(1) if event == "call" else None)
        try:
            at = missedmarks._ended(since, [10])
            rows = [(*r, at.get(r[2], 0)) for r in since]
            cuts = missedmarks._cuts("me", 10 * 100 + (n - 10), 999.0, 1000, {}, {"me": n}, rows)
        finally:
            sys.setprofile(None)
        assert cuts == [{"me": 10}], cuts
        return len(events)

    few, many = calls(50), calls(150)
    assert (many - few) / 100 <= 1, (few, many)  # before: ~4 a message


async def _pulled(db, sid: str, rows: list[tuple[int, str | None]]) -> None:
    """Another device's messages (tokens, extra JSON text) arriving here after this device's appends so far."""
    have = await db.read_one("SELECT coalesce(max(seq), 0), max(created_at) FROM messages WHERE device_id=?", (REMOTE,))
    seq, t = have[0], (await db.read_one("SELECT created_at FROM sessions WHERE id=?", (sid,)))[0]
    log = RemoteLog(REMOTE, [], [], 0)
    for i, (tokens, extra) in enumerate(rows, seq + 1):
        log.messages.append((sid, "main", REMOTE, i, 1000 + i, "assistant", "r", tokens, t + 1 + i, extra))
    log.last_seq = seq + len(rows)
    await db.apply_remote(sid, {REMOTE: log})


async def _marked(db, sid: str, tokens: int, interval: int = INTERVAL_BIG) -> tuple[bool, int]:
    """An append of `tokens` by this device: whether it passed a mark of `interval`, its last seq."""
    before = (await db.read_one("SELECT tokens_used FROM sessions WHERE id=?", (sid,)))[0]
    [m] = await db.append_messages(sid, [{"role": "user", "content": "mine", "tokens": tokens}])
    return before // interval != (before + tokens) // interval, m["seq"]


async def test_a_mark_passed_then_another_devices_negative_tokens_still_gets_its_checkpoint(db):
    """Another device's log may hold a message of negative tokens (any integer is read from a page). The append
    that passed a mark judged the tokens as they were then; the walk of the marks due counts them in the order
    they were written here, and so finds that mark. The read's SQL pre-check judged the net since the latest
    checkpoint instead: negative tokens pulled after the mark (before its checkpoint ran, or before a crash's
    restart) brought the session under the interval, and the mark's checkpoint was never made."""
    sid = (await db.create_session({"name": "neg", "policy": {"checkpoint_interval": INTERVAL_BIG}}))["id"]
    assert (await _marked(db, sid, 60))[0] is False
    passed, end = await _marked(db, sid, 50)  # 60 -> 110: passes 100
    assert passed
    await _pulled(db, sid, [(-30, None)])  # 110 -> 80
    assert (await db.read_one("SELECT tokens_used FROM sessions WHERE id=?", (sid,)))[0] == 80
    assert await db.missed_checkpoints(sid) == [(sid, [{db.c.device_id: end}])]  # (the pulled one came after)
    # and the start's read of every session (after a kill -9 before that checkpoint) finds it too
    assert await db.missed_checkpoints() == [(sid, [{db.c.device_id: end}])]


async def test_an_extra_sqlite_reads_as_invalid_is_charged_as_the_append_charged_it(db):
    """Another device's extra fields as SQLite and Python read them differently: a NaN (which Python's json
    writes and reads) makes the text invalid JSON to SQLite, while the session's tokens counted its usage's
    prompt tokens (row_charge). The marks due are those the appends passed as they counted, either way."""
    sid = (await db.create_session({"name": "nan", "policy": {"checkpoint_interval": INTERVAL_BIG}}))["id"]
    odd = '{"usage": {"prompt_tokens": 90}, "score": NaN}'
    assert json.loads(odd)["usage"]["prompt_tokens"] == 90  # (Python reads it)
    assert (await db.read_one("SELECT json_valid(?)", (odd,)))[0] == 0  # (SQLite does not)
    await _pulled(db, sid, [(0, odd)])  # 0 -> 90, as the pull counted it
    assert (await db.read_one("SELECT tokens_used FROM sessions WHERE id=?", (sid,)))[0] == 90
    passed, end = await _marked(db, sid, 20)  # 90 -> 110: passes 100
    assert passed
    assert await db.missed_checkpoints(sid) == [(sid, [{db.c.device_id: end, REMOTE: 1}])]
    assert await db.missed_checkpoints() == [(sid, [{db.c.device_id: end, REMOTE: 1}])]
    # another's after the mark, invalid to SQLite and 150 to Python: the mark is still the one passed
    await _pulled(db, sid, [(0, odd.replace("90", "150"))])
    assert await db.missed_checkpoints(sid) == [(sid, [{db.c.device_id: end, REMOTE: 1}])]
    assert await db.missed_checkpoints() == [(sid, [{db.c.device_id: end, REMOTE: 1}])]
    # and an append of this device's that passes none after it is no mark
    assert (await _marked(db, sid, 5))[0] is False
    assert await db.missed_checkpoints(sid) == [(sid, [{db.c.device_id: end, REMOTE: 1}])]


async def _file_imported(db, monkeypatch, policy: dict, batch: int, status: str = "active") -> str:
    """A session file of ten messages of 60 tokens each, each at its own time after the session was made (as an
    export's are), imported in appends of `batch` messages; no checkpoint made (no daemon here: as a kill -9, or a
    stop, before the import's own checkpoint ran)."""
    from sessiond.daemon import formats

    monkeypatch.setattr(formats, "APPEND_BATCH", batch)
    t = 1_700_000_000.0
    msgs = [
        {"id": f"dev0-{i}", "chat": "main", "role": "user", "content": f"m{i}", "tokens": 60, "created_at": t + i}
        for i in range(1, 11)
    ]
    session = {"id": "filed", "name": "filed", "created_at": t, "policy": policy, "status": status}
    chats = [{"id": "main", "name": "main", "created_at": t}]
    data = {"format": formats.JSON_FORMAT, "session": session, "chats": chats, "messages": msgs}
    [made], _ = await formats.import_file(db, data, "json", db.c.estimate, remove=db.delete_session)
    assert made["tokens_used"] == 600  # six marks of 100 passed, by one import
    return made["id"]


@pytest.mark.parametrize("status", ["active", "paused"])
async def test_an_imports_checkpoint_lost_is_made_once_over_the_whole_import(devices, monkeypatch, status):
    """An import from a file is due one checkpoint, over all of it, made as it ends (Operations.schedule_checkpoint,
    in memory). Lost (a kill -9, a stop, a failure of that checkpoint), the start's walk (or the next mark's) took each
    of the file's messages for an append of its own (each has its own time, after the session's creation as the file
    gives it): one checkpoint per mark the file's tokens passed, six here, where the daemon that did not crash made
    one. The import notes its end as an append that passed a mark does: the walk ends it there, as far as the log
    went as it ended (a paused file's status is an operation after its messages), and makes the on-time one."""
    a, _ = await devices.open()
    db = devices.dba
    sid = await _file_imported(db, monkeypatch, {"checkpoint_interval": INTERVAL_BIG}, 5000, status)
    last = (await db.read_one("SELECT last_seq FROM logs WHERE session_id=? AND device_id=?", (sid, db.device_id)))[0]
    assert await db.missed_checkpoints(sid) == [(sid, [{db.c.device_id: last}])]
    assert await db.missed_checkpoints() == [(sid, [{db.c.device_id: last}])]
    made = await a.checkpoint_marks(sid)  # (as the start makes it)
    assert [(k["messages"], k["tokens"]) for k in made] == [(10, 600)]
    assert (await a.checkpoint_asked(sid))["made"] is False  # the one the import's own would have been


async def test_an_imports_end_is_found_past_a_compaction_between_its_appends(db, monkeypatch):
    """A long file goes in as several appends; a context budget compacts the chat between two (an operation of this
    device's between their messages, a gap in the seqs): the import's end is still the one its first mark ends at."""
    policy = {"checkpoint_interval": INTERVAL_BIG, "max_context_tokens": 250}
    sid = await _file_imported(db, monkeypatch, policy, 4)
    ops = await db.read_one("SELECT count(*) FROM ops WHERE session_id=? AND kind='chat.update'", (sid,))
    assert ops[0] >= 1  # (compacted between the appends)
    last = (await db.read_one("SELECT max(seq) FROM messages WHERE session_id=?", (sid,)))[0]
    assert await db.missed_checkpoints(sid) == [(sid, [{db.c.device_id: last}])]


@pytest.mark.parametrize("interval", ["100", 100.5, -100, True, 2**41])
async def test_another_devices_interval_that_is_no_count_is_the_default_to_the_append_and_the_walk(db, interval):
    """A session's checkpoint interval is a whole number from 1 (the API takes no other), but another device's
    policy is stored as its operation gives it. The append read it in Python (`used // interval`: a text failed every
    append here with a TypeError, a fraction or a negative one judged other marks), the walk of the marks due in SQL
    and then int() (a text made it raise a ValueError: with a mark due, the start's finish_marks failed and the
    daemon did not start). Both read such a value as no interval: the default, as for none."""
    sid = (await db.create_session({"name": "odd", "policy": {"checkpoint_interval": INTERVAL_BIG}}))["id"]
    t = (await db.read_one("SELECT created_at FROM sessions WHERE id=?", (sid,)))[0]
    op = Op(sid, REMOTE, 1, 1000, "session.update", {"policy": {"checkpoint_interval": interval}}, t + 1)
    await db.apply_remote(sid, {REMOTE: RemoteLog(REMOTE, [], [op], 1)})
    assert await db.missed_checkpoints(sid) == []
    await _marked(db, sid, 999, 1000)  # (the default: 1000)
    assert await db.missed_checkpoints(sid) == []  # no mark passed, as the append judged it: no end noted
    passed, end = await _marked(db, sid, 2, 1000)  # 999 -> 1001
    assert passed and await db.read_one("SELECT 1 FROM mark_ends WHERE session_id=? AND seq=?", (sid, end))
    assert await db.missed_checkpoints(sid) == [(sid, [{db.c.device_id: end, REMOTE: 1}])]
    assert await db.missed_checkpoints() == [(sid, [{db.c.device_id: end, REMOTE: 1}])]
