"""Homes made by older versions of sessiond, opened by this one: tests/data/home-COMMIT/ holds a home (its
sessions.db and keys), the folder store it pushed to, a share code and a session file, and what that
version's own CLI read back (`--json`, expected/), all made by the real code of COMMIT with
tests/data/make_old_home.sh (how: its header). This version migrates the home, reads every session as the
old one did, keeps syncing with the other devices, and takes the old code and file."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from conftest import DaemonProc, cli_json, run_cli
from waiting import wait_for

DATA = os.path.join(os.path.dirname(__file__), "data")
SESSIONS = ["s-main", "s-shared", "s-clone", "s-paused", "s-ended"]


def _private_copy(src: str, dst: str) -> str:
    """A copy of a fixture folder, with the modes a home's files have (a checkout's are 0644)."""
    shutil.copytree(src, dst)
    for root, _, files in os.walk(dst):
        os.chmod(root, 0o700)
        for f in files:
            os.chmod(os.path.join(root, f), 0o600)
    return dst


# 2026-11-22 (schema 4, no store-url yet); 2026-12-02 02:34 (schema 9 as it was for an hour: its search index
# kept by triggers of its own, no messages_fts_pending); 2026-12-05 (schema 18, tool calls)
OLD = ["e5884fe", "6256b5e", "6d04f4c"]


def _old_home(tmp_path, commit: str) -> tuple[str, str, str]:
    """The home and store of tests/data/home-COMMIT copied: (home, store URL, the fixture's folder). A home
    that remembers its store is told the copy's place (the store moved with it)."""
    fixture = os.path.join(DATA, f"home-{commit}")
    home = _private_copy(os.path.join(fixture, "home"), str(tmp_path / "home"))
    store = "file://" + _private_copy(os.path.join(fixture, "store"), str(tmp_path / "store"))
    if os.path.exists(os.path.join(home, "store-url")):
        with open(os.path.join(home, "store-url"), "w") as f:
            f.write(store + "\n")
    return home, store, fixture


@pytest.fixture
def old_home(tmp_path):
    """tests/data/home-e5884fe: a home of 2026-11-22, before homes remembered their store."""
    return _old_home(tmp_path, "e5884fe")


def _expected(fixture: str, name: str):
    return json.load(open(os.path.join(fixture, "expected", name)))


def test_an_old_home_that_pushed_to_a_store_it_did_not_record_is_not_moved_to_the_default_one(old_home):
    """Before 2026-12-02 a home did not remember its store (<home>/store-url): it was named at each start.
    Started without --store, this version took the home's default store and remembered it: the sessions
    were pushed there in full while the devices they are shared with stay on the old store, each side no
    longer seeing the other's writes, with `sync` saying all is pushed. It must ask for the store instead."""
    home, store, _ = old_home
    before = open(os.path.join(home, "sessions.db"), "rb").read()
    d = DaemonProc(home)
    try:
        with pytest.raises(RuntimeError) as refused:
            d.start()
    finally:
        d.stop()
    said = str(refused.value)
    assert "--store" in said and "did not record" in said, said
    assert not os.path.exists(os.path.join(home, "store-url"))
    assert not os.path.exists(os.path.join(home, "store"))
    assert open(os.path.join(home, "sessions.db"), "rb").read() == before  # not even migrated


@pytest.mark.parametrize("commit", OLD)
def test_an_old_home_reads_the_same_and_keeps_syncing(tmp_path, make_daemon, commit):
    home, store, fixture = _old_home(tmp_path, commit)
    d = DaemonProc(home, store).start()
    try:
        listed, expected = cli_json(home, "ls"), _expected(fixture, "ls.json")
        if "more" not in expected:
            assert listed.pop("more") is False  # (the field paging added on 2026-12-02)
        assert listed == expected
        for sid in SESSIONS:
            assert cli_json(home, "show", sid) == _expected(fixture, f"{sid}.show.json"), sid
            assert cli_json(home, "log", sid, "--all") == _expected(fixture, f"{sid}.log.json"), sid
            quota, want = cli_json(home, "quota", sid), _expected(fixture, f"{sid}.quota.json")
            if "over" not in want:  # (the field 0.36.0 added: tokens past the quota, null with none)
                q = want["token_quota"]
                assert quota.pop("over") == (None if q is None else max(0, want["tokens_used"] - q)), sid
            assert quota == want, sid
            assert cli_json(home, "checkpoints", sid) == _expected(fixture, f"{sid}.checkpoints.json"), sid
            assert cli_json(home, "chat", "ls", sid) == _expected(fixture, f"{sid}.chats.json"), sid
        # the old messages are in the search index (made again by the migrations), and so is a new one
        run_cli(home, "add", "s-main", "--role", "user", "zebra crossing", check=True)
        for word, want in (("question", 5), ("zebra", 1)):
            hits = cli_json(home, "search", word, "--session", "s-main", "--role", "user")["hits"]
            assert len(hits) == want, (word, hits)
        # the upgraded home pushes; a device on this version imports the old version's code and pulls. `sync`
        # alone only asks for a push and a pull, which go on after it answers ("sync requested"): `--wait`
        # answers once the pushes are in the store and a pull begun after them has taken what it holds
        run_cli(home, "add", "s-shared", "--role", "user", "after the upgrade", check=True)
        run_cli(home, "sync", "--wait", check=True)
        f = make_daemon().start()
        code = os.path.join(fixture, "write.code")
        run_cli(f.home, "import", "--code-file", code, "--store", store, check=True)
        run_cli(f.home, "add", "s-shared", "--role", "assistant", "from the follower", check=True)
        run_cli(f.home, "sync", "--wait", check=True)
        run_cli(home, "sync", "--wait", check=True)
        want = ["shared hello", "shared reply", "after the upgrade", "from the follower"]
        for h in (home, f.home):
            assert [m["content"] for m in cli_json(h, "log", "s-shared")["messages"]] == want, h
    finally:
        d.stop()


@pytest.mark.parametrize("commit", OLD)
def test_an_old_session_file_imports(make_daemon, commit):
    fixture = os.path.join(DATA, f"home-{commit}")
    d = make_daemon().start()
    run_cli(d.home, "import-file", os.path.join(fixture, "s-main.export.json"), check=True)
    got = cli_json(d.home, "log", "s-main", "--all")["messages"]
    want = _expected(fixture, "s-main.log.json")["messages"]
    keys = ("chat", "role", "content", "tokens", "created_at", "tool_calls", "tool_call_id", "name")
    assert [{k: m.get(k) for k in keys} for m in got] == [{k: m.get(k) for k in keys} for m in want]


def test_doctor_names_the_store_an_old_home_needs(old_home):
    """`doctor` on the stopped home of test_an_old_home_that_pushed_to_a_store_it_did_not_record_...: the start
    it would advise is refused, so it says why and the start that works (--store), as a problem."""
    home, _, _ = old_home
    res = run_cli(home, "doctor", "--json")
    assert res.returncode != 0, res.stdout
    store = [f for f in json.loads(res.stdout)["findings"] if f["check"] == "store"]
    assert len(store) == 1 and store[0]["level"] == "problem", store
    assert "did not record" in store[0]["message"] and "--store" in store[0]["fix"], store


def test_a_service_for_an_old_home_is_not_installed_on_the_default_store(old_home, tmp_path):
    """`service install` without --store on the home of test_an_old_home_that_pushed_to_a_store_it_did_not_record_...
    wrote units for the home's default store and said so: a service whose daemon every start refuses. It is
    refused as the start is, writing nothing; with --store it installs and the home remembers that store."""
    home, store, _ = old_home
    os.makedirs(tmp_path / "bin")  # no systemctl: install writes the files and says what to run
    env = {"HOME": str(tmp_path / "user"), "XDG_CONFIG_HOME": str(tmp_path / "config"), "PATH": str(tmp_path / "bin")}
    res = run_cli(home, "service", "install", env=env)
    assert res.returncode != 0 and "did not record" in res.stderr and "--store" in res.stderr, res.stderr + res.stdout
    assert not os.path.exists(tmp_path / "config") and not os.path.exists(os.path.join(home, "store-url"))
    out = json.loads(run_cli(home, "service", "install", "--store", store, "--json", env=env, check=True).stdout)
    assert out["store"] == store and open(os.path.join(home, "store-url")).read() == store + "\n"


def test_a_members_slot_an_older_sessiond_rewrote_gets_its_frozen_logs_back(tmp_path, make_daemon):
    """tests/data/frozen-23bc028 (make_frozen_slot.sh): B dropped C by a rekey, so C's log is a frozen log of
    the members slot, then a device on 2026-12-02's code, which knows no frozen logs, joined and rewrote the
    slot without it. A device importing the session afterwards got nothing C wrote before the rekey, while
    B, which wrote the slot and noted the frozen log, never wrote it back. B's next pull writes it back."""
    fixture = os.path.join(DATA, "frozen-23bc028")
    home = _private_copy(os.path.join(fixture, "home"), str(tmp_path / "home"))
    store = "file://" + _private_copy(os.path.join(fixture, "store"), str(tmp_path / "store"))
    with open(os.path.join(home, "store-url"), "w") as f:
        f.write(store + "\n")
    b = DaemonProc(home).start()
    try:
        run_cli(home, "sync", check=True)  # B pulls: the slot A wrote
        d = make_daemon().start()
        run_cli(d.home, "import", "--code-file", os.path.join(fixture, "write.code"), "--store", store, check=True)

        def seen_by_d() -> list[str]:
            run_cli(d.home, "sync", check=True)  # (D pulls: the slot as B wrote it back, once it has)
            got = sorted(m["content"] for m in cli_json(d.home, "log", "s1")["messages"])
            return got if got == ["from A", "from B", "from C"] else []

        wait_for(seen_by_d, timeout=20, what="D holding what C wrote before the rekey")
    finally:
        b.stop()
