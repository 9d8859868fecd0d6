"""kill -9 as an OpenAI-endpoint app's request going on from another of several answers (`n`) has recorded it with
`tokens` 0 (billed with the request that asked for them: daemon/openai_choices.py). That answer, once recorded so,
is forgotten as billed (a second going on from it, the app's next question edited, is a message the app appends,
charged as any): the two were two transactions, and a kill between them left it remembered, so the second going on
from it was recorded charged nothing too, under every device's count of the quota. They are one transaction now."""

from __future__ import annotations

import threading

import openai

from conftest import arrived, flag_dir, openai_paused
from servers.openai_server import Provider, serve_threaded


def test_a_kill_after_going_on_from_an_answer_leaves_it_billed_once(make_daemon):
    p, server = serve_threaded(Provider())
    flag = flag_dir() + "/went_on"
    try:
        from conftest import openai_app

        d = openai_paused(make_daemon, server.port, f"openai.went_on:{flag}")
        c = d.client()
        sid = c.create_session(model="echo-1")["id"]
        q = [{"role": "user", "content": "two ways"}]
        chosen = openai_app(d, sid).chat.completions.create(model="echo-1", messages=q, n=2).choices[1].message.content
        went_on = [*q, {"role": "assistant", "content": chosen}, {"role": "user", "content": "and so?"}]
        failed: list[BaseException] = []

        def app() -> None:
            try:
                openai_app(d, sid).chat.completions.create(model="echo-1", messages=went_on)
            except openai.APIError as exc:  # (the daemon killed under it)
                failed.append(exc)

        t = threading.Thread(target=app)
        t.start()
        arrived(flag)
        d.kill()
        t.join(30)
        assert failed and not t.is_alive()
        del d.env["SESSIOND_TEST_PAUSE"]
        d.start()
        c = d.client()
        msgs = c.messages(sid)["messages"]
        assert [(m["content"], m["tokens"]) for m in msgs[2:]] == [(chosen, 0), ("and so?", msgs[3]["tokens"])]
        used = c.quota(sid)["tokens_used"]
        # the app's next question edited: its history goes on from the same answer, a second time
        edited = [*went_on[:2], {"role": "user", "content": "and then?"}]
        openai_app(d, sid).chat.completions.create(model="echo-1", messages=edited)
        msgs = c.messages(sid)["messages"]
        assert [m["content"] for m in msgs[4:]] == [chosen, "and then?", "echo: and then?"]
        again, answer = msgs[4], msgs[6]
        assert again["tokens"] > 0, again  # charged as a message the app appends: billed once only
        then = again["tokens"] + msgs[5]["tokens"] + answer["usage"]["prompt_tokens"] + answer["tokens"]
        assert c.quota(sid)["tokens_used"] == used + then
    finally:
        server.stop()
