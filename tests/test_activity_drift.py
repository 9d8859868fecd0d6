"""A session's last activity as listed (storage/activity.py `judged`) is shifted by the wall clock's steps since it
was stamped; the wall clock and the clock since boot also drift apart by milliseconds (NTP slewing, each read's
own delay), which was taken for a step: a session nothing wrote to listed two `last_activity`s 3 ms apart in two
reads (a fresh clone's run: test_idempotency_key_elsewhere's listing before and after a refused request). A drift
under a second is not a step; a step is still counted."""

from __future__ import annotations

from sessiond.storage import activity


def test_a_drift_between_the_clocks_is_not_a_step_and_a_step_is(monkeypatch):
    now = {"stepped": 0.0}
    monkeypatch.setattr(activity, "stepped", lambda: now["stepped"])
    activity._note("s", 100.0)
    try:
        now["stepped"] = 0.003  # (drift)
        assert activity.judged("s", 100.0) == 100.0
        now["stepped"] = -0.004
        assert activity.judged("s", 100.0) == 100.0
        now["stepped"] = 3600.0  # (a step of an hour forward: the stamp is an hour later by the clock as it reads)
        assert activity.judged("s", 100.0) == 3700.0
    finally:
        activity._note("s", None)
