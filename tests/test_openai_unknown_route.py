"""A path under /openai/v1 the endpoint does not serve (an SDK's models.retrieve, embeddings, the Responses
API) was answered with aiohttp's own text, "404: Not Found", on the TCP listener (openai_listen), and in
sessiond's native error shape on the socket, pointing at GET /v1/openapi.json: an SDK app got no JSON error
to read, nor what the endpoint serves. Both answer in OpenAI's error shape now (404 for an unknown path, as
OpenAI's "Invalid URL"; 405 for a method the path does not take), naming the two routes it serves."""

from __future__ import annotations

import openai
import pytest

from conftest import cli_json, started_with_provider
from servers.openai_server import Provider, serve_threaded

try:  # the openai package's own HTTP library: httpx, renamed httpx2 in its newer releases
    import httpx2 as httpx
except ImportError:
    import httpx


@pytest.fixture
def daemon(make_daemon):
    p, server = serve_threaded(Provider())
    yield started_with_provider(make_daemon, f"http://127.0.0.1:{server.port}/v1", openai_listen="127.0.0.1:0")
    server.stop()


def _http(d, via: str) -> tuple[httpx.Client, str, dict]:
    if via == "socket":
        return httpx.Client(transport=httpx.HTTPTransport(uds=d.socket)), "http://localhost/openai/v1", {}
    info = cli_json(d.home, "status")["openai"]
    key = open(info["api_key_file"]).read().strip()
    return httpx.Client(), info["base_url"], {"Authorization": f"Bearer {key}"}


@pytest.mark.parametrize("via", ["tcp", "socket"])
def test_what_the_endpoint_does_not_serve_is_refused_in_openais_shape(daemon, via):
    http, base, headers = _http(daemon, via)
    app = openai.OpenAI(base_url=base, api_key=headers.get("Authorization", "Bearer x")[7:], http_client=http)
    for call in (
        lambda: app.models.retrieve("echo-1"),
        lambda: app.embeddings.create(model="echo-1", input="x"),
        lambda: app.responses.create(model="echo-1", input="x"),
    ):
        with pytest.raises(openai.NotFoundError) as refused:
            call()
        body = refused.value.body
        assert isinstance(body, dict), body  # the error object (the SDK's body): JSON, not aiohttp's text
        assert body["type"] == "not_found_error" and body["code"] == "unknown_url", body  # (its 404s' type)
        said = body["message"]
        assert "POST /openai/v1/chat/completions" in said and "GET /openai/v1/models" in said, said
    r = http.get(base + "/chat/completions", headers=headers)
    assert r.status_code == 405, r.text
    error = r.json()["error"]
    assert error["code"] == "method_not_allowed" and error["type"] == "invalid_request_error", error
    assert "POST" in r.headers.get("Allow", ""), dict(r.headers)
    # the endpoint's own routes as before
    assert [m.id for m in app.models.list()] == ["echo-1", "echo-2"]
