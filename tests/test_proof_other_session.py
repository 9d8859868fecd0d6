"""A checkpoint given to another session's verify-proof was refused "the proof is for session A, not B": what
went wrong, not the way on (the proof names its session; verify it there). The refusal names that request,
in the message and in API terms (`details.api`), and the CLI's command."""

from __future__ import annotations

import pytest

from sessiond.client import ApiError


def test_a_proof_of_another_session_names_where_to_verify_it(daemon):
    c = daemon.client()
    a = c.create_session()["id"]
    b = c.create_session()["id"]
    c.append(a, "user", "hello")
    proof = c.checkpoint(a)
    with pytest.raises(ApiError) as exc:
        c.verify_proof(b, proof)
    err = exc.value
    assert err.status == 422 and err.code == "checkpoint", err
    assert f"sessiond verify-proof {a}" in err.message, err.message
    assert err.details["api"] == [f'POST /v1/sessions/{a}/verify-proof {{"proof": CHECKPOINT}}'], err.details
    assert c.verify_proof(a, proof)["ok"] is True  # the way on, followed
