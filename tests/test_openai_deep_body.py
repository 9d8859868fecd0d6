"""A body nested deeper than Python's JSON reader goes (a few thousand brackets) sent to the OpenAI-compatible
endpoint was a 500: on the socket "internal error; see the daemon log", on the TCP listener aiohttp's own
plain-text page, which an OpenAI SDK reads as a server error and retries. It is a 400 bad_json in OpenAI's
shape, as the socket API's routes answer such a body; nothing is created or asked."""

from __future__ import annotations

import http.client
import json

import pytest

from conftest import UnixHTTP, cli_json

DEEP = (
    b'{"model": "echo-1", "messages": [{"role": "user", "content": "x"}], "metadata": '
    + b"[" * 5000
    + b"]" * 5000
    + b"}"
)


@pytest.mark.parametrize("via", ["socket", "tcp"])
def test_a_body_nested_too_deeply_is_a_400_in_openais_shape(served_openai, via):
    d, p = served_openai
    headers = {"Content-Type": "application/json"}
    if via == "socket":
        conn: http.client.HTTPConnection = UnixHTTP(d.socket, timeout=10)
    else:
        info = cli_json(d.home, "status")["openai"]
        host, port = info["base_url"].split("//")[1].split("/")[0].rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        headers["Authorization"] = "Bearer " + open(info["api_key_file"]).read().strip()
    conn.request("POST", "/openai/v1/chat/completions", body=DEEP, headers=headers)
    r = conn.getresponse()
    raw = r.read()
    conn.close()
    assert r.status == 400, raw[:300]
    err = json.loads(raw)["error"]
    assert err["code"] == "bad_json" and err["type"] == "invalid_request_error", err
    assert "nested too deeply" in err["message"], err
    assert d.client().list_sessions()["sessions"] == [] and p.requests == []
