"""A streamed request for several answers (OpenAI's `n`) gets each chunk naming its choice's index, the
answers' chunks interleaved. The daemon took each chunk's first choice as the answer's, whatever its index:
the answer it recorded was every answer's words interleaved ("echo: ECHO: q Q"), one no model gave. It
records the first answer (index 0), as for a whole answer; the app is passed every chunk as it came."""

from __future__ import annotations

from conftest import openai_app, started_with_provider
from servers.openai_server import Provider, serve_threaded


def test_a_stream_of_two_answers_records_the_first(make_daemon):
    p, server = serve_threaded(Provider())
    try:
        d = started_with_provider(make_daemon, f"http://127.0.0.1:{server.port}/v1", openai_listen="127.0.0.1:0")
        c = d.client()
        sid = c.create_session(model="echo-1")["id"]
        q = [{"role": "user", "content": "two ways"}]
        got: dict[int, str] = {}
        for ch in openai_app(d, sid).chat.completions.create(model="echo-1", messages=q, stream=True, n=2):
            for choice in ch.choices:
                got[choice.index] = got.get(choice.index, "") + (choice.delta.content or "")
        assert got == {0: "echo: two ways", 1: "ECHO: TWO WAYS"}  # the app's: both, as they came
        stored = [(m["role"], m["content"]) for m in c.messages(sid)["messages"]]
        assert stored == [("user", "two ways"), ("assistant", "echo: two ways")]
        # and whole: the first choice, as before
        whole = openai_app(d, sid).chat.completions.create(model="echo-1", messages=q, n=2)
        assert whole.choices[0].message.content == "echo: two ways"
    finally:
        server.stop()
