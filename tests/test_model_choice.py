"""A model the provider does not have is refused in each surface's own words (was: "choose another with
--model (its models: GET /openai/v1/models)" everywhere: SDK apps got CLI advice, and the CLI named an
HTTP route): `sessiond ask` names --model and `sessiond models`, which lists a provider's models; the
OpenAI-compatible endpoint and the socket API name the request's `model` field and GET /openai/v1/models."""

from __future__ import annotations

import json

import openai
import pytest

from conftest import openai_app, run_cli, started_with_provider
from servers.openai_server import Provider, serve_threaded
from sessiond.client import ApiError


@pytest.fixture
def daemon(make_daemon):
    p, server = serve_threaded(Provider())
    yield started_with_provider(make_daemon, f"http://127.0.0.1:{server.port}/v1", openai_listen="127.0.0.1:0")
    server.stop()


def test_ask_names_its_option_and_the_command_listing_the_models(daemon):
    sid = daemon.client().create_session(model="nosuch")["id"]
    res = run_cli(daemon.home, "ask", sid, "hi")
    assert res.returncode == 1, res.stderr
    assert "has no model 'nosuch'" in res.stderr and "--model" in res.stderr, res.stderr
    assert "sessiond models" in res.stderr and "--provider loop" in res.stderr, res.stderr
    assert "GET /openai" not in res.stderr, res.stderr


def test_apps_are_told_the_model_field_and_the_models_route(daemon):
    c = daemon.client()
    sid = c.create_session(model="echo-1")["id"]
    with pytest.raises(openai.NotFoundError) as exc:
        openai_app(daemon, sid).chat.completions.create(model="nosuch", messages=[{"role": "user", "content": "q"}])
    said = exc.value.body["message"]
    assert "has no model 'nosuch'" in said and "`model`" in said and "GET /openai/v1/models" in said, said
    assert "--model" not in said and exc.value.code == "model_not_found", said
    with pytest.raises(ApiError) as native:
        c.complete(sid, "q", model="nosuch")
    assert native.value.code == "model_not_found" and "--model" not in native.value.message, native.value.message
    assert "GET /openai/v1/models" in native.value.message, native.value.message


def test_models_lists_a_providers_models(daemon):
    listed = json.loads(run_cli(daemon.home, "models", "--json", check=True).stdout)
    assert [m["id"] for m in listed["data"]] == ["echo-1", "echo-2"], listed
    text = run_cli(daemon.home, "models", "--provider", "loop", check=True).stdout
    assert text.split() == ["echo-1", "echo-2"], text
    res = run_cli(daemon.home, "models", "--provider", "elsewhere")
    assert res.returncode == 1 and "elsewhere" in res.stderr, res.stderr
