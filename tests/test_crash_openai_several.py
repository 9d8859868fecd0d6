"""kill -9 as a streamed request for several answers (`n`) has passed every answer on to its app and recorded the first:
the others, which the app may go on from charged nothing (billed with the request: daemon/openai_choices.py), were
remembered in a transaction of their own after the answer's, and a kill between the two lost them: the app, which had
every answer's words, going on from another was charged it again. They are written in the answer's transaction."""

from __future__ import annotations

import threading

from conftest import arrived, flag_dir, openai_app, openai_paused
from servers.openai_server import Provider, serve_threaded


def test_a_kill_after_several_answers_were_passed_on_forgets_none_of_them(make_daemon):
    p, server = serve_threaded(Provider())
    flag = flag_dir() + "/several"
    try:
        d = openai_paused(make_daemon, server.port, f"openai.several_recorded:{flag}")
        c = d.client()
        sid = c.create_session(model="echo-1")["id"]
        q = [{"role": "user", "content": "two ways"}]
        texts: dict[int, str] = {}

        def app() -> None:  # the app reads every chunk it is given, until the connection breaks
            try:
                for ch in openai_app(d, sid).chat.completions.create(model="echo-1", messages=q, stream=True, n=2):
                    for choice in ch.choices:
                        texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
            except Exception:
                pass

        t = threading.Thread(target=app)
        t.start()
        arrived(flag)  # both answers passed on, the first recorded
        d.kill()
        t.join(30)
        assert texts == {0: "echo: two ways", 1: "ECHO: TWO WAYS"}, texts
        del d.env["SESSIOND_TEST_PAUSE"]
        d.start()
        c = d.client()
        used = c.quota(sid)["tokens_used"]
        history = [*q, {"role": "assistant", "content": texts[1]}, {"role": "user", "content": "and so?"}]
        openai_app(d, sid).chat.completions.create(model="echo-1", messages=history)
        msgs = c.messages(sid)["messages"]
        assert [(m["content"], m["tokens"]) for m in msgs[2:4]] == [(texts[1], 0), ("and so?", msgs[3]["tokens"])]
        answer = msgs[4]
        assert (
            c.quota(sid)["tokens_used"]
            == used + msgs[3]["tokens"] + answer["usage"]["prompt_tokens"] + answer["tokens"]
        )
    finally:
        server.stop()
