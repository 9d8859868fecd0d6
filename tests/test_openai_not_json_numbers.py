"""NaN and Infinity are no JSON (RFC 8259), but Python's reader takes them, and the OpenAI-compatible endpoint
took a request holding one (`"temperature": NaN`, as an app's json.dumps writes a float('nan')), recorded its
question and sent the provider a body that is no JSON either: OpenAI's API refuses it (400), so the app had an
error and its question stored, twice on its retry. The socket API refuses such a number (422, naming the
field); the endpoint refuses the body as OpenAI would, 400 bad_json, before anything is stored or asked. So too a
number past a double's range (1e999), which Python's reader takes as Infinity and its writer sends on so."""

from __future__ import annotations

import json

import pytest

from conftest import UnixHTTP


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity", "1e999", "-1e400"])
def test_a_body_holding_nan_or_infinity_is_refused_before_anything_is_stored(served_openai, constant):
    d, p = served_openai
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    body = '{"model": "echo-1", "messages": [{"role": "user", "content": "hi"}], "temperature": ' + constant + "}"
    conn = UnixHTTP(d.socket, timeout=10)
    conn.request(
        "POST",
        "/openai/v1/chat/completions",
        body=body.encode(),
        headers={"Content-Type": "application/json", "X-Sessiond-Session": sid},
    )
    r = conn.getresponse()
    err = json.loads(r.read())["error"]
    conn.close()
    assert r.status == 400 and err["code"] == "bad_json", err
    assert constant.lstrip("-") in err["message"], err
    assert c.messages(sid)["messages"] == [] and p.requests == []
