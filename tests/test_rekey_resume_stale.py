"""A rekey cut short after its claim (its notice not published) is resumed at the next start: resumed while the
other writer's own rekey wrote the old members slot first, its notice's write was refused as stale, and the
refusal went out of the resume as it was: the pull (or the `rekey` call) that resumed it failed, a call
answered 500 internal ("the store holds revision N; revision N is not newer"). It looks at the slot again: the
other device's rekey came first, this one is given up, and this device takes that one (found by
tests/test_crash_rekey_race_loop.py)."""

from __future__ import annotations

import os
import threading

from conftest import run_cli, wait_for
from killing import session_key
from sessiond.client import ApiError, ClientError
from test_crash_rekey_loop import shared_pair


def test_a_resumed_rekey_beaten_to_the_old_slot_by_another_device_s_rekey_gives_way(make_daemon, store_dir, tmp_path):
    a, b, sid = shared_pair(make_daemon, store_dir)
    a.env["SESSIOND_CRASH_AT"] = "rekey:claimed"
    a.restart()
    assert run_cli(a.home, "rekey", sid).returncode != 0  # the daemon died on the way: claimed, not published
    assert a.proc.wait(10) == 137
    a.env.pop("SESSIOND_CRASH_AT")
    flag = str(tmp_path / "held")
    a.env["SESSIOND_TEST_PAUSE"] = f"rekey.notice_put:{flag}"
    a.start()
    answers: list = []

    def rekey() -> None:  # a rekey asked meanwhile: it resumes the one cut short, or waits for the pull that does
        try:
            answers.append(a.client().rekey(sid))
        except (ApiError, ClientError) as exc:
            answers.append(exc)

    asker = threading.Thread(target=rekey)
    asker.start()
    wait_for(lambda: os.path.exists(flag), timeout=20, what="the resumed rekey held with its notice put")
    b.client().rekey(sid)  # B's rekey writes the old slot first
    os.unlink(flag)
    asker.join(60)
    a.env.pop("SESSIOND_TEST_PAUSE")
    answer = answers[0]
    # given way: answered as the docs say of a rekey another device's came first (409 conflict), or a rekey
    # of its own once it took B's; never a 500
    assert not isinstance(answer, ApiError) or answer.status != 500, answer
    log = open(os.path.join(a.home, "logs", "sessiond.log")).read()
    assert "is not newer" not in log and "internal error" not in log

    def converged() -> bool:
        for d in (a, b):
            d.client().sync(sid, wait=True, timeout=10)
        return session_key(a, sid) == session_key(b, sid)

    wait_for(converged, timeout=30, what="A and B under one key")
