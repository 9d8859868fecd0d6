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
    monkeypatch.setattr(activity, "_counted", [0.0])  # (the steps as counted: none)
    activity._note("s", 100.0)
    try:
        now["stepped"] = 0.003  # (drift)
        assert activity.judged("s", 100.0) == 100.0
        now["stepped"] = -0.004
        assert activity.judged("s", 100.0) == 100.0
        now["stepped"] = 3600.0  # (a step of an hour forward: the stamp is an hour later by the clock as it reads)
        assert activity.judged("s", 100.0) == 3700.0
        # after a step, the clocks drift apart as before: the session, still not written to, keeps its listed time
        # (the drift was taken as a step again once one had happened: `ls` twice disagreed by a few ms after any step)
        for drift in (0.003, -0.002, 0.0004):
            now["stepped"] = 3600.0 + drift
            assert activity.judged("s", 100.0) == 3700.0, drift
        assert activity.most_set_back() == 0.0
        # steps under a second, each missed alone, are counted once they add up to one (not lost for good)
        for small, listed in ((0.4, 3700.0), (0.8, 3700.0), (1.2, 3701.2), (1.21, 3701.2)):
            now["stepped"] = 3600.0 + small
            assert activity.judged("s", 100.0) == listed, small
        now["stepped"] = 3000.0  # (a step back: a stamp of this run judged earlier, which older_than looks for)
        assert activity.judged("s", 100.0) == 3100.0 and activity.most_set_back() == 0.0
        activity._note("t", 50.0)
        now["stepped"] = 2000.0
        assert activity.judged("t", 50.0) == -950.0 and activity.most_set_back() == 1000.0
    finally:
        activity._note("s", None)
        activity._note("t", None)
