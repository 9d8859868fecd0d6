"""Devices whose clocks disagree, and a clock that jumps (storage/clock.py: the daemon's one wall clock, and
the test clock that sets it apart from the machine's). What is judged by the wall clock is a calendar instant
(an expiry, a share code's end); what is waited or measured is monotonic, so a step of the wall clock
neither stalls nor hurries it."""

from __future__ import annotations

import email.utils
import os
import time

import pytest

from clocks import DAY, Clock, clocked
from conftest import DaemonProc, cli_json, run_cli, wait_for
from servers.kubo import Node, make_rpc_app
from servers.s5portal import Portal, Threaded, make_app
from sessiond.client import ApiError
from sessiond.storage.applyremote import IMPORT_CHUNK
from sessiond.storage.clock import ENV
from test_ipns_republish import FORGETS, REPUT, _kept_records, assert_imports, kubo_pair, served_after
from test_reimport import _write, chatgpt_continued, fixture

HOUR = 3600
LATE = 15.0  # seconds past its expiry a session may still read as active on a busy machine (the defects these tests
# catch held an end for an hour or a day: a generous margin tells them apart all the same)


def test_a_daemon_stamps_by_its_own_clock(make_daemon):
    d, _clock = clocked(make_daemon, -HOUR)
    c = d.start().client()
    made = c.create_session(name="behind")["created_at"]
    assert abs(made - (time.time() - HOUR)) < 60, made


def test_a_stray_clock_variable_is_refused_at_start(make_daemon, tmp_path):
    # (a production daemon's clock is never set by a variable left in its environment: only a test clock
    # file, which says what it is in its first line, is taken)
    plain = tmp_path / "offset"
    plain.write_text("3600\n")
    d: DaemonProc = make_daemon()
    d.env[ENV] = str(plain)
    with pytest.raises(RuntimeError, match="not a test clock file"):
        d.start()
    assert not os.path.exists(d.socket)


def test_a_clock_stepped_back_a_day_leaves_the_cleanup_on_time(make_daemon):
    # the clean-up's last run, a day ahead of the clock after an NTP step back, must not hold its next run
    # (or any session's end) for that day
    d, clock = clocked(make_daemon, cleanup_interval=HOUR)
    c = d.start().client()
    first = c.create_session(name="first", expires_in=1)["id"]
    wait_for(lambda: c.get_session(first)["status"] == "ended", timeout=1 + LATE, what="the first's end")
    clock.step(-DAY)
    sid = c.create_session(name="after the step", expires_in=1)["id"]
    wait_for(lambda: c.get_session(sid)["status"] == "ended", timeout=1 + LATE, what="its end at its expiry")


def test_a_device_behind_waits_a_store_s_retry_after_date_as_the_store_meant_it(make_daemon, tmp_path):
    # a store's Retry-After as an HTTP-date is a time on the store's clock: judged against the answer's own
    # Date, a device 10 minutes behind waits the 3 s asked for, not 10 minutes more (its pushes held meanwhile;
    # a push that came after the date still tells: 10 minutes behind, main read it as 10 minutes ahead)
    p = Portal()
    server = Threaded(make_app(p)).start()
    p.authority = f"127.0.0.1:{server.port}"
    try:
        d, _clock = clocked(make_daemon, -600, store=f"s5+http://{p.authority}")
        d.start()
        p.faults.retry_after = email.utils.formatdate(time.time() + 3, usegmt=True)
        p.faults.status, p.faults.times = 429, 1
        with d.client() as c:
            sid = c.create_session(name="limited", initial_messages=[{"role": "user", "content": "hi"}])["id"]
        wait_for(lambda: p.faults.times == 0, timeout=20, what="the store's 429")
        res = run_cli(d.home, "sync", sid, "--wait", "--timeout", "60")
        assert res.returncode == 0 and "all pushed and pulled" in res.stdout, res
    finally:
        d.stop()
        server.stop()


def test_a_writer_whose_clock_is_behind_keeps_a_shared_session_alive_on_the_others(make_daemon, store_dir):
    # B's clock is an hour behind: its writes are stamped an hour ago. Counted as activity at those stamps,
    # A saw the session idle past its timeout while B wrote to it, and ended it for every device.
    # Another device's write is activity here from when it arrives.
    store = f"file://{store_dir}"
    a, clock_a = clocked(make_daemon, 0, store=store, cleanup_interval=HOUR)
    b, _clock_b = clocked(make_daemon, -HOUR, store=store)
    ca, cb = a.start().client(), b.start().client()
    sid = ca.create_session(name="shared", idle_timeout=60)["id"]
    cb.import_code(ca.share(sid, write=True)["code"])
    clock_a.step(45)  # 45 s without a write on A
    cb.append(sid, "user", "still here")  # B's write, stamped an hour ago by B's clock
    wait_for(
        lambda: [m["content"] for m in ca.messages(sid)["messages"]][-1:] == ["still here"],
        timeout=20,
        what="A has B's write",
    )
    clock_a.step(90)  # 90 s after A's own last write, 45 s after B's arrived
    assert ca.get_session(sid)["status"] == "active"
    ca.append(sid, "assistant", "answered")  # (refused as expired before: idle since A's own last write)


def test_a_clock_stepped_back_keeps_putting_the_heads_records_before_the_dht_forgets_them(tmp_path):
    # the records a device keeps are put again `every` seconds after their last put, noted on the wall clock:
    # stepped back a day, that put looked a day in the future, none was put again for that day and more,
    # and Kubo's DHT (48 h after a put; here FORGETS seconds) forgot the session's heads
    clock = Clock(str(tmp_path / "clock-a"), 0.0)
    env = {**REPUT, ENV: clock.path}
    with kubo_pair(tmp_path, "stepped", node=Node(max_record_age=FORGETS), a_env=env) as (node, a, b, sid, code):
        wait_for(lambda: _kept_records(a) == 2, timeout=20, what="A keeping its two heads' records")
        clock.step(-DAY)
        served = served_after(node, time.monotonic())
        assert len(served) == 2 and all(served.values()), served
        assert_imports(b, sid, code)


def test_a_clock_stepped_back_counts_idleness_from_the_step(make_daemon):
    # a session's last activity, stamped before the clock was stepped back a day, lay a day in the future: its
    # idle timeout (3 s) ran out a day and 3 s later. Idleness counts from the step instead.
    d, clock = clocked(make_daemon, cleanup_interval=HOUR)
    c = d.start().client()
    sid = c.create_session(name="idle", idle_timeout=3)["id"]
    clock.step(-DAY)
    # (the clean-up wakes at the 3 s the session was due by the clock before the step, sees the step, and
    # counts 3 s from there)
    wait_for(lambda: c.get_session(sid)["status"] == "ended", timeout=6 + LATE, what="its end after the step")


def test_a_clock_stepped_forward_ends_what_expired_by_it(make_daemon):
    # a session due in an hour, the clock then stepped two hours on (NTP, or a suspend: the monotonic clock
    # the clean-up sleeps on does not count one): it has expired, and ends within the clean-up's look at
    # the wall clock (WALL_LOOK, 10 s; TEST_WALL_LOOK, 1 s, with a test clock), not an hour later when its monotonic
    # sleep runs out
    d, clock = clocked(make_daemon, cleanup_interval=HOUR)
    c = d.start().client()
    sid = c.create_session(name="an hour", expires_in=HOUR)["id"]
    for _ in range(3):  # (a few requests answered: the clean-up has planned its sleep for the new session)
        assert c.get_session(sid)["status"] == "active"
    clock.step(2 * HOUR)
    wait_for(lambda: c.get_session(sid)["status"] == "ended", timeout=10 + LATE, what="its end after the step")


def test_a_clock_stepped_forward_does_not_end_a_session_idle_only_seconds(make_daemon):
    # an idle timeout is real elapsed time: a session written to seconds ago, the clock then stepped an hour on
    # (a machine with no RTC set right by NTP, a clock set by hand), was idle past its timeout by the wall clock:
    # its next write was refused as expired and the clean-up ended it at once. It ends at its idle timeout of
    # real time after its last activity, and the times shown say so.
    d, clock = clocked(make_daemon, cleanup_interval=HOUR)
    c = d.start().client()
    # (8 s: what is between the append and the look at its status below, a clean-up run, with room for a
    # loaded machine; the defect ended it an hour early by the wall clock, so any timeout well under that tells)
    sid = c.create_session(name="idle", idle_timeout=8)["id"]
    c.append(sid, "user", "just now")
    clock.step(HOUR)
    other = c.create_session(name="ends in a second", expires_in=1)["id"]  # (a clean-up run after the step)
    wait_for(lambda: c.get_session(other)["status"] == "ended", timeout=10 + LATE, what="a clean-up after the step")
    s = c.get_session(sid)
    assert s["status"] == "active", s
    assert abs(s["last_activity"] - (time.time() + HOUR)) < 15, s  # (minutes ago by the clock as it reads now)
    c.append(sid, "user", "still here")  # (refused as expired before)
    wait_for(lambda: c.get_session(sid)["status"] == "ended", timeout=8 + LATE, what="its end after 8 s idle")


def test_cleanup_older_than_counts_real_idleness_across_a_clock_step_forward(make_daemon):
    # `cleanup --older-than 7d` deleted a session written to a minute ago once the clock was stepped 8 days on
    d, clock = clocked(make_daemon)
    c = d.start().client()
    sid = c.create_session(name="in use")["id"]
    c.append(sid, "user", "a minute ago")
    clock.step(8 * DAY)
    assert c.cleanup(7 * DAY, dry_run=True)["sessions"] == []
    assert c.cleanup(7 * DAY)["sessions"] == []
    assert c.get_session(sid)["status"] == "active"


def test_a_share_code_s_expiry_is_judged_by_the_importer_s_clock_and_a_refusal_says_so(make_daemon, store_dir):
    # `share --expires 10m` writes an instant on the sharer's clock into the code; the importer judges it by
    # its own. Made 5 minutes ago (the sharer's clock 5 minutes behind now), it is still taken by a device 10
    # minutes behind; a device 10 minutes ahead refuses it, and says by which clock, so that a wrong clock
    # is not mistaken for a late code
    store = f"file://{store_dir}"
    a, _ = clocked(make_daemon, -5 * 60, store=store)
    behind, _ = clocked(make_daemon, -10 * 60, store=store)
    ahead, _ = clocked(make_daemon, 10 * 60, store=store)
    ca = a.start().client()
    sid = ca.create_session(name="shared")["id"]
    code = ca.share(sid, expires_in=10 * 60)["code"]
    assert behind.start().client().import_code(code)["session"] == sid
    with pytest.raises(ApiError) as e:
        ahead.start().client().import_code(code)
    msg = e.value.message
    assert "expired" in msg and "this device's clock" in msg and "timedatectl" in msg, msg


def test_doctor_names_a_device_s_clock_ten_minutes_behind_its_store_s(make_daemon):
    # (sound on main: doctor compares this device's clock with a network store's Date; here the device is
    # the one whose clock is off, by its test clock)
    server = Threaded(make_rpc_app(Node())).start()
    try:
        d, _clock = clocked(make_daemon, -600, store=f"ipfs+http://127.0.0.1:{server.port}")
        rep = d.start().client().doctor(verify=False)
        clock = next(f for f in rep["findings"] if f["check"] == "clock")
        assert clock["level"] == "problem" and "behind" in clock["message"], clock
        assert "session and share-code expiries" in clock["message"] and "timedatectl" in clock["fix"], clock
    finally:
        d.stop()
        server.stop()


def test_end_names_its_own_final_checkpoint_last_beside_a_writer_s_whose_clock_is_ahead(make_daemon, store_dir):
    # checkpoints were listed by their writers' clocks: B's, made before A's end by a clock an hour ahead,
    # came after A's final one, and `end` said B's was the last. They are listed in the order of the history
    # they cover (their frontiers), whatever the clocks.
    store = f"file://{store_dir}"
    a, _ = clocked(make_daemon, 0, store=store)
    b, _ = clocked(make_daemon, HOUR, store=store)
    ca, cb = a.start().client(), b.start().client()
    sid = ca.create_session(name="shared")["id"]
    ca.append(sid, "user", "from A")
    mine = ca.checkpoint(sid)  # A's #1
    cb.import_code(ca.share(sid, write=True)["code"])
    cb.append(sid, "user", "from B")
    theirs = cb.checkpoint(sid)  # B's #1, an hour ahead
    wait_for(
        lambda: any(p["device"] == theirs["device"] for p in ca.checkpoints(sid)["checkpoints"]),
        timeout=20,
        what="B's checkpoint on A",
    )
    res = run_cli(a.home, "end", sid)  # A's final checkpoint: #2, over B's message too
    assert res.returncode == 0, res
    listed = ca.checkpoints(sid)["checkpoints"]
    final = max((p for p in listed if p["device"] == mine["device"]), key=lambda p: p["number"])
    assert final["number"] == 2 and final["messages"] == 2, final
    assert f"(last: #2 {final['hash'][:16]}" in res.stdout, res.stdout
    assert [(p["device"], p["number"]) for p in listed] == [
        (mine["device"], 1),
        (theirs["device"], 1),
        (mine["device"], 2),
    ]


def test_messages_keep_their_causal_order_across_devices_whose_clocks_disagree(make_daemon, store_dir):
    # (sound on main: messages are ordered by Lamport clock, device and seq, never by time) B is an hour
    # behind: each of its answers is stamped before the question it answers, and still comes after it
    store = f"file://{store_dir}"
    a, _ = clocked(make_daemon, 0, store=store)
    b, _ = clocked(make_daemon, -HOUR, store=store)
    ca, cb = a.start().client(), b.start().client()
    sid = ca.create_session(name="shared")["id"]
    cb.import_code(ca.share(sid, write=True)["code"])
    said: list[str] = []
    for n in range(3):
        for who, c, other in (("A", ca, cb), ("B", cb, ca)):
            text = f"{who}{n}"
            c.append(sid, "user", text)
            said.append(text)
            wait_for(
                lambda o=other: [m["content"] for m in o.messages(sid)["messages"]] == said,
                timeout=20,
                what=f"{text} on the other device",
            )
    for c in (ca, cb):
        got = c.messages(sid)["messages"]
        assert [m["content"] for m in got] == said
    times = {m["content"]: m["created_at"] for m in ca.messages(sid)["messages"]}
    assert times["B0"] < times["A0"]  # (B's clock: its stamps are an hour behind A's)


def test_a_device_whose_clock_is_ahead_ends_a_shared_session_at_its_expiry_for_every_device(make_daemon, store_dir):
    # (as the README's Clocks says: an expiry is an instant judged by each device's clock, and the end syncs)
    # B made the session to expire in an hour; A's clock is two hours ahead: A ends it as it imports it, and
    # B sees it ended. (A left it active until cleanup_interval, an hour: its clean-up took an expiry before
    # its last run for one it had passed, and did not look at the session that arrived already past it.)
    store = f"file://{store_dir}"
    a, _ = clocked(make_daemon, 2 * HOUR, store=store, cleanup_interval=HOUR)
    b, _ = clocked(make_daemon, 0, store=store, cleanup_interval=HOUR)
    cb = b.start().client()
    sid = cb.create_session(name="an hour", expires_in=HOUR)["id"]
    code = cb.share(sid, write=True)["code"]
    ca = a.start().client()
    ca.import_code(code)
    wait_for(lambda: ca.get_session(sid)["status"] == "ended", timeout=10, what="A's end of it")
    wait_for(lambda: cb.get_session(sid)["status"] == "ended", timeout=30, what="the end on B")
    with pytest.raises(ApiError) as e:
        cb.append(sid, "user", "too late")
    assert e.value.code == "expired", e.value


def test_an_export_imported_again_finds_its_chat_beside_one_a_device_behind_made(make_daemon, store_dir, tmp_path):
    # the chat an import wrote a conversation to was taken as the session's first chat by creation time: a
    # chat another device made in it, by a clock an hour behind, came first, and the export imported again
    # was compared with that chat, said diverged, and made a session of its own instead of appending
    store = f"file://{store_dir}"
    a, _ = clocked(make_daemon, 0, store=store)
    b, _ = clocked(make_daemon, -HOUR, store=store)
    a.start()
    first = fixture("chatgpt_conversations.json")
    made = cli_json(a.home, "import-file", _write(tmp_path, "a.json", first), "--format", "chatgpt")
    sid = made["sessions"][0]["id"]
    ca, cb = a.client(), b.start().client()
    cb.import_code(ca.share(sid, write=True)["code"])
    cb.create_chat(sid, name="aside")
    wait_for(lambda: len(ca.list_chats(sid)["chats"]) == 2, timeout=20, what="B's chat on A")
    later = [chatgpt_continued(first[0], "One more question?", "One more answer."), *first[1:]]
    again = cli_json(a.home, "import-file", _write(tmp_path, "b.json", later), "--format", "chatgpt")
    assert again["sessions"] == [] and again["diverged"] == [], again
    assert [(x["session"], x["messages"]) for x in again["appended"]] == [(sid, 2)], again


def test_a_long_session_imported_from_a_writer_whose_clock_is_behind_is_not_ended_at_once(make_daemon, store_dir):
    # An import of a session of more than IMPORT_CHUNK messages goes in in several transactions: its activity
    # was its writer's stamps there (an hour ago by A's clock), where a shorter one's is its arrival. B, whose
    # clean-up ends a session that arrives past its idle timeout at once, ended the long one for every device
    # while A was writing to it.
    store = f"file://{store_dir}"
    a, _clock_a = clocked(make_daemon, -HOUR, store=store)
    b, _clock_b = clocked(make_daemon, 0, store=store, cleanup_interval=HOUR)
    ca, cb = a.start().client(), b.start().client()
    sid = ca.create_session(name="long", idle_timeout=1800)["id"]
    ca.append_many(sid, [{"role": "user", "content": f"m{i}"} for i in range(IMPORT_CHUNK + 1)])
    cb.import_code(ca.share(sid, write=True)["code"])
    assert len(cb.messages(sid, limit=IMPORT_CHUNK + 1)["messages"]) == IMPORT_CHUNK + 1
    other = cb.create_session(name="ends in a second", expires_in=1)["id"]  # (a clean-up run after the import)
    wait_for(lambda: cb.get_session(other)["status"] == "ended", timeout=1 + LATE, what="B's clean-up run")
    assert cb.get_session(sid)["status"] == "active"
    ca.append(sid, "user", "still here")  # (refused as expired once B's end reached A)


def test_a_pull_that_brings_nothing_new_leaves_the_activity_where_it_was(make_daemon, store_dir):
    # Only what arrives is activity here: the same code imported again brings A's messages, all here already.
    # Their stamps (an hour ahead by A's clock) were taken as B's last activity, keeping the session alive an
    # hour past its idle timeout (and B's next clean-up saying its clock was stepped back).
    store = f"file://{store_dir}"
    a, _clock_a = clocked(make_daemon, HOUR, store=store)
    b, _clock_b = clocked(make_daemon, 0, store=store, cleanup_interval=HOUR)
    ca, cb = a.start().client(), b.start().client()
    sid = ca.create_session(name="ahead", idle_timeout=1800)["id"]
    ca.append(sid, "user", "from an hour ahead")
    code = ca.share(sid, write=True)["code"]
    cb.import_code(code)
    arrived = cb.get_session(sid)["last_activity"]
    assert arrived < time.time() + 60, arrived  # (its arrival, by B's clock)
    cb.import_code(code)  # (nothing new)
    assert cb.get_session(sid)["last_activity"] == arrived


def test_a_clock_variable_naming_a_fifo_is_refused_at_start_not_waited_on(make_daemon, tmp_path):
    # (reading a FIFO waits for a writer: the start hung, its socket never made, until `start` gave up)
    fifo = tmp_path / "clock"
    os.mkfifo(fifo)
    d: DaemonProc = make_daemon()
    d.env[ENV] = str(fifo)
    with pytest.raises(RuntimeError, match="not a test clock file"):
        d.start()
    assert not os.path.exists(d.socket)
