"""A question to a model for a session that takes no more is refused for the session's reason first, on a
device that has no model provider (or no model) configured too: the way on is then the session's (a new
share code, a resume, a new session, a larger quota), not a provider that would not help. The order is
the same for `sessiond ask`, the socket API's POST /v1/sessions/ID/complete and the OpenAI-compatible
listener (README, "Errors"): read-only or revoked, then expired, ended or paused, then the quota, then
the room in the chat, then the provider and the model. Real daemons, none with a provider."""

from __future__ import annotations

import openai
import pytest

from conftest import DaemonProc, cli_json, openai_app, run_cli, started_with, wait_for, write_config
from sessiond.client import ApiError

NO_PROVIDER = "no model provider is configured"


def _refusals(d: DaemonProc, sid: str) -> tuple[str, ApiError, openai.APIStatusError]:
    """The three ways to ask a model about `sid`, each refused: the CLI's stderr, the API's error, the
    OpenAI listener's."""
    res = run_cli(d.home, "ask", sid, "a question")
    assert res.returncode != 0, res.stdout
    with pytest.raises(ApiError) as native:
        d.client().complete(sid, "a question")
    with pytest.raises(openai.APIStatusError) as oai:
        openai_app(d, sid).chat.completions.create(model="m", messages=[{"role": "user", "content": "a question"}])
    return res.stderr, native.value, oai.value


@pytest.mark.parametrize("how", ["ended", "expired", "paused", "quota"])
def test_a_session_that_takes_no_more_is_refused_as_such_before_the_missing_provider(make_daemon, how):
    d = started_with(make_daemon, openai_listen="127.0.0.1:0")
    c = d.client()
    sid = c.create_session(**({"expires_in": 1} if how == "expired" else {"token_quota": 5}))["id"]
    if how == "ended":
        c.end(sid)
    elif how == "paused":
        c.pause(sid)
    elif how == "quota":
        c.append(sid, "user", "all of it", tokens=5)
    else:
        wait_for(lambda: c.get_session(sid)["status"] == "ended", timeout=30, what="the session's expiry")
    said, native, oai = _refusals(d, sid)
    code = {"ended": "conflict", "expired": "expired", "paused": "conflict", "quota": "quota_exceeded"}[how]
    assert NO_PROVIDER not in said and "no model to ask" not in said, said
    assert {"ended": "has ended", "expired": "expired", "paused": "paused", "quota": "quota"}[how] in said, said
    assert native.code == code, (native.code, native.message)
    assert oai.code == code, oai.body
    # with the session taking questions again, the provider is what is missing, and said so
    if how in ("paused", "quota"):
        c.resume(sid) if how == "paused" else c.update_session(sid, token_quota=1000)
        said = run_cli(d.home, "ask", sid, "--model", "m", "a question").stderr
        assert NO_PROVIDER in said, said


def test_a_revoked_session_is_refused_as_revoked_before_the_missing_provider(tmp_path):
    url = "file://" + str(tmp_path / "store")
    a = DaemonProc(str(tmp_path / "a"), url).start()
    b = DaemonProc(str(tmp_path / "b"), url)
    write_config(b.home, openai_listen="127.0.0.1:0")
    b.start()
    try:
        sid = cli_json(a.home, "new", "--name", "shared", "--model", "m")["id"]
        a.client().append(sid, "user", "before")
        code = run_cli(a.home, "share", sid, "--write", check=True).stdout.strip()
        run_cli(b.home, "import", input=code + "\n", check=True)
        b.client().append(sid, "assistant", "B was here")
        b.client().sync(wait=True)
        wait_for(lambda: len(a.client().messages(sid)["messages"]) == 2, timeout=15)
        cli_json(a.home, "unshare", sid, "--device", cli_json(b.home, "status")["device_id"])
        run_cli(b.home, "sync", "--wait")
        assert cli_json(b.home, "show", sid)["access"] == "revoked"
        said, native, oai = _refusals(b, sid)
        assert "rekeyed without this device" in said and NO_PROVIDER not in said, said
        assert (native.status, native.code) == (409, "revoked"), (native.code, native.message)
        assert isinstance(oai, openai.BadRequestError) and oai.code == "revoked", oai.body
        assert "rekeyed without this device" in str(oai.body), oai.body
    finally:
        a.stop()
        b.stop()
