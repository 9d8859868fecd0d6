"""A device that comes back to a shared session (rm + import, a restored device key) or to its store
(restart without --store, a store that lost objects) gets back everything it ever published, never
reuses a sequence number, and the store ends up holding its whole log again (issue 19)."""

from __future__ import annotations

import os
import shutil

import pytest

from conftest import cli_json, run_cli, wait_for


@pytest.fixture
def url(store_dir):
    return "file://" + store_dir


def contents(d, sid):
    return [(m["role"], m["content"]) for m in d.client().messages(sid, limit=100_000, all_chats=True)["messages"]]


def ids(d, sid):
    return [m["id"] for m in d.client().messages(sid, limit=100_000, all_chats=True)["messages"]]


def converged(devices, sid, n):
    def check():
        for d in devices:
            d.client().sync(wait=True)
        got = [contents(d, sid) for d in devices]
        return len(got[0]) == n and all(g == got[0] for g in got)

    wait_for(check, timeout=20, interval=0.2)


def verified(d):
    rep = cli_json(d.home, "verify")
    assert rep["ok"], rep
    return rep


def third_sees_all(make_daemon, url, code, sid, expected):
    c = make_daemon(url).start()
    c.client().import_code(code)
    assert contents(c, sid) == expected
    verified(c)


def _shared(make_daemon, url):
    a = make_daemon(url).start()
    b = make_daemon(url).start()
    ca = a.client()
    sid = ca.create_session(name="again")["id"]
    ca.append(sid, "user", "a1")
    code = ca.share(sid, write=True)["code"]
    b.client().import_code(code)
    b.client().append(sid, "assistant", "b1")
    b.client().append(sid, "assistant", "b2")
    converged([a, b], sid, 3)
    return a, b, sid, code


def test_follower_rm_and_import_gets_its_own_messages_back(make_daemon, url):
    a, b, sid, code = _shared(make_daemon, url)
    before = ids(b, sid)
    b.client().delete_session(sid)
    b.client().import_code(code)
    assert contents(b, sid) == [("user", "a1"), ("assistant", "b1"), ("assistant", "b2")]
    new = b.client().append(sid, "user", "b3")
    assert new["id"] not in before  # a sequence number it published is never used again
    converged([a, b], sid, 4)
    assert contents(a, sid)[-1] == ("user", "b3")
    verified(a)
    verified(b)
    third_sees_all(make_daemon, url, code, sid, contents(a, sid))


def test_creator_rm_and_import(make_daemon, url):
    a, b, sid, code = _shared(make_daemon, url)
    before = ids(a, sid)
    a.client().delete_session(sid)
    res = run_cli(a.home, "import", input=code)
    assert res.returncode == 0, res.stderr
    assert contents(a, sid) == [("user", "a1"), ("assistant", "b1"), ("assistant", "b2")]
    assert a.client().get_session(sid)["name"] == "again"
    new = a.client().append(sid, "user", "a2")
    assert new["id"] not in before
    converged([a, b], sid, 4)
    verified(a)
    verified(b)
    third_sees_all(make_daemon, url, code, sid, contents(a, sid))


def test_restored_device_key_reads_its_own_log(make_daemon, url, tmp_path):
    a, b, sid, code = _shared(make_daemon, url)
    before = ids(b, sid)
    device = b.client().status()["device_id"]
    words = cli_json(b.home, "key", "export")["mnemonic"]
    b.stop()
    shutil.rmtree(b.home)  # the device is lost; its key backup is not
    home = str(tmp_path / "restored")
    res = run_cli(home, "key", "import", input=words)
    assert res.returncode == 0, res.stderr
    r = make_daemon(url)
    r.home = home
    r.start()
    r.client().import_code(code)
    assert r.client().status()["device_id"] == device  # the restored device is the same device again
    assert contents(r, sid) == [("user", "a1"), ("assistant", "b1"), ("assistant", "b2")]
    new = r.client().append(sid, "user", "b3")
    assert new["id"] not in before
    converged([a, r], sid, 4)
    verified(a)
    verified(r)
    third_sees_all(make_daemon, url, code, sid, contents(a, sid))


def test_restored_key_in_a_used_home_is_refused_clearly(make_daemon, url, tmp_path):
    a, b, sid, code = _shared(make_daemon, url)
    words = cli_json(b.home, "key", "export")["mnemonic"]
    b.stop()
    home = str(tmp_path / "used")
    assert run_cli(home, "key", "import", input=words).returncode == 0
    r = make_daemon(url)
    r.home = home
    r.start()
    r.client().create_session(name="local work")["id"]
    res = run_cli(home, "import", input=code)
    assert res.returncode == 1
    assert "device" in res.stderr and "fresh home" in res.stderr, res.stderr
    assert sid not in [s["id"] for s in r.client().list_sessions()["sessions"]]


# ------------------------------------------------------------------------------ errors that were hidden
def test_pull_errors_are_shown_and_verify_says_revoked(make_daemon, url):
    a = make_daemon(url).start()
    b = make_daemon(url).start()
    sid = a.client().create_session(name="revoked")["id"]
    a.client().append(sid, "user", "before")
    b.client().import_code(a.client().share(sid)["code"])  # a read-only follower
    a.client().rekey(sid)
    a.client().append(sid, "user", "after")
    a.client().sync(wait=True)
    res = run_cli(b.home, "sync", "--wait")
    assert res.returncode == 1
    assert "rekeyed" in res.stdout + res.stderr, (res.stdout, res.stderr)
    assert f"{sid}: synced" not in res.stdout
    st = run_cli(b.home, "status", "--sessions")
    assert st.returncode == 0
    assert "everything pushed" not in st.stdout and "rekeyed" in st.stdout, st.stdout
    assert cli_json(b.home, "status")["sync"][sid]["state"] == "error"
    shown = run_cli(b.home, "show", sid).stdout  # (was: `sync: error, revision N, 0 pending`, not saying why)
    assert "sync:          error" in shown and "cannot pull: " in shown and "rekeyed" in shown, shown
    rep = run_cli(b.home, "verify")
    assert rep.returncode == 1
    assert "revoked" in rep.stdout and "damaged" not in rep.stdout, rep.stdout


def test_failed_import_creates_no_store_folder(make_daemon, url, tmp_path):
    a = make_daemon(url).start()
    sid = a.client().create_session()["id"]
    code = a.client().share(sid)["code"]
    b = make_daemon().start()  # its own store: the code's store is only a hint
    a.stop()
    shutil.rmtree(url[len("file://") :])  # the code's store is gone
    res = run_cli(b.home, "import", input=code)
    assert res.returncode == 1
    assert not os.path.exists(url[len("file://") :])


def test_start_with_another_store_on_a_running_daemon_is_refused(make_daemon, url, tmp_path):
    a = make_daemon(url).start()
    other = "file://" + str(tmp_path / "other")
    res = run_cli(a.home, "start", "--store", other)
    assert res.returncode != 0
    assert "running" in res.stderr and url in res.stderr, res.stderr
    assert run_cli(a.home, "start", "--store", url).returncode == 0  # the same store: just running
    assert run_cli(a.home, "start").returncode == 0


# ------------------------------------------------------------------------------ the store is remembered
def test_restart_without_store_keeps_the_store_it_started_with(make_daemon, url, tmp_path):
    a, b, sid, code = _shared(make_daemon, url)
    a.stop()
    a.store = None  # started again without --store: not the home's default store, the one it used
    a.start()
    assert a.client().status()["store"] == url
    a.client().append(sid, "user", "after a restart without --store")
    a.stop()
    a.store = url
    a.start()
    a.client().append(sid, "user", "and with it again")
    converged([a, b], sid, 5)
    verified(a)
    verified(b)
    third_sees_all(make_daemon, url, code, sid, contents(a, sid))
    # another store than the remembered one is refused, with what to do
    a.stop()
    a.store = "file://" + str(tmp_path / "elsewhere")
    with pytest.raises(RuntimeError) as e:
        a.start()
    assert url in str(e.value) and "--change-store" in str(e.value)
    assert not os.path.exists(tmp_path / "elsewhere")


def test_relative_store_path_is_made_absolute(make_daemon, tmp_path):
    d = make_daemon()
    env = {**os.environ}
    import subprocess
    import sys

    cwd = tmp_path / "here"
    cwd.mkdir()
    try:
        res = subprocess.run(
            [sys.executable, "-m", "sessiond.cli.main", "start", "--home", d.home, "--store", "rel-store"],
            cwd=cwd,
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert res.returncode == 0, res.stderr
        assert d.client().status()["store"] == "file://" + str(cwd / "rel-store")
    finally:
        run_cli(d.home, "stop")


def test_store_changed_in_config_toml_says_so(make_daemon, tmp_path):
    """The README's way to a relay: a home that already ran (on its default folder store) gets
    `store = ...` in config.toml. The refusal names config.toml, not a --store the user never gave,
    and `start --change-store` moves it."""
    d = make_daemon().start()
    first = d.client().status()["store"]
    d.stop()
    new = "file://" + str(tmp_path / "new-store")
    with open(os.path.join(d.home, "config.toml"), "w") as f:
        f.write(f'store = "{new}"\n')
    with pytest.raises(RuntimeError) as e:
        d.start()
    said = str(e.value)
    assert "config.toml" in said and "--change-store" in said and first in said, said
    assert "without --store" not in said
    try:
        res = run_cli(d.home, "start", "--change-store")
        assert res.returncode == 0, res.stderr
        assert d.client().status()["store"] == new
    finally:
        run_cli(d.home, "stop")


def test_a_folder_store_that_cannot_be_made_is_said_and_no_move_to_leave(make_daemon, tmp_path):
    """`--store file:///mnt/nas/x` with the share not mounted (here: a path under a file): the daemon starts
    (its sessions served, test_folder_store_unmounted), and says, in the words a push fails with, that the
    folder is missing or not a folder, no traceback; a store of which nothing was made is no store to move
    from: the next start with the right one needs no --change-store."""
    d = make_daemon()
    (tmp_path / "a-file").write_text("")
    bad = "file://" + str(tmp_path / "a-file" / "store")
    try:
        res = run_cli(d.home, "start", "--store", bad)
        assert res.returncode == 0, res.stderr
        said = res.stdout + res.stderr
        assert f"the store folder {tmp_path / 'a-file'} is missing or not a folder" in said, said
        assert "Error:" not in said, said
    finally:
        run_cli(d.home, "stop")
    good = "file://" + str(tmp_path / "store")
    try:
        res = run_cli(d.home, "start", "--store", good)
        assert res.returncode == 0, res.stderr
        assert d.client().status()["store"] == good
    finally:
        run_cli(d.home, "stop")


def test_change_store_confirmed_pushes_everything_there(make_daemon, url, tmp_path):
    a, b, sid, code = _shared(make_daemon, url)
    own = a.client().create_session(name="not shared")["id"]
    a.client().append(own, "user", "mine only")
    a.client().sync(wait=True)
    a.stop()
    new = "file://" + str(tmp_path / "new-store")
    try:
        res = run_cli(a.home, "start", "--store", new, "--change-store")
        assert res.returncode == 0, res.stderr
        assert a.client().status()["store"] == new
        a.client().sync(wait=True)
        rep = verified(a)  # the unshared session is all in the new store
        assert {s["session"] for s in rep["sessions"]} == {sid, own}
        a.client().append(sid, "user", "the shared one still syncs where its code points")
        converged([a, b], sid, 4)
        verified(b)
    finally:
        run_cli(a.home, "stop")


def test_sync_pushes_again_what_the_store_lost(make_daemon, url, store_dir):
    a = make_daemon(url).start()
    sid = a.client().create_session(name="lost")["id"]
    a.client().append_many(sid, [{"role": "user", "content": f"m{i}"} for i in range(40)])
    a.client().sync(wait=True)
    verified(a)
    shutil.rmtree(os.path.join(store_dir, "objects"))  # the store lost every object
    os.makedirs(os.path.join(store_dir, "objects"))
    rep = run_cli(a.home, "verify")
    assert rep.returncode == 1 and "missing" in rep.stdout, rep.stdout
    res = run_cli(a.home, "sync", "--wait")
    assert res.returncode == 0, res.stdout + res.stderr
    verified(a)
    b = make_daemon(url).start()  # and a new importer gets everything
    b.client().import_code(a.client().share(sid)["code"])
    assert contents(b, sid) == contents(a, sid)


def test_a_store_folder_removed_whole_is_not_made_again_until_made_by_hand(make_daemon, url, store_dir):
    """The folder store removed whole under a running daemon (a synced folder wiped, a share not mounted):
    the next push made the folder again, on whatever disk its path was now on, and `sync` said all was
    pushed. Now the store is unreachable, naming its folder, and nothing is made; once a store is there
    again (here an empty one, made by hand: its objects/ and heads/), `sync --wait` pushes the whole log."""
    a = make_daemon(url).start()
    sid = a.client().create_session(name="wiped")["id"]
    a.client().append_many(sid, [{"role": "user", "content": f"m{i}"} for i in range(10)])
    a.client().sync(wait=True)
    verified(a)
    shutil.rmtree(store_dir)
    a.client().append(sid, "user", "after the wipe")
    res = run_cli(a.home, "sync", "--wait", "--timeout", "3")
    assert res.returncode != 0 and f"the store folder {store_dir} is missing" in res.stdout, res.stdout + res.stderr
    assert not os.path.exists(store_dir)
    for sub in ("objects", "heads"):
        os.makedirs(os.path.join(store_dir, sub))
    res = run_cli(a.home, "sync", "--wait", "--timeout", "20")
    assert res.returncode == 0, res.stdout + res.stderr
    verified(a)
    b = make_daemon(url).start()  # and a new importer gets everything
    b.client().import_code(a.client().share(sid)["code"])
    assert contents(b, sid) == contents(a, sid)


def test_sync_repairs_a_lost_page_that_verify_found(make_daemon, url, store_dir, tmp_path):
    a = make_daemon(url).start()
    sid = a.client().create_session(name="lost page")["id"]
    for i in range(5):  # a few pushes: a few pages
        a.client().append(sid, "user", f"m{i}")
        a.client().sync(wait=True)
    objs = sorted(
        (os.path.join(r, f) for r, _, fs in os.walk(os.path.join(store_dir, "objects")) for f in fs),
        key=os.path.getmtime,
    )
    # the oldest object the session still needs: a page of the first push (the oldest file may be that
    # push's manifest instead, which a later one replaced: written in one batch, either can be first)
    for victim in objs:
        shutil.move(victim, tmp_path / "lost")
        rep = run_cli(a.home, "verify")
        if rep.returncode != 0:
            break
        shutil.move(tmp_path / "lost", victim)  # not needed any more: put back, try the next
    assert rep.returncode == 1, rep.stdout
    res = run_cli(a.home, "sync", "--wait")
    assert res.returncode == 0, res.stdout + res.stderr
    verified(a)


def test_import_after_rm_ignores_a_key_file_left_for_the_deleted_session(make_daemon, url):
    """A key file can outlive its session: a push under way when `rm` deleted the key made a new one
    (`session_key(create=True)`), or a crash came between the delete and the key's removal. The import
    that brings the session back must use the code's key, not that leftover: with it, this device read
    the members slot under a wrong key ("chunk 0 fails authentication") and wrote under it."""
    a, b, sid, code = _shared(make_daemon, url)
    b.client().delete_session(sid)
    b.stop()
    leftover = os.open(os.path.join(b.home, "keys", "sessions", sid + ".key"), os.O_WRONLY | os.O_CREAT, 0o600)
    with open(leftover, "wb") as f:
        f.write(os.urandom(32))  # what the racing push (or the crash) leaves: a key file, 0600 as it writes them
    b.start()
    b.client().import_code(code)
    assert contents(b, sid) == [("user", "a1"), ("assistant", "b1"), ("assistant", "b2")]
    res = b.client().sync(sid, wait=True, timeout=10)
    assert res["complete"], res
    b.client().append(sid, "user", "b3")
    converged([a, b], sid, 4)
    verified(a)
    verified(b)
    third_sees_all(make_daemon, url, code, sid, contents(a, sid))
