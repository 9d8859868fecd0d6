"""`rm` of a shared session that holds changes of this device not pushed yet (its store down) deleted them
with it, silently: the devices it is shared with never receive them, and importing its code again does not
bring them back, though `rm` said nothing and the README promised "this device's own messages included".
Now it refuses, changing nothing, naming how many changes wait and the two ways on (push them first, or
`rm --force` to give them up); a session not shared, or one whose changes are all pushed, is deleted as
before. Two real daemons on one folder store."""

from __future__ import annotations

import json
import os

import pytest

from conftest import cli_json, run_cli, write_config
from sessiond.client import ApiError


def contents(d, sid) -> list[str]:
    return [m["content"] for m in d.client().messages(sid, limit=1000)["messages"]]


def test_rm_refuses_to_drop_a_shared_session_s_unpushed_changes(make_daemon, tmp_path):
    store, away = str(tmp_path / "store"), str(tmp_path / "away")
    a = make_daemon(f"file://{store}").start()
    b = make_daemon(f"file://{store}").start()
    ca, cb = a.client(), b.client()
    sid = ca.create_session(name="shared")["id"]
    ca.append(sid, "user", "pushed")
    cb.import_code(ca.share(sid, write=True)["code"])
    assert ca.sync(sid, wait=True, timeout=20)["complete"]

    os.rename(store, away)  # the share unmounted
    ca.append(sid, "user", "written while the store is away")

    res = run_cli(a.home, "rm", sid)
    assert res.returncode == 1, res.stdout + res.stderr
    said = res.stderr
    assert "1 change" in said and "not pushed" in said, said
    assert f"sessiond sync --home {a.home} {sid} --wait" in said, said
    assert "--force" in said, said
    assert "written while the store is away" in contents(a, sid)  # nothing changed
    with pytest.raises(ApiError) as e:
        ca.delete_session(sid)
    assert e.value.status == 409 and e.value.code == "not_pushed", e.value

    os.rename(away, store)  # back: pushed, then deleted as asked
    assert ca.sync(sid, wait=True, timeout=20)["complete"]
    assert json.loads(run_cli(a.home, "rm", sid, "--json", check=True).stdout) == {"deleted": sid}
    cb.sync(sid, wait=True, timeout=20)
    assert "written while the store is away" in contents(b, sid)


def test_rm_force_gives_unpushed_changes_up_and_unshared_sessions_need_no_push(make_daemon, tmp_path):
    store, away = str(tmp_path / "store"), str(tmp_path / "away")
    a = make_daemon(f"file://{store}")
    write_config(a.home, push_delay=3600)  # only an asked sync pushes
    a.start()
    ca = a.client()
    alone = cli_json(a.home, "new", "--name", "only here")["id"]
    ca.append(alone, "user", "never pushed")
    assert cli_json(a.home, "rm", alone) == {"deleted": alone}  # not shared: nothing another device waits for

    sid = ca.create_session(name="shared")["id"]
    ca.share(sid, write=True)
    assert ca.sync(sid, wait=True, timeout=20)["complete"]
    os.rename(store, away)
    ca.append(sid, "user", "given up")
    assert run_cli(a.home, "rm", sid).returncode == 1
    assert cli_json(a.home, "rm", sid, "--force") == {"deleted": sid}
    assert sid not in [s["id"] for s in ca.list_sessions()["sessions"]]


def test_cleanup_keeps_a_shared_session_with_unpushed_changes_and_says_so(make_daemon, tmp_path):
    """The clean-up deletes idle sessions; one shared, whose store has been away since its last changes,
    went with them, as `rm` did: those changes lost for every device. It is kept now, and named with why."""
    store, away = str(tmp_path / "store"), str(tmp_path / "away")
    a = make_daemon(f"file://{store}").start()
    ca = a.client()
    alone = ca.create_session(name="only here")["id"]
    sid = ca.create_session(name="shared")["id"]
    ca.share(sid, write=True)
    assert ca.sync(sid, wait=True, timeout=20)["complete"]
    os.rename(store, away)
    ca.append(sid, "user", "not pushed")

    would = ca.cleanup(0, dry_run=True)
    assert [s["id"] for s in would["sessions"]] == [alone], would
    res = ca.cleanup(0)
    assert [s["id"] for s in res["sessions"]] == [alone], res
    assert [s["id"] for s in res["kept"]] == [sid] and "not pushed" in res["kept"][0]["reason"], res
    assert [s["id"] for s in ca.list_sessions()["sessions"]] == [sid]
    out = run_cli(a.home, "cleanup", "--older-than", "1h", "--dry-run").stdout  # (idle for less: none listed)
    assert "0 session(s)" in out, out


def test_rm_right_after_a_write_pushes_it_first_then_deletes(make_daemon, tmp_path):
    """Changes not pushed only because their push has not come yet (the store answers) are pushed by the
    `rm` itself, then the session deleted: not refused as if the store were down."""
    store = str(tmp_path / "store")
    a = make_daemon(f"file://{store}")
    write_config(a.home, push_delay=3600)  # only an asked sync pushes
    a.start()
    b = make_daemon(f"file://{store}").start()
    ca, cb = a.client(), b.client()
    sid = ca.create_session(name="shared")["id"]
    cb.import_code(ca.share(sid, write=True)["code"])
    ca.append(sid, "user", "written just before the rm")
    assert ca.get_session(sid)["sync"]["pending"] == 1

    assert cli_json(a.home, "rm", sid) == {"deleted": sid}
    cb.sync(sid, wait=True, timeout=20)
    assert "written just before the rm" in contents(b, sid)
