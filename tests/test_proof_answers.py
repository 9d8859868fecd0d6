"""verify-proof answered a malformed proof 200 {"ok": false} but a proof of another session 422: one rule now.
A proof that cannot be checked against this session (malformed: a field missing or not of its shape; or
another session's) is the request's error, 422 `checkpoint` naming what is wrong and what to send instead;
a well-formed proof of this session that does not verify here (altered, unknown signer, another history, a
version this sessiond does not know) is 200 {"ok": false, "problem"}."""

from __future__ import annotations

import pytest

from sessiond.client import ApiError


@pytest.mark.parametrize(
    "change, named",
    [
        (lambda p: {k: v for k, v in p.items() if k != "hash"}, "hash"),
        (lambda p: {**p, "pk": "not hex"}, "pk"),
        (lambda p: {**p, "signature": 5}, "signature"),
        (lambda p: {**p, "frontier": [1, 2]}, "frontier"),
        (lambda p: {**p, "v": "two"}, "v (version)"),
    ],
)
def test_a_malformed_proof_is_the_requests_error(daemon, change, named):
    c = daemon.client()
    sid = c.create_session()["id"]
    c.append(sid, "user", "hello")
    proof = c.checkpoint(sid)
    with pytest.raises(ApiError) as exc:
        c.verify_proof(sid, change(proof))
    err = exc.value
    assert err.status == 422 and err.code == "checkpoint", err
    assert named in err.message and "sessiond checkpoints --json" in err.message, err.message
    assert c.verify_proof(sid, proof)["ok"] is True  # the proof as listed, unchanged: checked


def test_a_well_formed_proof_that_does_not_hold_is_answered_ok_false(daemon):
    c = daemon.client()
    sid = c.create_session()["id"]
    c.append(sid, "user", "hello")
    proof = c.checkpoint(sid)
    res = c.verify_proof(sid, {**proof, "tokens": proof["tokens"] + 1})
    assert res["ok"] is False and "signature" in res["problem"], res


def test_verify_proof_of_a_list_says_each_proof_a_malformed_one_among_them_too(daemon, tmp_path):
    """`sessiond verify-proof ID FILE` of a list (as `checkpoints --json` gives) printed FAILED for a malformed
    proof among them and went on; since such a proof is the request's error (422), the command stopped at it,
    the others unchecked. Each is said again: ok for those that verify, FAILED naming what is wrong, exit 1."""
    import json

    from conftest import run_cli

    c = daemon.client()
    sid = c.create_session()["id"]
    c.append(sid, "user", "hello")
    proof = c.checkpoint(sid)
    path = tmp_path / "proofs.json"
    path.write_text(json.dumps([{**proof, "pk": "not hex"}, proof]))
    res = run_cli(daemon.home, "verify-proof", sid, str(path))
    assert res.returncode == 1, res
    lines = res.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith("FAILED") and "pk" in lines[0], res.stdout
    assert lines[1].startswith("ok      checkpoint #"), res.stdout
    assert ": 1 message, " in lines[1], res.stdout  # (was "1 messages, ")
    res = run_cli(daemon.home, "verify-proof", sid, str(path), "--json")
    out = json.loads(res.stdout)
    assert res.returncode == 1 and out["ok"] is False and [r["ok"] for r in out["results"]] == [False, True], out
