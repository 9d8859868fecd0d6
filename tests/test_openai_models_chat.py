"""GET /openai/v1/models (the OpenAI-compatible endpoint) listed the models of the session's provider, not
those of the provider its current chat's questions go to (a chat's own settings.provider): an app picking
a model from the list picked one the provider asked would not have. It lists the models of the provider a
question would go to now (daemon/complete.provider_for, with the session's current chat); `?provider=`
still wins. A request naming a chat with X-Sessiond-Chat lists that chat's provider's, whichever is
current. The clients' models() name the session and chat too (session=, chat=)."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

import pytest

from conftest import cli_json, run_cli, started_with_provider
from servers.openai_server import Provider, serve_threaded
from sessiond.client import ApiError


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


@pytest.fixture
def two_providers(make_daemon):
    """A daemon with providers `loop` (the default, model loop-a) and `other` (other-b), the OpenAI-compatible
    endpoint on loopback, and a session whose chat `private` (not its current one) asks `other`, its chat
    `日記` none of its own: (daemon, session id)."""
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
        c.create_chat(sid, name="日記")
        yield d, sid
    finally:
        s1.stop()
        s2.stop()


def test_models_are_those_of_the_current_chats_provider(two_providers):
    d, sid = two_providers
    c = d.client()
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


def _ids(listed) -> list[str]:
    return [m["id"] for m in listed["data"]]


def test_the_blocking_clients_models_name_a_session_and_chat(two_providers):
    """The clients' models() could name neither header: an app listed the default provider's models (or those of
    one it named itself), never its session's. models(session=, chat=) send them."""
    d, sid = two_providers
    with d.client() as c:
        assert _ids(c.models()) == ["loop-a"]
        assert _ids(c.models(session=sid)) == ["loop-a"]  # its current chat (main): the session's, the default
        assert _ids(c.models(session=sid, chat="private")) == ["other-b"]
        assert _ids(c.models(session=sid, chat="日記")) == ["loop-a"]  # a name that is not ASCII
        assert _ids(c.models(session=sid, chat="private", provider="loop")) == ["loop-a"]  # the provider named wins
        c.switch_chat(sid, "private")
        assert _ids(c.models(session=sid)) == ["other-b"]
        with pytest.raises(ApiError) as unknown:
            c.models(session=sid, chat="nosuch")
        assert unknown.value.status == 404 and "X-Sessiond-Chat" in unknown.value.message


async def test_the_async_clients_models_name_a_session_and_chat(two_providers):
    d, sid = two_providers
    async with d.aclient() as ac:
        assert _ids(await ac.models(session=sid)) == ["loop-a"]
        assert _ids(await ac.models(session=sid, chat="private")) == ["other-b"]
        assert _ids(await ac.models(session=sid, chat="日記")) == ["loop-a"]
        with pytest.raises(ApiError) as unknown:
            await ac.models(session=sid, chat="nosuch")
        assert unknown.value.status == 404 and "X-Sessiond-Chat" in unknown.value.message


def test_the_models_command_names_a_session_and_chat(two_providers):
    """`sessiond models` had no --session / --chat, though the endpoint and both clients take them: from the
    CLI one listed only the default provider's models, or those of a provider one named oneself."""
    d, sid = two_providers
    cli = lambda *a: run_cli(d.home, "models", *a)  # noqa: E731
    assert cli("--session", sid).stdout.split() == ["loop-a"]  # its current chat (main) asks the default
    assert cli("--session", sid, "--chat", "private").stdout.split() == ["other-b"]
    assert cli("--session", sid, "--chat", "日記").stdout.split() == ["loop-a"]
    assert cli("--session", sid, "--chat", "private", "--provider", "loop").stdout.split() == ["loop-a"]
    assert _ids(cli_json(d.home, "models", "--session", sid, "--chat", "private")) == ["other-b"]
    d.client().switch_chat(sid, "private")
    assert cli("--session", sid).stdout.split() == ["other-b"]
    unknown = cli("--session", sid, "--chat", "nosuch")
    assert unknown.returncode == 1 and "no chat 'nosuch', which --chat names" in unknown.stderr
    assert "leave --chat out" in unknown.stderr and "sessiond chat ls" in unknown.stderr
    # said in the CLI's words before asking the daemon: a chat of no session, an empty id or name
    for args, said in (
        (("--chat", "private"), "--chat names a chat of the session --session names"),
        (("--session", ""), "--session must not be empty"),
        (("--session", sid, "--chat", ""), "--chat must not be empty"),
    ):
        res = cli(*args)
        assert res.returncode == 2 and said in res.stderr, (args, res.stderr)


async def test_a_chat_name_no_header_can_carry_is_refused_with_the_way_to_name_it(two_providers):
    """A chat's name may hold a line break, which no header can carry: models(chat=) raised the HTTP library's
    bare ValueError ('Invalid header value'), and `sessiond models --chat` printed a traceback. Refused before
    sending now, as the daemon refuses a bad header (422), saying to name that chat by its id."""
    d, sid = two_providers
    name = "two\nlines"
    with d.client() as c:
        chat = c.create_chat(sid, name=name)
        with pytest.raises(ApiError) as refused:
            c.models(session=sid, chat=name)
        assert refused.value.status == 422 and "by its id" in refused.value.message, refused.value.message
        assert _ids(c.models(session=sid, chat=chat["id"])) == ["loop-a"]  # the way it names
    async with d.aclient() as ac:
        with pytest.raises(ApiError) as refused:
            await ac.models(session=sid, chat=name)
        assert refused.value.status == 422 and "by its id" in refused.value.message
    res = run_cli(d.home, "models", "--session", sid, "--chat", name)
    assert res.returncode != 0 and "Traceback" not in res.stderr, res.stderr
    assert "--chat names" in res.stderr and "by its id" in res.stderr, res.stderr
