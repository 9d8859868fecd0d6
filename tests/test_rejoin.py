"""Coming back to a shared session: a device left out of a rekey, given a new share code (`sessiond import`
takes it over the old copy: the same session, proved by its creation in the code's logs, instead of
calling it a different session); and a device key restored into a fresh home after rekeys."""

from __future__ import annotations

import json

import pytest

from conftest import cli_json, run_cli, wait_for
from sessiond.client import ApiError


def _messages(d, sid):
    return [m["content"] for m in d.client().messages(sid, limit=10_000)["messages"]]


def _left_out(make_daemon, store_dir):
    """A's session, B a writer of it, then left out by `unshare` (every other device dropped)."""
    url = "file://" + store_dir
    a, b = make_daemon(url).start(), make_daemon(url).start()
    sid = a.client().create_session(name="rejoin")["id"]
    a.client().append(sid, "user", "hi")
    b.client().import_code(a.client().share(sid, write=True)["code"])
    b.client().append(sid, "assistant", "from B")
    b.client().sync(wait=True)
    wait_for(lambda: "from B" in _messages(a, sid), timeout=20)
    cli_json(a.home, "unshare", sid)
    a.client().append(sid, "user", "after the unshare")
    return a, b, sid


@pytest.mark.parametrize("write", [False, True])
def test_a_device_left_out_of_a_rekey_imports_a_new_code_over_its_copy(make_daemon, store_dir, write):
    a, b, sid = _left_out(make_daemon, store_dir)
    st = b.client().sync(sid, wait=True, timeout=10)
    assert "rekeyed without this device" in st["sessions"][sid]["pull_error"], st
    doctor = run_cli(b.home, "doctor", "--no-verify", "--json")
    fix = next(f["fix"] for f in cli_json_text(doctor)["findings"] if "rekeyed without" in f["message"])
    assert "sessiond import" in fix, fix
    # verify's finding names the same way out: a sync (which it said before) pulls nothing for a device left out
    doctor = run_cli(b.home, "doctor", "--json")
    fix = next(f["fix"] for f in cli_json_text(doctor)["findings"] if f["check"] == "verify" and sid in f["message"])
    assert fix.startswith(f"sessiond import --home {b.home} < code.txt"), fix
    code = a.client().share(sid, write=write)["code"]
    res = run_cli(b.home, "import", "--json", input=code)
    assert res.returncode == 0, res
    assert "after the unshare" in _messages(b, sid)
    st = b.client().sync(sid, wait=True, timeout=10)
    assert not st["sessions"][sid].get("pull_error"), st
    assert b.client().get_session(sid)["access"] == ("write" if write else "read")
    a.client().append(sid, "user", "next")
    wait_for(lambda: "next" in _messages(b, sid), timeout=20)
    if write:  # a writer again: what it writes reaches the others
        b.client().append(sid, "assistant", "B is back")
        wait_for(lambda: "B is back" in _messages(a, sid), timeout=20)
    assert cli_json(b.home, "verify")["ok"]
    assert _messages(a, sid) == _messages(b, sid)


def test_a_code_of_another_session_under_the_same_id_is_still_refused(make_daemon, store_dir, tmp_path):
    """The rejoin needs the session's own creation in the code's logs: a session made elsewhere with the
    same id (a crafted code) is refused as before, and nothing here changes."""
    url = "file://" + store_dir
    a = make_daemon(url).start()
    other = make_daemon("file://" + str(tmp_path / "elsewhere")).start()
    sid = a.client().create_session(name="mine")["id"]
    a.client().append(sid, "user", "mine")
    a.client().share(sid)
    other.client().create_session(id=sid, name="theirs")
    other.client().append(sid, "user", "theirs")
    res = run_cli(a.home, "import", "--json", input=other.client().share(sid)["code"])
    assert res.returncode != 0 and "different session" in res.stdout, res
    # and says what to do: keep it, or set it aside (exported) to make room for the code's session
    said = json.loads(res.stdout)["error"]["message"]  # (the commands for a.home: --home, as it is no default)
    assert f"sessiond export --home {a.home} {sid} -o" in said and f"sessiond rm --home {a.home} {sid}" in said, said
    assert _messages(a, sid) == ["mine"]


def cli_json_text(res):
    import json

    return json.loads(res.stdout)


def _restore(d, make_daemon, url, sid):
    """The device's 24 words into a fresh home, and the session imported there with a code it made."""
    code = d.client().share(sid, write=True)["code"]
    words = run_cli(d.home, "key", "export", check=True).stdout
    d.stop()
    fresh = make_daemon(url)
    assert run_cli(fresh.home, "key", "import", input=words).returncode == 0
    fresh.start()
    fresh.client().import_code(code)
    return fresh


def test_a_restored_writer_whose_log_holds_only_a_rekey_claim_goes_on_through_the_next_rekey(make_daemon, store_dir):
    """A writer that rekeyed but never wrote has a head holding only its claim. Restored into a fresh home,
    its import took no state from that head (no operations to take), so the next rekey's switch did not
    push it under the new key, and the next restore's import called its own log damaged (found by the
    long stateful test)."""
    url = "file://" + store_dir
    a, b = make_daemon(url).start(), make_daemon(url).start()
    sid = a.client().create_session(name="claims")["id"]
    a.client().append(sid, "user", "hi")
    b.client().import_code(a.client().share(sid, write=True)["code"])
    a.client().sync(wait=True)
    a_rev = cli_json(a.home, "status")["sync"][sid]["head_rev"]
    b.client().rekey(sid)  # B's log: no operation, one head with the claim
    b.client().sync(wait=True)
    # until A has taken the rekey (its log pushed again under the new key: its head's revision moves on),
    # the session's creation is only in A's log under the old key, which a code made now does not give: a
    # restore meanwhile is refused, rightly. (B's status names A in waiting_for only once B has read A's
    # log behind: right after B's own sync it may not have yet, so its absence proved nothing.)

    def a_switched() -> bool:
        st = cli_json(a.home, "status")["sync"][sid]
        return st["head_rev"] > a_rev and st["pending"] == 0

    wait_for(a_switched, timeout=30, what="A took B's rekey and pushed its log under the new key")
    b = _restore(b, make_daemon, url, sid)
    a.client().rekey(sid)
    wait_for(lambda: b.client().sync(sid, wait=True, timeout=5)["complete"], timeout=30, interval=0.2)
    b = _restore(b, make_daemon, url, sid)  # refused before: "the log of device B is damaged"
    b.client().append(sid, "assistant", "B after both")
    wait_for(lambda: "B after both" in _messages(a, sid), timeout=20)
    for d in (a, b):
        assert cli_json(d.home, "verify")["ok"], d.home


def _away_through_a_rekey(make_daemon, store_dir):
    """A's session, B a writer of it that wrote, then stopped (its words kept) while A rekeys it; and a
    fresh home with B's key restored from its words, started: (a, b, fresh, sid)."""
    url = "file://" + store_dir
    a, b = make_daemon(url).start(), make_daemon(url).start()
    sid = a.client().create_session(name="away")["id"]
    b.client().import_code(a.client().share(sid, write=True)["code"])
    b.client().append(sid, "assistant", "from B")
    b.client().sync(wait=True)
    wait_for(lambda: "from B" in _messages(a, sid), timeout=20)
    words = run_cli(b.home, "key", "export", check=True).stdout
    b.stop()  # away through the rekey
    a.client().rekey(sid)
    fresh = make_daemon(url)
    assert run_cli(fresh.home, "key", "import", input=words).returncode == 0
    fresh.start()
    return a, b, fresh, sid


def test_a_restore_of_a_device_away_through_a_rekey_is_refused_clearly(make_daemon, store_dir):
    """Its own log is under the old key, which the fresh home never held: going on would number its next
    messages under the numbers of its old log (dropped by the others as repeats). The import says so
    and what to do, instead of calling the log damaged, and leaves nothing behind."""
    a, _, fresh, sid = _away_through_a_rekey(make_daemon, store_dir)  # (B then lost)
    res = run_cli(fresh.home, "import", "--json", input=a.client().share(sid)["code"])
    assert res.returncode == 1, res
    err = cli_json_text(res)["error"]
    assert err["code"] == "behind" and "key import" in err["message"], err
    assert cli_json(fresh.home, "ls")["sessions"] == []
    # the ways on are its owner's (another home, started or made): named so for an app, which has no CLI
    with pytest.raises(ApiError) as e:
        fresh.client().import_code(a.client().share(sid)["code"])
    owner = e.value.details["owner"]
    assert len(owner) == 2 and "OLD_HOME" in owner[0] and "NEW_HOME" in owner[1], e.value.details
    assert "api" not in e.value.details


def test_the_refused_restore_names_the_commands_that_go_on_and_each_works(make_daemon, store_dir):
    """The restored key's refusal (`behind`) said to import "on a home of its own device key" or "on the home
    that still holds the old key", naming no command: on a home restored with `key import` the user had
    none to run. It names them now, and each works: a new home (a device key of its own) imports the
    session and writes to it; the old home, started once, takes the rekey and pushes its log under the new
    key, after which the restore here imports the session and goes on from its own log."""
    a, b, fresh, sid = _away_through_a_rekey(make_daemon, store_dir)
    url = "file://" + store_dir
    code = a.client().share(sid, write=True)["code"]
    res = run_cli(fresh.home, "import", input=code)
    assert res.returncode == 1, res
    said = res.stderr
    assert "sessiond start --home OLD_HOME" in said and "sessiond sync --wait --home OLD_HOME" in said, said
    assert "sessiond import --home NEW_HOME < code.txt" in said, said
    # a home with a device key of its own: a new writer
    new = make_daemon(url).start()
    assert run_cli(new.home, "import", input=code).returncode == 0
    new.client().append(sid, "user", "from the new home")
    wait_for(lambda: "from the new home" in _messages(a, sid), timeout=20)
    # the old home, started once: it takes the rekey, and the restore then goes on from its own log
    b.start()
    run_cli(b.home, "sync", "--wait", check=True)

    def restored() -> bool:
        return run_cli(fresh.home, "import", input=code).returncode == 0

    wait_for(restored, timeout=30, interval=0.5, what="the restored home imported the session")
    assert "from B" in _messages(fresh, sid)
    b.stop()  # (the restored home is that device now)
    fresh.client().append(sid, "assistant", "B, restored")
    wait_for(lambda: "B, restored" in _messages(a, sid), timeout=20)


def test_a_rejoin_killed_between_its_keys_and_its_database_finishes_when_imported_again(make_daemon, store_dir):
    """A rejoin writes the code's keys first (the old kept), then switches the database in the transaction
    that takes the code's logs (members slot, heads followed, the log pushed again): a crash between the
    two leaves the keys current and the database on the old generation, and the import given again
    finishes the switch (told by the database's announce key, not the code's) instead of taking the
    session as up to date with nothing switched."""
    url = "file://" + store_dir
    a, b, sid = _left_out(make_daemon, store_dir)
    code = a.client().share(sid, write=True)["code"]
    b.stop()
    b.env["SESSIOND_CRASH_AT"] = "rejoin:rotated"
    b.start()
    assert run_cli(b.home, "import", "--json", input=code).returncode != 0  # the daemon died part-way
    b.proc.wait(timeout=15)
    b.env.pop("SESSIOND_CRASH_AT")
    b.start()
    res = run_cli(b.home, "import", "--json", input=code)
    assert res.returncode == 0, res
    assert "after the unshare" in _messages(b, sid)
    st = b.client().sync(sid, wait=True, timeout=10)
    assert not st["sessions"][sid].get("pull_error"), st
    b.client().append(sid, "assistant", "B is back")
    wait_for(lambda: "B is back" in _messages(a, sid), timeout=20)
    b.client().sync(wait=True)
    a.client().rekey(sid)  # and B, a member again, is kept through the next rekey
    a.client().append(sid, "user", "after the next rekey")
    wait_for(lambda: "after the next rekey" in _messages(b, sid), timeout=30)
    b.client().append(sid, "assistant", "B on the newest key")
    wait_for(lambda: "B on the newest key" in _messages(a, sid), timeout=30)
    # B's whole log is under the new key: a device that joins now, with only that key, reads all of it
    c = make_daemon(url).start()
    c.client().import_code(a.client().share(sid)["code"])
    assert _messages(a, sid) == _messages(b, sid) == _messages(c, sid)
    for d in (a, b, c):
        assert cli_json(d.home, "verify")["ok"], d.home
