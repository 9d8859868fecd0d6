"""kill -9 of either writer at random moments while both append and one rekeys the session again and again
(each rekey a notice, a claim, a new key and a new members slot, resumed after a kill from its record): after
the restarts the writers converge on every acknowledged message once, under one key, and verify and doctor
are clean on both. The single crash points of a rekey: tests/test_merge.py, test_crash_unshare.py."""

from __future__ import annotations

import os
import subprocess

from conftest import popen_cli, run_cli, wait_for
from killing import calls, killed_while, rekeying

KILLS = 8


def _contents(d, sid: str) -> list[str]:
    return [m["content"] for m in d.client().messages(sid, limit=100_000)["messages"]]


def _clean(d) -> bool:
    if run_cli(d.home, "sync", "--wait").returncode != 0:
        return False
    return run_cli(d.home, "verify", "--json").returncode == 0 and run_cli(d.home, "doctor", "--json").returncode == 0


def test_rekeys_and_appends_killed_at_random_moments_converge_under_one_key(make_daemon, store_dir):
    url = f"file://{store_dir}"
    a, b = make_daemon(url).start(), make_daemon(url).start()
    sid = a.client().create_session(name="rekeyed")["id"]
    a.client().append(sid, "user", "first")
    b.client().import_code(a.client().share(sid, write=True)["code"])
    acked: list[str] = ["first"]
    errors: list[BaseException] = []

    def appender(name: str, d):
        def append(c, i: int) -> None:
            c.append(sid, "user", f"{name}{i}")
            acked.append(f"{name}{i}")

        return lambda stop: calls(d.home, append, stop, errors, timeout=20)

    rekeyed: list[int] = []

    killed_while(
        [
            appender("a", a),
            appender("b", b),
            lambda stop: calls(a.home, rekeying(sid, rekeyed), stop, errors, timeout=20),
        ],
        [a, b],
        KILLS,
        lo=0.1,
        hi=0.5,
    )
    assert not errors, errors

    last: dict = {}

    def converged() -> bool:
        logs = []
        for d in (a, b):
            d.client().sync(sid, wait=True, timeout=10)
            logs.append(_contents(d, sid))
        last["missing"] = sorted(set(acked) - set(logs[0]))[:10]
        last["apart"] = sorted(set(logs[0]) ^ set(logs[1]))[:10]
        return logs[0] == logs[1] and set(acked) <= set(logs[0])

    try:
        wait_for(converged, timeout=40, interval=0.5)
    except AssertionError:
        raise AssertionError(f"did not converge: {last}") from None
    mine = _contents(a, sid)
    assert len(mine) == len(set(mine))
    for d in (a, b):
        wait_for(lambda d=d: _clean(d), timeout=30, what="verify and doctor clean")
    keys = [open(os.path.join(d.home, "keys", "sessions", f"{sid}.key"), "rb").read() for d in (a, b)]
    assert keys[0] == keys[1]  # one key: the last rekey's
    assert rekeyed


def _arrived(flag: str) -> None:
    wait_for(lambda: os.path.exists(flag), timeout=20, what=f"the daemon held at {os.path.basename(flag)}")


def shared_pair(make_daemon, store_dir: str) -> tuple:
    """A and B started on the folder store, A's session of 5 messages shared read-write with B, pushed:
    (a, b, session)."""
    url = f"file://{store_dir}"
    a, b = make_daemon(url).start(), make_daemon(url).start()
    sid = a.client().create_session(name="rekeyed")["id"]
    a.client().append_many(sid, [{"role": "user", "content": f"m{i}"} for i in range(5)])
    b.client().import_code(a.client().share(sid, write=True)["code"])
    assert a.client().sync(sid, wait=True, timeout=30)["complete"]
    return a, b, sid


def killed_after_publishing_under_the_old_key(a, sid: str, tmp_path) -> None:
    """A (a daemon, started) rekeys shared session `sid`; a push of a message under the old key publishes its
    revision, held before its pushed mark while the rekey switches the keys, and A is killed there (kill -9)."""
    held = {p: str(tmp_path / p) for p in ("rekey.published", "push.published", "rekey.rotated")}
    a.env["SESSIOND_TEST_PAUSE"] = ",".join(f"{p}:{f}" for p, f in held.items())
    a.restart()
    rekey = popen_cli(["rekey", sid, "--home", a.home], env=dict(os.environ), stdout=subprocess.DEVNULL)
    try:
        _arrived(held["push.published"])  # the rekey's claim, pushed under the old key: let through
        os.unlink(held["push.published"])
        _arrived(held["rekey.published"])  # its notice out, the keys not switched yet
        a.client().append(sid, "user", "pushed under the old key")
        a.client().sync(sid)
        _arrived(held["push.published"])  # that push published, under the old key, not marked pushed
        os.unlink(held["rekey.published"])
        _arrived(held["rekey.rotated"])  # the keys switched
        a.kill()
    finally:
        rekey.kill()
        rekey.wait()
    a.env.pop("SESSIOND_TEST_PAUSE")


def test_a_push_under_the_old_key_killed_before_its_mark_while_a_rekey_switched_keys_syncs_after_the_restart(
    make_daemon, store_dir, tmp_path
):
    """A push that read the session's key before a rekey switched it publishes its revision sealed under the
    old key; killed before that revision was marked pushed, the restart published it again sealed under the
    new key, which was not the head in the store: "the store holds a newer head (revision N) for this
    device's log of S that this device did not write", every push and pull of the session failing for good
    (found by the random kills above). The store's head is this device's own revision: it stands, and a new
    one under the new key follows."""
    a, b, sid = shared_pair(make_daemon, store_dir)
    killed_after_publishing_under_the_old_key(a, sid, tmp_path)
    a.start()
    assert a.client().sync(sid, wait=True, timeout=30)["complete"]
    a.client().append(sid, "user", "after")
    b.client().append(sid, "user", "from b")

    def converged() -> bool:
        for d in (a, b):
            d.client().sync(sid, wait=True, timeout=10)
        return _contents(a, sid) == _contents(b, sid) and {"after", "from b"} <= set(_contents(a, sid))

    wait_for(converged, timeout=30, what="the devices converge after the rekey")
    for d in (a, b):
        wait_for(lambda d=d: _clean(d), timeout=30, what="verify and doctor clean")
