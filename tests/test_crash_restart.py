"""kill -9 of a start that is finishing what an earlier kill -9 cut short (an end's final checkpoint, a
half-made fork, a share's members slot, an import's first batch): killed again, at random moments of its
start, several times, the start after finishes it once, as the first would have: one final checkpoint, no
fork left half-made, the members slot written, no part of the import; verify and doctor are clean. The
single kills are tests/test_crash_ops.py's, test_crash_share.py's and test_import.py's."""

from __future__ import annotations

import os
import random
import subprocess
import time

import pytest

from conftest import cli_json, popen_cli, run_cli, wait_for
from sessiond.client import ApiError

STARTS = 8


def _killed_while_starting(d, delay: float) -> None:
    """Start `d` and kill it (SIGKILL) `delay` seconds later, whether it said it was ready or not (a start takes
    some 60 ms from the tests' fork server)."""
    r, w = os.pipe()
    proc = popen_cli(
        ["daemon", "--home", d.home, "--ready-fd", str(w), "--store", d.store],
        env=d.env,
        pass_fds=(w,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(w)
    time.sleep(delay)  # the scenario: a kill at a random moment of the start
    proc.kill()
    proc.wait()
    os.close(r)


def _crashed_at(d, point: str, *args: str, input: str | None = None) -> None:
    """`sessiond ARGS` on `d` with its daemon set to die at `point`; the daemon left dead."""
    d.env["SESSIOND_CRASH_AT"] = point
    d.restart()
    res = run_cli(d.home, *args, "--json", input=input)
    assert res.returncode != 0, res.stdout
    d.proc.wait(10)
    d.env.pop("SESSIOND_CRASH_AT")


def _messages(d, sid: str) -> list[str]:
    return [m["content"] for m in d.client().messages(sid, limit=100_000, all_chats=True)["messages"]]


def _absent(d, sid: str) -> bool:
    try:
        d.client().get_session(sid)
    except ApiError as exc:
        return exc.status == 404
    return False


def _clean(d) -> bool:
    if run_cli(d.home, "sync", "--wait").returncode != 0:
        return False
    return run_cli(d.home, "verify", "--json").returncode == 0 and run_cli(d.home, "doctor", "--json").returncode == 0


@pytest.mark.parametrize("point", ["end.ended", "fork.copied", "share:remote", "import.chunk"])
def test_a_start_killed_while_it_finishes_what_a_kill_cut_short_is_finished_by_the_next(make_daemon, store_dir, point):
    url = f"file://{store_dir}"
    a, b = make_daemon(url).start(), make_daemon(url).start()
    ca = a.client()
    sid = ca.create_session(name="s")["id"]
    n = 12_000 if point == "import.chunk" else 30  # an import's batches: 5,000 messages or so each
    for i in range(0, n, 6000):
        ca.append_many(sid, [{"role": "user", "content": f"m{j}"} for j in range(i, min(n, i + 6000))])
    ca.compact(sid, target_tokens=10)
    want = _messages(a, sid)
    victim = b if point == "import.chunk" else a
    if point == "end.ended":
        _crashed_at(a, point, "end", sid)
    elif point == "fork.copied":
        at = ca.messages(sid, limit=30)["messages"][24]["id"]
        _crashed_at(a, point, "fork", sid, "--at", at, "--id", "forked")
    elif point == "share:remote":
        _crashed_at(a, point, "share", sid, "--write")
    else:
        code = ca.share(sid)["code"]
        _crashed_at(b, point, "import", input=code)

    rnd = random.Random(int(os.environ.get("CRASH_SEED", "1")))
    for _ in range(STARTS):
        _killed_while_starting(victim, rnd.uniform(0.0, 0.12))
    victim.start()

    if point == "end.ended":
        c = a.client()
        assert c.get_session(sid)["status"] == "ended"
        finals = [k for k in c.checkpoints(sid)["checkpoints"] if k["messages"] == n]
        assert len(finals) == 1, c.checkpoints(sid)  # made once, however many starts were killed
    elif point == "fork.copied":
        assert _absent(a, "forked")
        assert a.client().fork(sid, at, new_id="forked")["id"] == "forked"
        assert _messages(a, "forked") == want[:25]
    elif point == "share:remote":
        b.client().import_code(a.client().share(sid, write=True)["code"])
        b.client().append(sid, "user", "from b")
        wait_for(
            lambda: a.client().sync(sid, wait=True, timeout=10) and _messages(a, sid)[-1] == "from b",
            timeout=30,
            what="b's write reaches a",
        )
    else:
        assert _absent(b, sid)
        assert b.client().status()["counts"]["messages"] == 0
        b.client().import_code(code)
        assert _messages(b, sid) == want
    assert _messages(a, sid)[:n] == want
    wait_for(lambda: _clean(victim), timeout=30, what="verify and doctor clean")
    assert cli_json(victim.home, "verify")["ok"]


def test_a_stop_killed_at_random_moments_of_its_shutdown_loses_nothing_acknowledged(make_daemon, store_dir):
    """`sessiond stop` (SIGTERM: automatic checkpoints made, answers under way ended, pushes let go, the
    database closed) cut by kill -9 at random moments of it, with appends and checkpoints just answered:
    after each, the next start serves every acknowledged message and checkpoint, verify and doctor clean."""
    d = make_daemon(f"file://{store_dir}").start()
    c = d.client()
    sid = c.create_session(name="stopped", checkpoint_interval=50)["id"]
    acked: list[str] = []
    proofs: list[dict] = []
    rnd = random.Random(int(os.environ.get("CRASH_SEED", "1")))
    for k in range(STARTS):
        c = d.client()
        texts = [f"{k}.{j}" for j in range(20)]
        c.append_many(sid, [{"role": "user", "content": t, "tokens": 5} for t in texts])
        acked.extend(texts)
        proofs.append({key: v for key, v in c.checkpoint(sid).items() if key != "made"})
        c.append(sid, "user", f"{k}.last", tokens=60)  # past the checkpoint mark: one due at the stop
        acked.append(f"{k}.last")
        d.proc.terminate()
        time.sleep(rnd.uniform(0.0, 0.08))  # the scenario: a kill at a random moment of the stop
        d.kill()
        d.start()
        assert _messages(d, sid) == acked
        for p in proofs:
            assert d.client().verify_proof(sid, p)["ok"], p
    wait_for(lambda: _clean(d), timeout=30, what="verify and doctor clean")
