"""kill -9 in the middle of `start --change-store`: the home is told of the new store (store-url) and the
database of the move (the sessions shared through the old store stay there, every other one to be pushed
to the new store from its start). Killed before the home was told, the move is not made: a start that does
not ask for it again stays on the old store with nothing pushed again (the database had taken the move
alone: every session's log was pushed again from its start into the store it was in, and the pages of its
log before were left there, referenced by no head and never freed by gc); one that asks for it again makes
it. Killed after, the next start finishes it. Either way verify and doctor are clean, and a device following
a session shared through the old store converges with this one."""

from __future__ import annotations

import os

import pytest

from conftest import DaemonProc, cli_json, run_cli, wait_for


def _objects(store: str) -> set[str]:
    out: set[str] = set()
    for _path, _dirs, files in os.walk(os.path.join(store, "objects")):
        out.update(f for f in files if not f.startswith("."))
    return out


def _messages(c, sid: str) -> list[str]:
    return [m["content"] for m in c.messages(sid, limit=1000)["messages"]]


@pytest.mark.parametrize(
    "point, again",
    [("write:store-url", False), ("write:store-url", True), ("store:remembered", False)],
    ids=["before-told-stayed", "before-told-asked-again", "after-told"],
)
def test_a_store_move_killed_part_way_is_made_whole_or_not_at_all(tmp_path, point, again):
    first, second = str(tmp_path / "first"), str(tmp_path / "second")
    a = DaemonProc(str(tmp_path / "a"), f"file://{first}").start()
    follower = DaemonProc(str(tmp_path / "b"), f"file://{first}").start()
    try:
        c = a.client()
        private = c.create_session(name="mine")["id"]
        c.append(private, "user", "private")
        shared = c.create_session(name="shared")["id"]
        c.append(shared, "user", "shared")
        follower.client().import_code(c.share(shared)["code"])
        c.sync(wait=True)
        held = _objects(first)
        a.stop()
        crashed = {"SESSIOND_CRASH_AT": point}
        res = run_cli(a.home, "start", "--store", f"file://{second}", "--change-store", env=crashed)
        assert res.returncode != 0, res.stdout + res.stderr  # killed in the middle of the move
        moved = point == "store:remembered" or again
        if again:
            res = run_cli(a.home, "start", "--store", f"file://{second}", "--change-store")
        else:
            res = run_cli(a.home, "start")
        assert res.returncode == 0, res.stdout + res.stderr
        c = a.client()
        cli_json(a.home, "sync", "--wait")
        if moved:
            assert _objects(second)  # the private session's log pushed to the new store
        else:
            assert _objects(first) == held  # no move: nothing pushed again, nothing left unreferenced
        rep = cli_json(a.home, "verify")
        assert rep["ok"], rep
        assert run_cli(a.home, "doctor", "--json").returncode == 0  # (its round trip writes an object)
        assert _messages(c, private) == ["private"]
        assert open(os.path.join(a.home, "store-url")).read().strip() == f"file://{second if moved else first}"
        c.append(shared, "user", "after the move")
        cli_json(a.home, "sync", "--wait")

        def followed() -> bool:
            follower.client().sync(shared, wait=True, timeout=10)
            return _messages(follower.client(), shared) == ["shared", "after the move"]

        wait_for(followed, timeout=30, what="the follower of the session shared through the old store")
        assert cli_json(follower.home, "verify")["ok"]
    finally:
        run_cli(a.home, "stop")
        follower.stop()
