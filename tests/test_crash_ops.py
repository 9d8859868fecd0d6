"""kill -9 in the middle of operations that write more than one transaction: after the restart nothing
half-done is visible (a session is there whole or not at all), what was acknowledged is there, and verify
and doctor are clean. SESSIOND_CRASH_AT names the point where the daemon dies (os._exit, as under kill -9)."""

from __future__ import annotations

from conftest import cli_json, run_cli
from sessiond.client import ApiError


def _clean(d) -> None:
    rep = cli_json(d.home, "verify")
    assert rep["ok"], rep
    res = run_cli(d.home, "doctor", "--json")
    assert res.returncode == 0, res.stdout


def _all_messages(c, sid: str) -> list[str]:
    return [m["content"] for m in c.messages(sid, limit=100_000)["messages"]]


def test_a_fork_killed_part_way_is_not_left_half_made(make_daemon, store_dir):
    """A fork writes its session, then the copied history, then the chats' compaction cutoffs: a crash
    between them left a fork with no messages (or no cutoffs), listed and pushed as if whole."""
    for point in ("fork.created", "fork.copied"):
        d = make_daemon(f"file://{store_dir}").start()
        c = d.client()
        sid = c.create_session(name="source")["id"]
        c.append_many(sid, [{"role": "user", "content": f"m{i}", "tokens": 10} for i in range(20)])
        c.compact(sid, target_tokens=50)  # a cutoff the fork must copy (set before the fork's point)
        c.append_many(sid, [{"role": "user", "content": f"m{i}", "tokens": 10} for i in range(20, 25)])
        at = c.messages(sid, limit=100)["messages"][-1]["id"]
        d.env["SESSIOND_CRASH_AT"] = point
        d.restart()
        res = run_cli(d.home, "fork", sid, "--at", at, "--id", "forked", "--json")
        assert res.returncode != 0, res.stdout  # the daemon died answering it: not acknowledged
        d.proc.wait(10)
        d.env.pop("SESSIOND_CRASH_AT")
        d.start()
        c = d.client()
        ids = [s["id"] for s in c.list_sessions()["sessions"]]
        assert "forked" not in ids, (point, ids)  # not half there: absent
        try:
            c.get_session("forked")
            raise AssertionError(f"{point}: a half-made fork is still there")
        except ApiError as exc:
            assert exc.status == 404
        assert _all_messages(c, sid) == [f"m{i}" for i in range(25)]
        _clean(d)
        # the fork asked again is made whole, with the source's cutoff
        new = c.fork(sid, at, new_id="forked")
        assert new["id"] == "forked"
        assert _all_messages(c, "forked") == [f"m{i}" for i in range(25)]
        assert c.context("forked")["compacted_upto"] is not None
        d.stop()

