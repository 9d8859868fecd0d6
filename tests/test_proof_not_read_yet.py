"""`sessiond verify-proof` (POST /v1/sessions/{id}/verify-proof) on a device that has not read all of a
shared session yet: a proof signed by a writer this device has not read (it joined after this device's
last pull), or covering messages that have not arrived here yet, is not called unknown or "history was
changed": the answer says what is missing here and what to do (sync, or wait for the pull, then verify
again), and after that sync the proof verifies."""

from __future__ import annotations

import json

from conftest import run_cli, started_with


def shared_with_a_slow_follower(make_daemon, url):
    """A (the creator) and C, which imported a read-only code and pulls only when asked."""
    a = make_daemon(url).start()
    sid = a.client().create_session(name="proofs")["id"]
    a.client().append(sid, "user", "a1")
    c = started_with(lambda: make_daemon(url), sync_interval=3600, poll_interval=3600)
    c.client().import_code(a.client().share(sid)["code"])
    return a, c, sid


def says_to_sync_then_verifies(c, sid: str, proof: dict, says: str, not_says: str) -> None:
    """`c` answers that `proof` does not verify, saying `says` (not `not_says`) and to sync, then verify
    again; after that sync it verifies."""
    res = c.client().verify_proof(sid, proof)
    assert not res["ok"], res
    problem = res["problem"]
    assert not_says not in problem and says in problem, problem
    assert f"sessiond sync {sid}" in problem and "verify again" in problem, problem
    # the CLI says the same, and fails
    out = run_cli(c.home, "verify-proof", sid, "-", "--json", input=json.dumps(proof))
    assert out.returncode == 1 and says in out.stdout, out
    assert c.client().sync(sid, wait=True, timeout=30)["complete"]
    assert c.client().verify_proof(sid, proof)["ok"]


def test_a_proof_of_a_writer_this_device_has_not_read_yet_says_to_sync(make_daemon, store_dir):
    url = "file://" + store_dir
    a, c, sid = shared_with_a_slow_follower(make_daemon, url)
    b = make_daemon(url).start()  # a writer that joins after C's import
    b.client().import_code(a.client().share(sid, write=True)["code"])
    b.client().append(sid, "assistant", "b1")
    proof = b.client().checkpoint(sid)
    assert b.client().sync(sid, wait=True, timeout=30)["complete"]
    says_to_sync_then_verifies(c, sid, proof, says="not read yet", not_says="does not know")


def test_a_proof_covering_messages_not_here_yet_says_to_sync_not_that_history_changed(make_daemon, store_dir):
    url = "file://" + store_dir
    a, c, sid = shared_with_a_slow_follower(make_daemon, url)
    a.client().append(sid, "assistant", "a2")  # C has not pulled it
    proof = a.client().checkpoint(sid)
    assert a.client().sync(sid, wait=True, timeout=30)["complete"]
    says_to_sync_then_verifies(c, sid, proof, says="not arrived here yet", not_says="history was changed")


def test_a_proof_of_a_key_that_is_no_writer_is_still_called_unknown(make_daemon, store_dir):
    """A proof signed by a device that never wrote the session (here: of another session with the same
    messages, relabelled) is unknown as before: no sync makes it known."""
    url = "file://" + store_dir
    a, c, sid = shared_with_a_slow_follower(make_daemon, url)
    x = make_daemon(url).start()
    other = x.client().create_session(name="other")["id"]
    x.client().append(other, "user", "a1")
    proof = {**x.client().checkpoint(other), "session": sid}
    res = c.client().verify_proof(sid, proof)
    assert not res["ok"] and "does not know" in res["problem"] and "not read yet" not in res["problem"], res
