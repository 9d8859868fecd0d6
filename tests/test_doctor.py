"""`sessiond doctor` (issue 18): a healthy home is all ok; a key file open to others, a store that is
down and a damaged object in the store are each a problem naming its fix; without a daemon the home's
files are still checked."""

from __future__ import annotations

import json
import os
import re

import pytest

from conftest import DaemonProc, run_cli
from servers.kubo import Node, make_rpc_app
from servers.s5portal import Threaded
from sessiond.daemon.doctor import PROBE, check_clock
from sessiond.stores.cid import digest


def doctor(home: str, *extra: str) -> tuple[int, dict]:
    res = run_cli(home, "doctor", "--json", *extra)
    return res.returncode, json.loads(res.stdout)


def problems(report: dict) -> list[dict]:
    return [f for f in report["findings"] if f["level"] == "problem"]


@pytest.fixture(scope="module")
def healthy(tmp_path_factory):
    d = DaemonProc(str(tmp_path_factory.mktemp("doc") / "home")).start()
    c = d.client()
    sid = c.create_session(name="doctor", initial_messages=[{"role": "user", "content": "hello"}])["id"]
    c.append_many(sid, [{"role": "user", "content": f"m{i}"} for i in range(20)])
    assert c.sync(sid, wait=True, timeout=20)["complete"]
    yield d, sid
    d.stop()


def test_a_healthy_home_is_all_ok(healthy):
    d, _ = healthy
    code, rep = doctor(d.home)
    assert code == 0 and rep["ok"] and rep["daemon"], rep
    assert {f["level"] for f in rep["findings"]} == {"ok"}
    checks = {f["check"] for f in rep["findings"]}
    assert {"home", "socket", "keys", "store", "clock", "push", "verify"} <= checks
    clock = next(f for f in rep["findings"] if f["check"] == "clock")
    assert "folder store" in clock["message"]  # skipped, with a note
    text = run_cli(d.home, "doctor")
    assert text.returncode == 0 and "no problems found" in text.stdout


def test_a_key_file_open_to_others_is_a_problem_naming_chmod(healthy):
    d, sid = healthy
    key = os.path.join(d.home, "keys", "sessions", sid + ".key")
    os.chmod(key, 0o644)
    try:
        code, rep = doctor(d.home, "--no-verify")
        assert code == 1 and not rep["ok"]
        (p,) = problems(rep)
        assert p["check"] == "keys" and key in p["message"] and p["fix"] == f"chmod 600 {key}"
        text = run_cli(d.home, "doctor", "--no-verify")
        assert text.returncode == 1 and f"fix: chmod 600 {key}" in text.stdout
    finally:
        os.chmod(key, 0o600)


def test_the_database_and_logs_open_to_others_are_problems_naming_chmod(healthy):
    """The database (every conversation, and its -wal and -shm) and the logs are checked as the key files
    are: a home copied or restored with the umask's 0644 is told what to chmod."""
    d, _ = healthy
    paths = [os.path.join(d.home, "sessions.db"), os.path.join(d.home, "logs", "sessiond.log")]
    paths += [
        p
        for p in (os.path.join(d.home, "sessions.db-wal"), os.path.join(d.home, "sessions.db-shm"))
        if os.path.exists(p)
    ]
    for p in paths:
        os.chmod(p, 0o644)
    try:
        code, rep = doctor(d.home, "--no-verify")
        assert code == 1 and not rep["ok"], rep
        fixes = {p["fix"] for p in problems(rep)}
        assert fixes == {f"chmod 600 {p}" for p in paths}, rep
    finally:
        for p in paths:
            os.chmod(p, 0o600)
    code, rep = doctor(d.home, "--no-verify")
    assert code == 0 and rep["ok"], rep


def test_a_damaged_object_names_the_session_failing_verify(healthy):
    d, sid = healthy
    objects = os.path.join(d.home, "store", "objects")
    saved = {}
    for folder, _, names in os.walk(objects):
        for name in names:
            if name != digest(PROBE).hex():
                path = os.path.join(folder, name)
                with open(path, "rb") as f:
                    saved[path] = f.read()
                with open(path, "r+b") as f:
                    f.write(bytes([saved[path][0] ^ 1]))
    try:
        code, rep = doctor(d.home)
        assert code == 1
        (p,) = problems(rep)
        assert p["check"] == "verify" and f"session {sid} fails verify" in p["message"], rep
        # the exact commands, for this home: without --home they would act on the default home's daemon
        assert p["fix"] == f"sessiond sync --home {d.home} --wait {sid} && sessiond verify --home {d.home} {sid}"
    finally:
        for path, data in saved.items():
            with open(path, "wb") as f:
                f.write(data)


def test_a_store_that_is_down_is_a_problem_and_no_daemon_still_checks_files(make_daemon):
    server = Threaded(make_rpc_app(Node())).start()
    d = make_daemon(f"ipfs+http://127.0.0.1:{server.port}").start()
    try:
        code, rep = doctor(d.home, "--no-verify")
        assert code == 0, rep
        clock = next(f for f in rep["findings"] if f["check"] == "clock")
        assert clock["level"] == "ok" and "clock is" in clock["message"]  # from the loopback node's Date
    finally:
        server.stop()
    code, rep = doctor(d.home, "--no-verify")
    assert code == 1
    (p,) = problems(rep)
    assert p["check"] == "store" and f"127.0.0.1:{server.port}" in p["message"] and p["fix"]
    d.stop()
    code, rep = doctor(d.home)  # no daemon: the files are checked, the rest is said not to be
    assert code == 0 and rep["daemon"] is False
    assert {f["check"] for f in rep["findings"]} >= {"home", "keys", "daemon"}
    assert next(f for f in rep["findings"] if f["check"] == "daemon")["level"] == "warn"


class _Clocked:
    url = "s5+https://portal.example"

    def __init__(self, skew: float):
        self.skew = skew

    def server_clock(self):
        return (1000.0, 1000.0 + self.skew)


@pytest.mark.parametrize(("skew", "level"), [(1, "ok"), (-45, "warn"), (900, "problem")])
def test_clock_skew_levels(skew, level):
    f = check_clock(_Clocked(skew))  # type: ignore[arg-type]
    assert f["level"] == level
    assert (f["fix"] is None) == (level == "ok")
    assert ("ahead of" if skew > 0 else "behind") in f["message"]


def test_a_store_answering_wrong_bytes_is_not_waited_for(make_daemon, portal):
    p, url = portal
    d = make_daemon(url).start()
    p.faults.wrong_bytes = True  # the probe read back is other bytes
    code, rep = doctor(d.home, "--no-verify")
    assert code == 1, rep
    (store,) = [f for f in problems(rep) if f["check"] == "store"]
    assert "do not match the hash" in store["message"], store
    # main: "sessiond sync --wait  # once the store answers again": it answers, wrongly, and will again
    assert "answers again" not in store["fix"] and "sync --wait" not in store["fix"], store
    assert "--change-store" in store["fix"], store


def test_doctor_s_fix_for_refused_credentials_is_to_fix_them(make_daemon, portal):
    p, url = portal
    d = make_daemon(url).start()
    c = d.client()
    sid = c.create_session(name="refused")["id"]
    p.faults.reject_tokens = True  # every token refused, a fresh login's too
    c.append(sid, "user", "hello")
    assert run_cli(d.home, "sync", "--wait", "--timeout", "30").returncode == 1
    code, rep = doctor(d.home, "--no-verify")
    assert code == 1, rep
    (push,) = [f for f in problems(rep) if f["check"] == "push" and sid in f["message"]]
    assert "credentials" in push["message"], push
    assert "sync --wait" not in push["fix"], push  # main: sessiond sync --wait SID, refused again at once
    assert "invite" in push["fix"] and "--store-file" in push["fix"], push
    (store,) = [f for f in problems(rep) if f["check"] == "store"]
    assert "answers again" not in store["fix"] and "invite" in store["fix"], store


def test_sessions_not_pushed_for_one_reason_are_one_finding(make_daemon):
    """A store that is down leaves every session with changes unpushed, each with the same last error:
    doctor listed one PROBLEM per session (28 lines for one store down, each with the same error and
    fix). Now the sessions that failed alike are one finding naming each of them."""
    d = make_daemon("s5+http://127.0.0.1:9").start()  # nothing listens there
    c = d.client()
    sids = sorted(
        c.create_session(name=f"s{i}", initial_messages=[{"role": "user", "content": "hi"}])["id"] for i in range(3)
    )
    assert run_cli(d.home, "sync", "--wait", "--timeout", "5").returncode == 1
    code, rep = doctor(d.home, "--no-verify")
    assert code == 1, rep
    pushes = [f for f in problems(rep) if f["check"] == "push" and "not pushed" in f["message"]]
    assert len(pushes) == 1, pushes  # main: one per session
    assert "3 sessions" in pushes[0]["message"] and all(sid in pushes[0]["message"] for sid in sids), pushes
    assert "cannot connect" in pushes[0]["message"] and pushes[0]["fix"].startswith("sessiond sync"), pushes


def test_a_kubo_node_started_offline_is_named_with_its_fix(make_daemon):
    """A Kubo node started with `ipfs daemon --offline` keeps blocks but refuses every routing/get, so no
    head is published: the push fails at once (sync --wait does not wait on it) and doctor names the node
    as offline, with the fix: start it online."""
    node = Node(offline=True)
    server = Threaded(make_rpc_app(node)).start()
    try:
        d = make_daemon(f"ipfs+http://127.0.0.1:{server.port}").start()
        c = d.client()
        sid = c.create_session(name="offline node")["id"]
        c.append(sid, "user", "hello")
        res = run_cli(d.home, "sync", "--wait", "--timeout", "30")
        assert res.returncode == 1, res.stdout
        code, rep = doctor(d.home, "--no-verify")
        assert code == 1, rep
        (push,) = [f for f in problems(rep) if f["check"] == "push" and sid in f["message"]]
        assert "--offline" in push["message"], push
        assert "ipfs daemon" in push["fix"], push
    finally:
        server.stop()


def test_doctor_s_text_lines_up_and_counts_its_warnings(healthy, tmp_path):
    """Each finding's message starts in one column (the "database" check's name, longer than the others,
    pushed its message one place right), and a report with warnings says so rather than a bare "no problems
    found" under them."""
    d, _ = healthy
    lines = run_cli(d.home, "doctor", "--no-verify").stdout.splitlines()
    findings = [line for line in lines if line.startswith("ok ")]
    starts = {len(re.match(r"\S+\s+\S+\s+", line).group()) for line in findings}  # mark, check, message
    assert len(starts) == 1, findings
    res = run_cli(str(tmp_path / "none"), "doctor")  # no daemon, no home: two warnings
    assert res.returncode == 0 and res.stdout.splitlines()[-1] == "no problems found; 2 warning(s)", res.stdout


def test_doctor_waits_for_a_slow_store_as_long_as_store_timeout_says(make_daemon):
    """doctor gave each store's check a fixed 10 s, whatever config.toml's store_timeout says a store call may
    take: with store_timeout = 30 or more for a slow portal, one whose answer took 12 s (every push taken) was a
    problem, 'did not answer within 10 s', and verify skipped it. The check now waits as long as a store call
    may take (store_timeout), and says that time when it gives up."""
    import asyncio
    import threading

    from conftest import write_config
    from servers.s5portal import Portal, make_app

    p = Portal()
    server = Threaded(make_app(p)).start()
    p.authority = f"127.0.0.1:{server.port}"
    slow = asyncio.Event()
    released = threading.Timer(12, lambda: server.loop.call_soon_threadsafe(slow.set))
    try:
        d = make_daemon(f"s5+http://{p.authority}")
        write_config(d.home, store_timeout=20)
        d.start()
        p.faults.hang = slow  # the fault itself: the portal's answers come 12 s late
        released.start()
        code, rep = doctor(d.home, "--no-verify")
        stores = [f for f in rep["findings"] if f["check"] == "store"]
        assert [f["level"] for f in stores] == ["ok"], stores  # main: 'did not answer within 10 s'
    finally:
        released.cancel()
        server.loop.call_soon_threadsafe(slow.set)
        server.stop()
