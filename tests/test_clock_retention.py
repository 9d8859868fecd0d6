"""What is kept for a while (an append's idempotency key, an object gc lets go after its grace) stays kept for
that while whatever the wall clock does: a step forward must not forget what was made minutes ago, nor a step
back make the newest the first forgotten (storage/clock.py `steady`)."""

from __future__ import annotations

from clocks import DAY, clocked

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
