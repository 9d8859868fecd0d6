"""Small defects left open by the audits (h-smalls24), each through a real daemon."""

from __future__ import annotations

import os

from asking import in_thread
from conftest import wait_for
from sessiond.client import Client


def test_a_proofs_verification_hashes_off_the_event_loop(make_daemon, tmp_path):
    """`verify-proof` hashes the whole conversation (and, for a v2 proof, the setting: prompts of megabytes);
    it did so on the daemon's event loop, and every other client waited until it was done. Held in the middle
    of its hashing (the test hook `verify.hash`, which holds the thread doing it), the daemon answers another
    request meanwhile; let go, the verification ends as before."""
    flag = str(tmp_path / "verify.hash")
    d = make_daemon(env={"SESSIOND_TEST_PAUSE": f"verify.hash:{flag}"}).start()
    c = d.client()
    sid = c.create_session(system_prompt="p" * 100_000)["id"]
    for i in range(50):
        c.append(sid, "user", f"message {i}", tokens=1)
    proof = c.checkpoint(sid)
    verified: list = []
    verifying = in_thread(lambda: d.client().verify_proof(sid, proof), verified)
    try:
        wait_for(lambda: os.path.exists(flag), timeout=20, what="the verification held in its hashing")
        with Client(d.home, timeout=10) as other:  # the loop free: answered while the hashing is held
            assert other.status()
            assert other.get_session(sid)["id"] == sid
        assert not verified, "the verification ended while its hashing was held"
    finally:
        if os.path.exists(flag):
            os.remove(flag)
        verifying.join(timeout=30)
    assert verified and verified[0]["ok"], verified
    assert verified[0]["messages"] == 50
