"""What the OpenAI-compatible endpoint refuses in a request names the field in OpenAI's `param`, as OpenAI's
API does and as the README says of the endpoint's 422s: most of them said it in the message only, `param`
null (a message's role or content, `stream`, `model`, an empty X-Sessiond-Session). And a session the
X-Sessiond-Session header names that this device does not have was refused as the socket API refuses it, "no
session 'x' on this device (see `sessiond ls`)": the header that named it unsaid, and the way on for an SDK app
(leave the header out for a new session) too. Driven with the official `openai` client over TCP."""

from __future__ import annotations

import openai
import pytest

from conftest import openai_app


@pytest.mark.parametrize(
    "request_, param",
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": "x"}, {"role": "user", "content": 5}]}, "messages[1].content"),
        ({"messages": [{"role": "user", "content": "x"}], "stream": "yes"}, "stream"),
        ({"messages": [{"role": "user", "content": "x"}], "model": 5}, "model"),
        ({"messages": [{"role": "assistant", "content": "x", "tool_calls": "no"}]}, "messages[0].tool_calls"),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "content": "",
                        "tool_calls": [{"id": "a", "type": "function", "function": {"name": "f", "arguments": 5}}],
                    }
                ]
            },
            "messages[0].tool_calls[0].function.arguments",
        ),
    ],
)
def test_a_refused_field_is_named_as_param(served_openai, request_, param):
    d, p = served_openai
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    body = {"model": "echo-1", **request_}
    with pytest.raises(openai.UnprocessableEntityError) as exc:
        openai_app(d, sid).chat.completions.create(**body)
    assert exc.value.body["param"] == param, exc.value.body
    assert c.messages(sid)["messages"] == [] and p.requests == []


def test_a_new_session_without_a_model_names_it(served_openai):
    d, p = served_openai
    with pytest.raises(openai.UnprocessableEntityError) as exc:
        openai_app(d, None).chat.completions.create(model="", messages=[{"role": "user", "content": "x"}])
    assert exc.value.body["param"] == "model", exc.value.body
    assert "new session" in exc.value.body["message"]
    assert d.client().list_sessions()["sessions"] == []


def test_an_empty_session_header_is_named_as_param(served_openai):
    d, _ = served_openai
    app = openai_app(d, "")
    with pytest.raises(openai.UnprocessableEntityError) as exc:
        app.chat.completions.create(model="echo-1", messages=[{"role": "user", "content": "x"}])
    assert exc.value.body["param"] == "X-Sessiond-Session", exc.value.body
    # A share code pasted into the header (an app's setting for the session to use) was quoted whole in the refusal
    # the app shows or logs, and whoever sees a code reads its session: nothing longer than an id is quoted
    for value, said in (("sessiond1" + "q" * 150, "share code"), ("x" * 300, "300 characters")):
        with pytest.raises(openai.NotFoundError) as exc:
            app.with_options(default_headers={"X-Sessiond-Session": value}).chat.completions.create(
                model="echo-1", messages=[{"role": "user", "content": "x"}]
            )
        body = exc.value.body
        assert body["param"] == "X-Sessiond-Session" and said in body["message"], body
        assert value[9:60] not in body["message"] and "leave the header out" in body["message"], body
        assert "X-Sessiond-Session" not in exc.value.response.headers, exc.value.response.headers  # (nor named back)
    assert d.client().list_sessions()["sessions"] == []


def _refused(app, route: str) -> openai.NotFoundError:
    """The 404 a call of `route` (chat, models) gets."""
    with pytest.raises(openai.NotFoundError) as exc:
        if route == "chat":
            app.chat.completions.create(model="echo-1", messages=[{"role": "user", "content": "x"}])
        else:
            app.models.list()
    return exc.value


@pytest.mark.parametrize("route", ["chat", "models"])
def test_a_session_not_here_names_the_header_and_the_way_on(served_openai, route):
    d, p = served_openai
    body = _refused(openai_app(d, "not-here"), route).body
    assert body["code"] == "not_found" and body["param"] == "X-Sessiond-Session", body
    assert "X-Sessiond-Session" in body["message"] and "leave the header out" in body["message"], body
    assert d.client().list_sessions()["sessions"] == [] and p.requests == []


@pytest.mark.parametrize("route", ["chat", "models"])
def test_a_chat_header_longer_than_an_id_is_not_quoted(served_openai, route):
    """X-Sessiond-Chat's value was quoted whole in its refusal (an app may put anything there: a share code pasted
    into the wrong setting, whoever sees it reading its session), as X-Sessiond-Session's was: a value longer than
    an id is named by its length, a share code as one, neither quoted; a short one (a chat's id or name) still is."""
    d, p = served_openai
    sid = d.client().create_session(model="echo-1")["id"]
    for value, said in (("sessiond1" + "q" * 150, "share code"), ("x" * 300, "300 characters"), ("nope", "'nope'")):
        exc = _refused(openai_app(d, sid, **{"X-Sessiond-Chat": value}), route)
        body = exc.body
        assert body["param"] == "X-Sessiond-Chat" and said in body["message"], body
        assert "sessiond chat ls" in body["message"] and "leave the header out" in body["message"], body
        if len(value) > 128:
            assert value[9:60] not in body["message"], body
            assert "X-Sessiond-Chat" not in exc.response.headers, exc.response.headers
    assert d.client().messages(sid)["messages"] == [] and p.requests == []


def test_a_share_code_in_the_chat_header_is_not_quoted(served_openai):
    """A share code pasted into X-Sessiond-Chat (an app's setting beside the session's) was quoted whole in the 404
    ("session 'ID' has no chat 'sessiond1...'"), to the app that shows or logs it; the session header's was fixed
    alone. No refusal of the daemon's quotes a share code, wherever it was given."""
    d, _ = served_openai
    sid = d.client().create_session(model="echo-1")["id"]
    code = "sessiond1" + "aeakkylblaqm2dajrmbsumxv2jclkf3au2jc3y3ipj6qeskekivakmo3jhx6l4lbmnqxeylllaqb7n4co" * 3
    app = openai_app(d, sid).with_options(default_headers={"X-Sessiond-Chat": code})
    with pytest.raises(openai.NotFoundError) as exc:
        app.chat.completions.create(model="echo-1", messages=[{"role": "user", "content": "x"}])
    body = exc.value.body
    assert body["param"] == "X-Sessiond-Chat" and "share code" in body["message"], body
    assert code[9:60] not in str(body) and code[9:60] not in str(exc.value.response.headers), body
