"""What is kept for a while (an append's idempotency key, an object gc lets go after its grace) stays kept for
that while whatever the wall clock does: a step forward must not forget what was made minutes ago, nor a step
back make the newest the first forgotten (storage/clock.py `steady`)."""

from __future__ import annotations

from clocks import DAY, clocked
from conftest import run_cli

PRUNE_EVERY = 64  # storage/messages.py: appends between two prunings of a session's keys
KEEP = 1000  # storage/messages.py: the keys a session keeps at least


def _appends(c, sid: str, n: int, prefix: str) -> None:
    for i in range(n):
        c.append(sid, "user", f"{prefix} {i}", idempotency_key=f"{prefix}-{i}")


def _contents(c, sid: str) -> list[str]:
    return [m["content"] for m in c.messages(sid, limit=5000)["messages"]]


def test_a_retry_after_a_clock_step_forward_is_not_appended_twice(make_daemon):
    d, clock = clocked(make_daemon)
    c = d.start().client()
    sid = c.create_session(name="retried")["id"]
    first = c.append(sid, "user", "once", idempotency_key="acknowledged")
    clock.step(2 * DAY)  # (an NTP step, a laptop's clock set right: minutes later by the machine)
    _appends(c, sid, PRUNE_EVERY, "after")  # (the session's log passes a pruning of its keys)
    again = c.append(sid, "user", "once", idempotency_key="acknowledged")  # the app's retry of the first
    assert again["id"] == first["id"]
    assert _contents(c, sid).count("once") == 1


def test_a_retry_after_a_restart_over_a_clock_step_forward_is_not_appended_twice(make_daemon):
    # (the clock set right while no daemon ran: a key of the run before is of unknown age, kept as promised)
    d, clock = clocked(make_daemon)
    c = d.start().client()
    sid = c.create_session(name="retried")["id"]
    first = c.append(sid, "user", "once", idempotency_key="acknowledged")
    d.stop()
    clock.step(2 * DAY)
    c = d.start().client()
    _appends(c, sid, PRUNE_EVERY, "after")
    again = c.append(sid, "user", "once", idempotency_key="acknowledged")
    assert again["id"] == first["id"]
    assert _contents(c, sid).count("once") == 1


def test_a_clock_step_back_forgets_the_oldest_keys_first(make_daemon):
    d, clock = clocked(make_daemon)
    c = d.start().client()
    sid = c.create_session(name="many")["id"]
    _appends(c, sid, KEEP, "before")
    clock.step(-DAY)
    newest = c.append(sid, "user", "newest", idempotency_key="newest")
    _appends(c, sid, PRUNE_EVERY, "after")  # (a pruning, with more than KEEP keys)
    again = c.append(sid, "user", "newest", idempotency_key="newest")
    assert again["id"] == newest["id"]
    assert _contents(c, sid).count("newest") == 1


def _pushed(d, sid: str) -> None:
    res = run_cli(d.home, "sync", sid, "--wait", "--timeout", "60")
    assert res.returncode == 0, res


def test_gc_s_grace_is_not_shortened_by_a_clock_step_forward(make_daemon, store_dir):
    # each push lets go the manifest its head left: a follower mid-read may still be reading it, so gc frees it
    # only after its grace (24 h by default), which a clock stepped forward must not make pass at once
    d, clock = clocked(make_daemon, store=f"file://{store_dir}")
    c = d.start().client()
    sid = c.create_session(name="pushed", initial_messages=[{"role": "user", "content": "hi"}])["id"]
    _pushed(d, sid)
    c.append(sid, "user", "more")
    _pushed(d, sid)  # (the first head's manifest let go)
    assert c.gc(dry_run=True, grace=0)["objects"] > 0  # (there is something gc would free at once)
    clock.step(2 * DAY)
    report = c.gc()
    assert report["objects"] == 0 and report["kept"] > 0, report
