"""What an app or a user gives that names part of a conversation, read as the daemon reads it: a message id
(DEVICE-SEQ: `before`/`after` of GET messages, a fork's `at`, `fork --at`) whose SEQ is past 64 bits, or
written in digits other than ASCII's ('²', '٣': str.isdigit takes them), reached SQLite or int() and was a
500 "internal error" (a traceback in the log): it is not a message id, a 422 naming it, nothing changed.
A checkpoint proof given to verify-proof whose fields have the wrong shape is named by its field."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from conftest import run_cli
from sessiond.client import ApiError


@pytest.mark.parametrize("seq", ["99999999999999999999999", "9223372036854775808", "\u00b2", "\u0663"])
def test_a_message_id_whose_seq_is_past_64_bits_or_not_ascii_digits_is_a_422(daemon, seq):
    c = daemon.client()
    sid = c.create_session(name="s")["id"]
    first = c.append(sid, "user", "hello")["id"]
    device = first.rpartition("-")[0]
    mid = f"{device}-{seq}"
    for call in (
        lambda: c._call("GET", f"/v1/sessions/{sid}/messages?before={quote(mid)}"),
        lambda: c._call("GET", f"/v1/sessions/{sid}/messages?after={quote(mid)}"),
        lambda: c.fork(sid, mid),
    ):
        with pytest.raises(ApiError) as info:
            call()
        assert info.value.status == 422 and "not a message id" in info.value.message, info.value
    res = run_cli(daemon.home, "fork", sid, "--at", mid)
    assert res.returncode == 2 and "--at: not a message id" in res.stderr, res
    assert [s["id"] for s in c.list_sessions()["sessions"]] == [sid]  # no fork made
    assert [m["id"] for m in c.messages(sid)["messages"]] == [first]


@pytest.mark.parametrize(
    "change, field",
    [
        (lambda p: {**p, "frontier": [1]}, "frontier"),
        (lambda p: {**p, "frontier": dict.fromkeys(p["frontier"], "x")}, "frontier"),
        (lambda p: {**p, "pk": "xx" + p["pk"][2:]}, "pk"),
        (lambda p: {**p, "signature": p["signature"][:-1]}, "signature"),
    ],
)
def test_a_proof_with_a_field_of_the_wrong_shape_names_the_field_not_pythons_words(daemon, change, field):
    """verify-proof of a proof whose frontier is a list, or whose pk or signature is not hex, answered
    "proof is malformed: 'list' object has no attribute 'items'" or "non-hexadecimal number found in
    fromhex() arg at position 0": Python's words, naming no field of the proof. It names the field now, and
    what a proof is (a checkpoint as `sessiond checkpoints --json` lists it); a proof that cannot be checked is
    the request's error (422 `checkpoint`, test_proof_answers.py), not an answer ok:false."""
    c = daemon.client()
    sid = c.create_session(name="s")["id"]
    c.append(sid, "user", "hello")
    proof = c.checkpoint(sid)
    with pytest.raises(ApiError) as refused:
        c.verify_proof(sid, change(proof))
    assert refused.value.status == 422 and refused.value.code == "checkpoint", refused.value
    problem = refused.value.message
    assert f"its {field} " in problem and "sessiond checkpoints" in problem, problem
    assert "fromhex" not in problem and "attribute" not in problem and "int()" not in problem, problem
