"""kill -9 in the OpenAI endpoint's requests for several answers (`n`), whose others an app may go on from charged
nothing (billed with the request that asked for them: daemon/openai_choices.py), each write of them now in the
transaction of the message it goes with:

- as a streamed request has passed every answer on to its app and recorded the first: the others were remembered in
  a transaction of their own after it, and a kill between the two lost them: the app, which had every answer's
  words, going on from another was charged it again;
- as a request going on from another has recorded it with `tokens` 0: it is forgotten as billed then (a second going
  on from it, the app's next question edited, is a message the app appends, charged as any), in a transaction of its
  own after it, and a kill between the two left it remembered: the second going on was charged nothing too."""

from __future__ import annotations

import threading

from conftest import arrived, flag_dir, openai_app, openai_paused
from servers.openai_server import Provider, serve_threaded

Q = [{"role": "user", "content": "two ways"}]


def _killed_at(make_daemon, point: str, asks) -> tuple:
    """A daemon held at the test pause `point`, its session; `asks(d, sid)` run in a thread of its own until the
    daemon is killed there (the app's request cut), and the daemon started again without the pause: (it, the
    session)."""
    p, server = serve_threaded(Provider())
    flag = flag_dir() + "/point"
    try:
        d = openai_paused(make_daemon, server.port, f"{point}:{flag}")
        sid = d.client().create_session(model="echo-1")["id"]
        asks_before = threading.Thread(target=asks, args=(d, sid))
        asks_before.start()
        arrived(flag)
        d.kill()
        asks_before.join(30)
        assert not asks_before.is_alive()
        del d.env["SESSIOND_TEST_PAUSE"]
        return d.start(), sid, server
    except BaseException:
        server.stop()
        raise


def _cut(ask) -> None:
    try:
        ask()
    except Exception:  # (the daemon killed under it: the request cut)
        pass


def _went_on(d, sid: str, history: list[dict]) -> list[dict]:
    """The app's request of `history` answered: the session's messages then."""
    openai_app(d, sid).chat.completions.create(model="echo-1", messages=history)
    return d.client().messages(sid)["messages"]


def test_a_kill_after_several_answers_were_passed_on_forgets_none_of_them(make_daemon):
    texts: dict[int, str] = {}

    def asks(d, sid) -> None:  # the app reads every chunk it is given, until the connection breaks
        def read() -> None:
            for ch in openai_app(d, sid).chat.completions.create(model="echo-1", messages=Q, stream=True, n=2):
                for choice in ch.choices:
                    texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")

        _cut(read)

    d, sid, server = _killed_at(make_daemon, "openai.several_recorded", asks)  # both passed on, the first recorded
    try:
        assert texts == {0: "echo: two ways", 1: "ECHO: TWO WAYS"}, texts
        used = d.client().quota(sid)["tokens_used"]
        history = [*Q, {"role": "assistant", "content": texts[1]}, {"role": "user", "content": "and so?"}]
        msgs = _went_on(d, sid, history)
        assert [(m["content"], m["tokens"]) for m in msgs[2:4]] == [(texts[1], 0), ("and so?", msgs[3]["tokens"])]
        then = msgs[3]["tokens"] + msgs[4]["usage"]["prompt_tokens"] + msgs[4]["tokens"]
        assert d.client().quota(sid)["tokens_used"] == used + then
    finally:
        server.stop()


def test_a_kill_after_going_on_from_an_answer_leaves_it_billed_once(make_daemon):
    went_on: list[dict] = []

    def asks(d, sid) -> None:
        chosen = openai_app(d, sid).chat.completions.create(model="echo-1", messages=Q, n=2).choices[1].message
        went_on.extend([*Q, {"role": "assistant", "content": chosen.content}, {"role": "user", "content": "and so?"}])
        _cut(lambda: openai_app(d, sid).chat.completions.create(model="echo-1", messages=went_on))

    d, sid, server = _killed_at(make_daemon, "openai.went_on", asks)  # gone on from the second, recorded
    try:
        chosen = went_on[1]["content"]
        msgs = d.client().messages(sid)["messages"]
        assert [(m["content"], m["tokens"]) for m in msgs[2:]] == [(chosen, 0), ("and so?", msgs[3]["tokens"])]
        used = d.client().quota(sid)["tokens_used"]
        # the app's next question edited: its history goes on from the same answer, a second time
        msgs = _went_on(d, sid, [*went_on[:2], {"role": "user", "content": "and then?"}])
        assert [m["content"] for m in msgs[4:]] == [chosen, "and then?", "echo: and then?"]
        again, answer = msgs[4], msgs[6]
        assert again["tokens"] > 0, again  # charged as a message the app appends: billed once only
        then = again["tokens"] + msgs[5]["tokens"] + answer["usage"]["prompt_tokens"] + answer["tokens"]
        assert d.client().quota(sid)["tokens_used"] == used + then
    finally:
        server.stop()
