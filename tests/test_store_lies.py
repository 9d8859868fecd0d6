"""A storage host that lies about heads (a forged signature, a head rolled back to an old revision), seen by
real daemons through the loopback S5 portal: `verify` and `doctor` on either device name the lie as a
problem of the session (exit 1, never an internal error), a pull refuses it, and nothing changes here. And
a store that fails is named once by `verify` on a device that only follows, as it is on the sharer."""

from __future__ import annotations

import json
import os
import re

import pytest

from conftest import run_cli, wait_for


def contents(d, sid):
    return [(m["role"], m["content"]) for m in d.client().messages(sid, limit=1000)["messages"]]


def shared_pair(make_daemon, url):
    """A (the sharer) and B (imported, read-write, has not written) following one session on `url`."""
    a, b = make_daemon(url).start(), make_daemon(url).start()
    ca, cb = a.client(), b.client()
    sid = ca.create_session(name="lied about")["id"]
    ca.append(sid, "user", "one")
    a.code = ca.share(sid, write=True)["code"]
    cb.import_code(a.code)
    ca.append(sid, "user", "two")
    wait_for(lambda: contents(b, sid)[-1:] == [("user", "two")], timeout=15)
    assert run_cli(a.home, "sync", "--wait", "--timeout", "10").returncode == 0
    return a, b, sid


def cli_json(d, *args):
    res = run_cli(d.home, *args, "--json")
    return res, json.loads(res.stdout)


@pytest.mark.parametrize("lie", ["forged", "rolled back"])
def test_verify_and_doctor_name_a_lying_store_s_heads_and_change_nothing(make_daemon, portal, lie):
    p, url = portal
    a, b, sid = shared_pair(make_daemon, url)
    before = {d: contents(d, sid) for d in (a, b)}
    if lie == "forged":
        p.faults.forged_head = True  # every head read answers a broken signature
        said = "signature does not verify"
    else:
        p.faults.rollback_head = 1  # every head read answers its first revision (each has moved on since)
        said = "a rollback, refused"
    for d in (a, b):
        res, out = cli_json(d, "verify")
        assert res.returncode == 1, res.stdout + res.stderr
        assert "error" not in out, out  # main: {"error": {"code": "internal", ...}}, a 500
        (s,) = out["sessions"]
        assert not s["ok"] and said in " ".join(s["problems"]), s
        assert not s.get("store_failure"), s  # a lie is not the store failing to answer
        res, out = cli_json(d, "doctor")
        assert res.returncode == 1, res.stdout + res.stderr
        assert "error" not in out, out  # main: the doctor's report was an internal error too
        verify = [f for f in out["findings"] if f["check"] == "verify"]
        assert verify and all(f["level"] == "problem" for f in verify) and said in verify[0]["message"], verify
    res = run_cli(b.home, "sync", "--wait", "--timeout", "5")
    assert res.returncode == 1 and said in res.stdout, res.stdout + res.stderr
    assert {d: contents(d, sid) for d in (a, b)} == before


def test_an_import_through_a_store_forging_heads_says_so_and_writes_nothing(make_daemon, portal):
    p, url = portal
    a, _, sid = shared_pair(make_daemon, url)
    c = make_daemon(url).start()
    p.faults.forged_head = True
    res = run_cli(c.home, "import", "--json", input=a.code)
    assert res.returncode == 1, res.stdout + res.stderr
    err = json.loads(res.stdout)["error"]
    # main: store_needed, "neither this device's store nor the code's hints hold it": looking elsewhere
    # would not help, the store that holds it lies
    assert err["code"] == "forged" and "signature does not verify" in err["message"], err
    assert c.client().list_sessions()["sessions"] == []


def test_verify_names_a_failing_store_once_on_a_device_that_only_follows(make_daemon, portal):
    p, url = portal
    a, b, sid = shared_pair(make_daemon, url)
    p.faults.status, p.faults.times = 500, 10**6
    for d in (a, b):  # A reads its own head first, B (no log of its own yet) the members slot
        res, out = cli_json(d, "verify")
        assert res.returncode == 1, res.stdout + res.stderr
        (s,) = out["sessions"]
        why = s["store_failure"]
        assert why.startswith(f"the store {url} is failing with server errors ("), why
        # main, on B: "the store URL is failing (the store URL is failing with server errors (...); the store
        # is failing on its side: ...); check the store and try again": the failure described twice
        assert why.count(f"the store {url}") == 1 and why.endswith("or tell its operator"), why


def test_a_store_that_sends_fewer_bytes_than_it_promised_is_not_called_unreachable(make_daemon, portal):
    p, url = portal
    a, b, sid = shared_pair(make_daemon, url)
    p.faults.truncated = True  # every download promises 100 bytes more than it sends, then hangs up
    for d in (a, b):
        res, out = cli_json(d, "verify")
        assert res.returncode == 1, res.stdout + res.stderr
        (s,) = out["sessions"]
        why = s["store_failure"]
        # main: "the store URL is unreachable (GET ...: the connection broke (ClientPayloadError)); check that
        # the store is running and its URL is right, then try again", about a store that answered every request
        assert "unreachable" not in why and "is running" not in why, why
        assert why.startswith(f"the store {url} is sending incomplete answers ("), why
        assert re.search(r"the store sent (\d+) of (\d+) bytes", why), why
        sent, promised = map(int, re.search(r"sent (\d+) of (\d+) bytes", why).groups())
        assert promised == sent + 100, why


def _pushed(make_daemon, url: str, name: str, *texts: str):
    """A daemon on `url` and a session of it named `name`, each of `texts` appended and pushed: (daemon, id)."""
    a = make_daemon(url).start()
    sid = a.client().create_session(name=name)["id"]
    for text in texts:
        a.client().append(sid, "user", text)
        assert run_cli(a.home, "sync", "--wait", "--timeout", "10").returncode == 0
    return a, sid


def test_doctor_says_a_store_forging_this_device_s_head_again_lies_and_to_move(make_daemon, portal):
    # main: `sync --wait && verify` every time, forever: the push meets the forged head again, and so does verify
    p, url = portal
    a, sid = _pushed(make_daemon, url, "forged again", "one")
    p.faults.forged_head = True

    def verify_fix():
        res, out = cli_json(a, "doctor")
        assert res.returncode == 1 and "error" not in out, res.stdout + res.stderr
        (f,) = [f for f in out["findings"] if f["check"] == "verify"]
        assert f["level"] == "problem" and "signature does not verify" in f["message"], f
        return f["fix"]

    first = verify_fix()
    assert "sessiond sync" in first and "--wait" in first, first  # the first time: pushed again, it may verify
    res = run_cli(a.home, "sync", "--wait", "--timeout", "10")  # the head pushed again (a new revision)
    assert res.returncode == 0, res.stdout + res.stderr
    fix = verify_fix()  # forged again: the store lies
    assert "--change-store" in fix and "sessiond sync" not in fix, fix
    assert "again" in fix and ("lies" in fix or "forg" in fix), fix


def _verify_finding(d) -> dict:
    res, out = cli_json(d, "doctor")
    assert res.returncode == 1 and "error" not in out, res.stdout + res.stderr
    (f,) = [f for f in out["findings"] if f["check"] == "verify"]
    assert f["level"] == "problem", f
    return f


def test_a_lying_store_found_before_a_restart_is_still_known_after_it(make_daemon, portal):
    """doctor found the store forging this device's head, and said to `sync --wait` and verify again; the daemon
    restarted before the user did (a reboot, an upgrade). The memory of that first finding was the daemon's: its
    next doctor, the lie met again after a sync pushed past it, said `sync --wait` once more, not that the store
    lies. It is kept in the database now, with the revision this device had pushed then: a verify finding it again
    without a push since (nothing the store was given and lied about) still says `sync --wait`."""
    p, url = portal
    a, sid = _pushed(make_daemon, url, "forged across a restart", "one")
    p.faults.forged_head = True
    assert "--wait" in _verify_finding(a)["fix"]
    assert "--wait" in _verify_finding(a)["fix"]  # (nothing pushed since: not yet a lie)
    a.restart()
    res = run_cli(a.home, "sync", "--wait", "--timeout", "10")  # the head pushed again (a new revision)
    assert res.returncode == 0, res.stdout + res.stderr
    fix = _verify_finding(a)["fix"]
    assert "--change-store" in fix and "sessiond sync" not in fix, fix  # main: `sync --wait` again


def test_a_head_rolled_back_again_is_said_as_a_lie_or_a_restore_from_a_backup(make_daemon, portal):
    """A store serving this device's head rolled back after a sync pushed past it lies, or its host restored it from
    a backup again since: said as both, with what to do for each (main: "forged or rolled back again: it lies")."""
    p, url = portal
    a, sid = _pushed(make_daemon, url, "rolled back twice", "one", "two")
    p.faults.rollback_head = 1  # every head read answers its first revision
    assert "--wait" in _verify_finding(a)["fix"]
    assert run_cli(a.home, "sync", "--wait", "--timeout", "10").returncode == 0
    f = _verify_finding(a)
    assert "backup" in f["fix"] and "--change-store" in f["fix"] and f"--wait {sid}" in f["fix"], f
    res, out = cli_json(a, "verify")
    (s,) = out["sessions"]
    assert s["store_lies"] == url and s["store_lies_how"] == "rolled back", s
    assert "backup" in s["repair"] and "rolled back" in s["repair"], s


@pytest.mark.parametrize("lie", ["forged", "rolled back"])
def test_a_sync_publishes_again_a_head_the_store_rolled_back_or_forged(make_daemon, portal, lie):
    """The store serves this device's head rolled back below what this device published (a host restored from a
    backup) or forged, to the daemon that published it: the client refuses that read as a lie (HeadRolledBack,
    LyingServer). main took it for a store that does not answer: `sync --wait` returned with nothing written, the
    head stayed rolled back, doctor named no repair. Now the sync publishes the head again above the highest
    revision this device published, and the log and doctor say why."""
    p, url = portal
    a, sid = _pushed(make_daemon, url, "republished", "one", "two")
    ((pk, history),) = p.registry.items()  # (not shared: no members slot, only this device's head)
    top = history[-1].revision
    if lie == "forged":
        p.faults.forged_head, said = True, "forged or damaged"
    else:
        p.faults.rollback_head, said = 1, "rolled back"
    res = run_cli(a.home, "sync", "--wait", "--timeout", "10")
    assert res.returncode == 0, res.stdout + res.stderr
    # main: no new head was written: the store kept serving revision 1 (or a forgery) as this device's head
    assert p.registry[pk][-1].revision > top, [e.revision for e in p.registry[pk]]
    logged = open(os.path.join(a.home, "logs", "sessiond.log")).read()
    assert f"served the head of this device's log {said}" in logged, logged[-3000:]
    res, out = cli_json(a, "doctor")
    pushes = [f for f in out["findings"] if f["check"] == "push" and sid in f["message"]]
    assert pushes and said in pushes[0]["message"] and "published it again" in pushes[0]["message"], out
    assert pushes[0]["level"] == "warn" and "sessiond verify" in pushes[0]["fix"] and sid in pushes[0]["fix"], pushes
    p.faults.forged_head, p.faults.rollback_head = False, None  # the store mended: the next sync finds it whole
    assert run_cli(a.home, "sync", "--wait", "--timeout", "10").returncode == 0
    res, out = cli_json(a, "doctor")
    assert not [f for f in out["findings"] if f["check"] == "push" and sid in f["message"]], out


def test_a_store_that_does_not_answer_a_head_read_is_not_repaired(make_daemon, portal):
    """A head read that fails (a 5xx) is the store not answering, not one that lost the log: nothing pushed again."""
    p, url = portal
    a, sid = _pushed(make_daemon, url, "not answering", "one")
    ((pk, history),) = p.registry.items()
    top = history[-1].revision
    p.faults.fail_heads.add(pk)
    run_cli(a.home, "sync", "--wait", "--timeout", "5")
    p.faults.fail_heads.discard(pk)
    assert p.registry[pk][-1].revision == top
    logged = open(os.path.join(a.home, "logs", "sessiond.log")).read()
    assert "served the head of this device's log" not in logged


@pytest.mark.parametrize("lie", ["forged", "rolled back"])
def test_a_head_served_rolled_back_again_and_again_costs_a_head_not_the_whole_log(make_daemon, portal, lie):
    """A store that keeps serving this device's head rolled back (or forged) while it holds every object of the
    log (a cache in front of it serving an old record, a store that lies about heads only): each `sync` published
    the head again by pushing the whole log again, every page uploaded anew at every sync (a log of hundreds of
    megabytes, each time). The objects there, a new head is what is lacking: the head alone is published again."""
    p, url = portal
    texts = [f"page {i}" for i in range(6)]
    a, sid = _pushed(make_daemon, url, "lied about again", *texts)
    ((pk, history),) = p.registry.items()
    if lie == "forged":
        p.faults.forged_head = True
    else:
        p.faults.rollback_head = 1
    for _ in range(2):  # (the store keeps serving it so: each sync mends it again)
        top = p.registry[pk][-1].revision
        before = sum(1 for m, path, _auth in p.requests if m == "POST" and path == "/s5/upload")
        res = run_cli(a.home, "sync", "--wait", "--timeout", "10")
        assert res.returncode == 0, res.stdout + res.stderr
        assert p.registry[pk][-1].revision > top, [e.revision for e in p.registry[pk]]
        uploads = sum(1 for m, path, _auth in p.requests if m == "POST" and path == "/s5/upload") - before
        assert uploads == 1, f"{uploads} objects uploaded again (one manifest expected)"
    p.faults.forged_head, p.faults.rollback_head = False, None
    assert [t for _r, t in contents(a, sid)] == texts


def test_a_head_rolled_back_with_objects_lost_pushes_the_whole_log_again(make_daemon, portal):
    """A host restored from a backup: the head rolled back and the objects pushed since lost. A new head alone
    would name objects gone: the whole log is pushed again, and the store then holds it whole."""
    p, url = portal
    texts = [f"page {i}" for i in range(3)]
    a, sid = _pushed(make_daemon, url, "restored from a backup", *texts)
    ((pk, history),) = p.registry.items()
    p.faults.rollback_head = 1
    p.blobs.clear()  # (every object gone: what the level tree names too)
    before = sum(1 for m, path, _auth in p.requests if m == "POST" and path == "/s5/upload")
    assert run_cli(a.home, "sync", "--wait", "--timeout", "10").returncode == 0
    assert sum(1 for m, path, _auth in p.requests if m == "POST" and path == "/s5/upload") - before >= 2
    logged = open(os.path.join(a.home, "logs", "sessiond.log")).read()
    assert "pushing the log again, its head above that revision" in logged, logged[-3000:]
    p.faults.rollback_head = None
    res, out = cli_json(a, "verify", sid)
    assert res.returncode == 0 and out["sessions"][0]["ok"], out


def _released(home: str) -> set[bytes]:
    """The objects this device noted letting go (gc's candidates), from its database."""
    import sqlite3

    db = sqlite3.connect(f"file:{os.path.join(home, 'sessions.db')}?mode=ro", uri=True)
    try:
        return {bytes(r[0]) for r in db.execute("SELECT hash FROM released")}
    finally:
        db.close()


@pytest.mark.parametrize("lie", ["forged", "rolled back"])
def test_a_head_published_again_lets_go_of_the_manifest_it_replaced(make_daemon, portal, lie):
    """A head published again over a store that served it rolled back or forged named no `prev`: the manifest
    the replaced head named was never noted for gc, one object left in the store for good at each repair. It is
    let go now as a normal head change lets go of the manifest it follows; nothing the new head names is."""
    from sessiond.sync.heads import manifest_hash_of

    p, url = portal
    a, sid = _pushed(make_daemon, url, "let go", "one", "two")
    ((pk, history),) = p.registry.items()
    replaced = manifest_hash_of(history[-1])
    assert replaced not in _released(a.home)
    if lie == "forged":
        p.faults.forged_head = True
    else:
        p.faults.rollback_head = 1
    assert run_cli(a.home, "sync", "--wait", "--timeout", "10").returncode == 0
    p.faults.forged_head, p.faults.rollback_head = False, None
    current = manifest_hash_of(p.registry[pk][-1])
    assert current != replaced
    released = _released(a.home)
    assert replaced in released, "the manifest the replaced head named was never noted for gc"
    assert current not in released
    res, out = cli_json(a, "verify", sid)
    assert res.returncode == 0 and out["sessions"][0]["ok"], out
    gc = json.loads(run_cli(a.home, "gc", "--grace", "0", "--json").stdout)  # (the portal frees nothing: kept)
    assert "error" not in gc, gc
    res, out = cli_json(a, "verify", sid)
    assert res.returncode == 0 and out["sessions"][0]["ok"], out
