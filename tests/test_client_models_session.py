"""GET /openai/v1/models lists the models of the provider a question to the session X-Sessiond-Session names
would go to (the X-Sessiond-Chat chat's own provider, else its current chat's, else the session's); the
clients' models() could name neither header, so an app could list only the default provider's (or one it
named itself). models(session=, chat=) send them, in both clients."""

from __future__ import annotations

import os

import pytest

from conftest import started_with_provider
from servers.openai_server import Provider, serve_threaded
from sessiond.client import ApiError


@pytest.fixture
def two_providers(make_daemon):
    """A daemon with providers `loop` (the default, model loop-a) and `other` (other-b); a session whose chat
    `private` (not its current one) asks `other`, its chat `日記` `loop`."""
    (_, s1), (_, s2) = serve_threaded(Provider(models=("loop-a",))), serve_threaded(Provider(models=("other-b",)))
    try:
        d = started_with_provider(make_daemon, f"http://127.0.0.1:{s1.port}/v1", start=False, default_provider="loop")
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


def _ids(listed) -> list[str]:
    return [m["id"] for m in listed["data"]]


def test_the_blocking_clients_models_name_a_session_and_chat(two_providers):
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
