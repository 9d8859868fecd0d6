"""GET /openai/v1/models (the OpenAI-compatible endpoint) listed the models of the session's provider, not
those of the provider its current chat's questions go to (a chat's own settings.provider): an app picking
a model from the list picked one the provider asked would not have. It lists the models of the provider a
question would go to now (daemon/complete.provider_for, with the session's current chat); `?provider=`
still wins. A request naming a chat with X-Sessiond-Chat lists that chat's provider's, whichever is
current."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

import pytest

from conftest import cli_json, started_with_provider
from servers.openai_server import Provider, serve_threaded


def _listed(d, sid: str | None, query: str = "", chat: str | None = None) -> list[str]:
    info = cli_json(d.home, "status")["openai"]
    key = open(info["api_key_file"]).read().strip()
    req = urllib.request.Request(info["base_url"].rstrip("/") + "/models" + query)
    req.add_header("Authorization", f"Bearer {key}")
    if sid is not None:
        req.add_header("X-Sessiond-Session", sid)
    if chat is not None:
        req.add_header("X-Sessiond-Chat", chat)
    with urllib.request.urlopen(req, timeout=30) as r:
        return [m["id"] for m in json.loads(r.read())["data"]]


def test_models_are_those_of_the_current_chats_provider(make_daemon):
    (_, s1), (_, s2) = serve_threaded(Provider(models=("loop-a",))), serve_threaded(Provider(models=("other-b",)))
    try:
        d = started_with_provider(
            make_daemon,
            f"http://127.0.0.1:{s1.port}/v1",
            start=False,
            default_provider="loop",
            openai_listen="127.0.0.1:0",
        )
        with open(os.path.join(d.home, "config.toml"), "a") as f:
            f.write(f'[providers.other]\nbase_url = "http://127.0.0.1:{s2.port}/v1"\n')
        d.start()
        c = d.client()
        sid = c.create_session()["id"]
        c.create_chat(sid, id="private", settings={"provider": "other"})
        assert _listed(d, sid) == ["loop-a"]  # the current chat (main) has none of its own: the session's
        c.switch_chat(sid, "private")
        assert _listed(d, sid) == ["other-b"]
        assert _listed(d, sid, "?provider=loop") == ["loop-a"]  # the request's own still wins
        assert _listed(d, None) == ["loop-a"]  # no session: the default provider's
        # the chat X-Sessiond-Chat names, whichever is current (by its id or its name)
        c.switch_chat(sid, "main")
        assert _listed(d, sid, chat="private") == ["other-b"]
        c.switch_chat(sid, "private")
        assert _listed(d, sid, chat="main") == ["loop-a"]
        with pytest.raises(urllib.error.HTTPError) as unknown:
            _listed(d, sid, chat="nosuch")
        assert unknown.value.code == 404 and f"sessiond chat ls {sid}" in unknown.value.read().decode()
        # the session's own provider, under a chat with none
        c.switch_chat(sid, "main")
        c.update_session(sid, settings={"provider": "other"})
        assert _listed(d, sid) == ["other-b"]
    finally:
        s1.stop()
        s2.stop()
