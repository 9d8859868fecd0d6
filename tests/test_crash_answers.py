"""kill -9 right after a model's answer reached the app (a whole answer, a stream read to its end, and the
same through the OpenAI endpoint): the question and the answer as the app was given it are there after the
restart, once each, verify and doctor are clean, and the next question is answered. (A stream broken midway
by a kill: tests/test_stream_broken_key.py.)"""

from __future__ import annotations

import pytest

from conftest import cli_json, openai_app, run_cli, started_with_provider
from servers.openai_server import Provider, serve_threaded


@pytest.fixture
def daemon(make_daemon):
    p, server = serve_threaded(Provider())
    d = started_with_provider(
        make_daemon, f"http://127.0.0.1:{server.port}/v1", default_provider="loop", openai_listen="127.0.0.1:0"
    )
    yield d
    server.stop()


def test_answers_given_to_the_app_are_there_after_a_kill_9(daemon):
    d = daemon
    sid = d.client().create_session(model="echo-1")["id"]

    def whole() -> str:
        return d.client().complete(sid, "whole one")["content"]

    def streamed() -> str:
        with d.client() as c:
            s = c.complete_stream(sid, "streamed one")
            text = "".join(s)
            assert s.message["content"] == text
            return text

    def endpoint() -> str:
        got = openai_app(d, sid).chat.completions.create(
            model="echo-1", messages=[{"role": "user", "content": "through the endpoint"}]
        )
        return got.choices[0].message.content

    def endpoint_streamed() -> str:
        chunks = openai_app(d, sid).chat.completions.create(
            model="echo-1", messages=[{"role": "user", "content": "streamed through the endpoint"}], stream=True
        )
        return "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)

    want: list[tuple[str, str]] = []
    for ask in (whole, streamed, endpoint, endpoint_streamed):
        answer = ask()
        assert answer.startswith("echo: "), answer
        want.append(("assistant", answer))
        d.kill()  # SIGKILL as soon as the app has the answer
        d.start()
        got = [(m["role"], m["content"]) for m in d.client().messages(sid, limit=1000)["messages"]]
        assert [g for g in got if g[0] == "assistant"] == want, ask.__name__
        assert len([g for g in got if g[0] == "user"]) == len(want), got
        # the restart pushes what the kill left unpushed in the background: wait for it, as verify's message says
        assert run_cli(d.home, "sync", "--wait", "--json").returncode == 0
        assert cli_json(d.home, "verify")["ok"]
        assert run_cli(d.home, "doctor", "--json").returncode == 0
    assert d.client().complete(sid, "after")["content"].startswith("echo: ")
