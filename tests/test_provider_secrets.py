"""A model provider's error that echoes the key it refused ("Incorrect API key provided: sk-...", whole
or masked, or an `Authorization: Bearer ...` quoted back) reaches neither the user nor the log with
the key in it: against a loopback provider that echoes the key it got, and a real daemon."""

from __future__ import annotations

import json
import os

import pytest
from aiohttp import web

from conftest import run_cli, started_with_provider
from servers.openai_server import Provider, serve_threaded
from servers.s5portal import Threaded
from sessiond.client import ApiError

KEY = "sk-proj-Zq81TESTKEYc4f0a9b7e2d5XyZ"


def echoing_provider(mode: dict) -> web.Application:
    """An OpenAI-shaped provider that refuses every completion, echoing the key it got as mode["how"] says."""

    async def completions(request: web.Request) -> web.StreamResponse:
        got = request.headers.get("Authorization", "").removeprefix("Bearer ")
        how = mode["how"]
        if how == "whole":  # OpenAI's own wording, the key in full
            message = f"Incorrect API key provided: {got}. You can find your API key at https://example/keys."
            return web.json_response({"error": {"message": message, "code": "invalid_api_key"}}, status=401)
        if how == "masked":  # the first and last characters, as OpenAI shows a refused key now
            message = f"Incorrect API key provided: {got[:12]}************{got[-4:]}."
            return web.json_response({"error": {"message": message}}, status=401)
        if how == "bearer":  # a proxy quoting the request's header in its 5xx page
            return web.Response(status=502, text=f"upstream refused the request (Authorization: Bearer {got})")
        # a stream whose one event (before any of the answer) is an error naming the key
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(f"data: {json.dumps({'error': {'message': f'key {got} revoked'}})}\n\n".encode())
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    return app


@pytest.fixture
def provider():
    mode = {"how": "whole"}
    server = Threaded(echoing_provider(mode)).start()
    yield mode, server
    server.stop()


def test_a_refused_key_echoed_by_the_provider_is_never_shown_or_logged(make_daemon, provider, tmp_path):
    mode, server = provider
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    d = started_with_provider(make_daemon, f"http://127.0.0.1:{server.port}/v1", table={"api_key_file": str(key_file)})
    c = d.client()
    sid = c.create_session(model="m")["id"]
    seen = []
    for how, code in (
        ("whole", "provider_unauthorized"),
        ("masked", "provider_unauthorized"),
        ("bearer", "provider_failed"),
    ):
        mode["how"] = how
        with pytest.raises(ApiError) as e:
            c.complete(sid, "hi")
        assert e.value.code == code and "provider 'loop'" in e.value.message, e.value.message
        seen.append(e.value.message)
        res = run_cli(d.home, "ask", sid, "hi")
        assert res.returncode == 1 and "provider 'loop'" in res.stderr, res.stderr
        seen += [res.stdout, res.stderr]
    mode["how"] = "stream"
    with pytest.raises(ApiError) as e:
        "".join(c.complete_stream(sid, "hi"))
    assert e.value.code == "provider_failed" and "revoked" in e.value.message, e.value.message
    seen.append(e.value.message)
    assert "Incorrect API key provided" in seen[0]  # the provider's words stay: only the key goes
    d.stop()
    for name in os.listdir(os.path.join(d.home, "logs")):
        seen.append(open(os.path.join(d.home, "logs", name), encoding="utf-8", errors="replace").read())
    for text in seen:
        assert KEY not in text and KEY[:12] not in text and KEY[-10:] not in text, text


def test_a_relative_api_key_file_is_read_from_the_home_wherever_the_daemon_was_started(make_daemon, tmp_path):
    # `api_key_file = "provider-key"` beside config.toml: the daemon's working directory is wherever
    # `sessiond start` ran (or / under a service manager); the key must not depend on it
    p, server = serve_threaded(Provider(key=KEY))
    try:
        url = f"http://127.0.0.1:{server.port}/v1"
        d = started_with_provider(make_daemon, url, table={"api_key_file": "provider-key"}, start=False)
        with open(os.path.join(d.home, "provider-key"), "w") as f:
            f.write(KEY + "\n")
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        cwd = os.getcwd()
        os.chdir(elsewhere)  # the daemon inherits it
        try:
            d.start()
        finally:
            os.chdir(cwd)
        c = d.client()
        sid = c.create_session(model="echo-1")["id"]
        assert c.complete(sid, "hi")["content"] == "echo: hi"
    finally:
        server.stop()


def refused_without_the_key(make_daemon, port: int, setting: str, says: str) -> None:
    """A daemon whose provider has `setting` = the key itself is refused at its start (and by `start`), the
    refusal naming `setting` and saying `says`, the key (or a piece of it) in none of the refusals, `doctor`
    or the logs."""
    d = started_with_provider(make_daemon, f"http://127.0.0.1:{port}/v1", table={setting: KEY}, start=False)
    with pytest.raises(RuntimeError) as refused:
        d.start()
    said = str(refused.value)
    assert setting in said and says in said, said
    start = run_cli(d.home, "start")
    doctor = run_cli(d.home, "doctor", "--json")
    assert start.returncode != 0 and setting in start.stderr, start
    logs = "".join(open(os.path.join(d.home, "logs", f)).read() for f in os.listdir(os.path.join(d.home, "logs")))
    for text in (said, start.stdout, start.stderr, doctor.stdout, doctor.stderr, logs):
        assert KEY not in text and KEY[:12] not in text and KEY[-10:] not in text, text


def test_a_key_written_as_api_key_env_is_refused_without_being_shown(make_daemon):
    """`api_key_env = "sk-..."` (the key itself where the NAME of the variable holding it goes) is refused when
    the configuration is read, saying what goes there, without the key: it was taken as a variable's name,
    and every question then failed with "the environment variable sk-proj-... is not set", the key in full
    in the answer to the app and in `sessiond ask`'s error."""
    p, server = serve_threaded(Provider(key=KEY))
    try:
        refused_without_the_key(make_daemon, server.port, "api_key_env", "name")
        # a variable's name is taken as before
        d2 = started_with_provider(
            make_daemon,
            f"http://127.0.0.1:{server.port}/v1",
            table={"api_key_env": "SESSIOND_TEST_PROVIDER_KEY"},
            start=False,
        )
        d2.env["SESSIOND_TEST_PROVIDER_KEY"] = KEY
        c = d2.start().client()
        sid = c.create_session(model="echo-1")["id"]
        assert c.complete(sid, "hi")["content"] == "echo: hi"
    finally:
        server.stop()


def test_a_key_written_as_api_key_file_is_refused_without_being_shown(make_daemon):
    """`api_key_file = "sk-..."` (the key itself where the path of the file holding it goes) is refused when
    the configuration is read, as api_key_env's is, without the key: it was taken as a file name in the home,
    and every question and `sessiond models` then failed with "cannot read its api_key_file
    /home/.../sk-proj-...", the key in full in the answer to the app and in the CLI's error."""
    p, server = serve_threaded(Provider(key=KEY))
    try:
        refused_without_the_key(make_daemon, server.port, "api_key_file", "path")
        # a file named like a key's provider, with an extension, is a file name as before
        d2 = started_with_provider(
            make_daemon, f"http://127.0.0.1:{server.port}/v1", table={"api_key_file": "sk-openai.txt"}, start=False
        )
        with open(os.path.join(d2.home, "sk-openai.txt"), "w") as f:
            f.write(KEY + "\n")
        c = d2.start().client()
        sid = c.create_session(model="echo-1")["id"]
        assert c.complete(sid, "hi")["content"] == "echo: hi"
    finally:
        server.stop()
