"""A call to the OpenAI-compatible endpoint without X-Sessiond-Session makes a new session for it; a call
refused after that session was made (a history longer than max_messages_per_chat lets a chat hold) left the
session behind, empty: its id reached the app only in the error's header, which SDKs do not read, so each
try of the app made another. A refused call leaves nothing, as one its provider fails already did."""

from __future__ import annotations

import openai
import pytest

from conftest import cli_json, started_with_provider
from servers.openai_server import Provider, serve_threaded


def test_a_new_sessions_call_refused_leaves_no_session(make_daemon):
    p, server = serve_threaded(Provider())
    try:
        url = f"http://127.0.0.1:{server.port}/v1"
        d = started_with_provider(make_daemon, url, openai_listen="127.0.0.1:0", max_messages_per_chat=3)
        info = cli_json(d.home, "status")["openai"]
        key = open(info["api_key_file"]).read().strip()
        app = openai.OpenAI(base_url=info["base_url"], api_key=key)  # no session named: a new one; its retries on
        history = [{"role": "user", "content": f"q{i}"} for i in range(5)]
        with pytest.raises(openai.RateLimitError) as refused:
            app.chat.completions.create(model="echo-1", messages=history)
        assert refused.value.code == "limit_reached", refused.value.body
        said = refused.value.body["message"]
        assert "5 messages" in said and "max_messages_per_chat (3)" in said and "no session was made" in said, said
        assert "X-Sessiond-Session" not in refused.value.response.headers
        assert d.client().list_sessions()["sessions"] == []
        assert p.requests == []
        # a call that fits makes its session, as before
        ok = app.chat.completions.with_raw_response.create(model="echo-1", messages=history[:1])
        assert [s["id"] for s in d.client().list_sessions()["sessions"]] == [ok.headers["X-Sessiond-Session"]]
    finally:
        server.stop()
