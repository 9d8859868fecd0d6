"""kill -9 of either device at random moments while A pauses, resumes and at last ends a shared session that
B appends to (an append refused as paused or ended is no acknowledgement): after the restarts every
acknowledged message is on both devices once, in one order, both show the session ended, and neither takes
a message any more; verify and doctor are clean on both. CRASH_KILLS sets how many kills."""

from __future__ import annotations

import os
import threading
import time

from conftest import wait_for
from killing import agreeing, calls, converge, each_writing, killed_while, progressing, shared_writers
from sessiond.client import ApiError, Client

KILLS = int(os.environ.get("CRASH_KILLS", 8))


def refused(exc: ApiError) -> bool:
    """An append the session's status refused (paused or ended): not acknowledged, and the loop goes on."""
    return exc.status == 409 and exc.code == "conflict"


def test_pauses_resumes_and_an_end_killed_at_random_moments_converge(make_daemon, store_dir):
    a, b, sid = shared_writers(make_daemon, f"file://{store_dir}", "paused")
    acked: list[str] = ["first"]
    errors: list[BaseException] = []
    end_now, ended = threading.Event(), threading.Event()
    counts = {"paused": 0, "refused": 0}

    def append(c: Client, i: int) -> None:
        try:
            c.append(sid, "user", f"b{i}")
            acked.append(f"b{i}")
        except ApiError as exc:
            if not refused(exc):
                raise
            counts["refused"] += 1
            time.sleep(0.02)
        if i % 5 == 0:
            c.sync(sid, wait=True, timeout=10)

    def status(c: Client, i: int) -> None:
        if end_now.is_set():
            if not ended.is_set():
                c.end(sid)  # (asked again after a kill: an ended session's end is refused, below)
                ended.set()
            time.sleep(0.05)
            return
        if i % 3 == 0:
            c.pause(sid)
            counts["paused"] += 1
            c.sync(sid, wait=True, timeout=10)
            c.resume(sid)
        c.append(sid, "user", f"a{i}")
        acked.append(f"a{i}")

    def a_status(c: Client, i: int) -> None:
        try:
            status(c, i)
        except ApiError as exc:
            if not refused(exc):
                raise
            if end_now.is_set() and c.get_session(sid)["status"] == "ended":
                ended.set()  # an end the kill cut after its commit: ended all the same
            elif c.get_session(sid)["status"] == "paused":
                c.resume(sid)  # a pause the kill cut between it and its resume

    progress = progressing(acked, errors)

    def before(k: int, rnd) -> None:
        if k < KILLS - 2:  # (after the end nothing is acknowledged any more)
            progress(k, rnd)
        if k == KILLS - 2:
            end_now.set()

    killed_while(
        [
            lambda stop: calls(b.home, append, stop, errors, timeout=20),
            lambda stop: calls(a.home, a_status, stop, errors),
        ],
        [a, b],
        KILLS,
        between=before,
    )
    assert not errors, errors
    if not ended.is_set():
        try:
            a.client().end(sid)
        except ApiError as exc:
            assert refused(exc) and a.client().get_session(sid)["status"] == "ended", exc
    # one acknowledged a kill at least before the end (however slow the machine)
    assert counts["paused"] and len(acked) >= 1 + KILLS - 2, (counts, len(acked))

    log = converge([a, b], sid, acked)
    for d in (a, b):
        wait_for(lambda d=d: d.client().get_session(sid)["status"] == "ended", timeout=30, what="ended on both")
        try:
            d.client().append(sid, "user", "after the end")
            raise AssertionError("an ended session took a message")
        except ApiError as exc:
            assert refused(exc), exc
    assert log == converge([a, b], sid, acked)


def test_pauses_and_resumes_on_both_writers_killed_at_random_moments_converge(make_daemon, store_dir):
    """Both devices pause, resume and append (each refused while it sees the session paused): after the kills
    both show the same status and every acknowledged message, once, in one order."""
    a, b, sid = shared_writers(make_daemon, f"file://{store_dir}", "paused twice")
    acked: list[str] = ["first"]
    errors: list[BaseException] = []

    def worker(name: str):
        def work(c: Client, i: int) -> None:
            try:
                if i % 4 == 0:
                    c.pause(sid)
                elif i % 4 == 2:
                    c.resume(sid)
                c.append(sid, "user", f"{name}{i}")
                acked.append(f"{name}{i}")
            except ApiError as exc:
                if not refused(exc):
                    raise
                time.sleep(0.02)
                if c.get_session(sid)["status"] == "paused" and i % 3 == 0:
                    c.resume(sid)
            if i % 3 == 0:
                c.sync(sid, wait=True, timeout=10)

        return work

    each_writing({"a": a, "b": b}, worker, errors, KILLS)
    assert not errors, errors
    converge([a, b], sid, acked)
    agreeing([a, b], sid, lambda d, sid: d.client().get_session(sid)["status"], "the same status on both")
