"""`sessiond quota --json` (and GET /v1/sessions/{id}/quota) said `remaining: 0` for a session past its quota (a
quota lowered below its use, or a model's answer that passed it), while the text said "21 over": a script had to
work out the overshoot from `tokens_used` and `token_quota` itself. The answer now says it as `over` (0 within the
quota, null with no quota), `remaining` meaning what it did (never negative)."""

from __future__ import annotations

from conftest import cli_json, run_cli


def test_the_quota_answer_says_how_far_over(daemon):
    c = daemon.client()
    sid = c.create_session(token_quota=100)["id"]
    c.append(sid, "user", "x", tokens=60)
    q = c.quota(sid)
    assert (q["remaining"], q["over"]) == (40, 0), q
    c.update_session(sid, token_quota=39)  # lowered below what was used (so can a model's answer pass it)
    q = cli_json(daemon.home, "quota", sid)
    assert (q["tokens_used"], q["token_quota"], q["remaining"], q["over"]) == (60, 39, 0, 21), q
    assert "60 of 39 tokens used (21 over): exhausted" in run_cli(daemon.home, "quota", sid, check=True).stdout
    free = c.create_session()["id"]
    q = c.quota(free)
    assert (q["remaining"], q["over"]) == (None, None), q
