"""The session an OpenAI request made (no X-Sessiond-Session) is deleted when nothing of the answer is kept (the
provider's failure, the daemon's stop, the app leaving), but only if nothing else was written to it: its id is
another app's as soon as it is made (`sessiond ls`, the `session.created` event). The check was "nothing written
after the request's question": a note another app appended between the session's making and the question's
recording (the request has left for the provider then, the question commits while the model thinks) was older than
the question, and deleted with it. (The daemon is held where the request has left and the question is not recorded
yet.)"""

from __future__ import annotations

import concurrent.futures
import os
import time

import openai
import pytest

from conftest import openai_app, started_with_provider


def _arrived(flag: str) -> None:
    deadline = time.monotonic() + 20
    while not os.path.exists(flag):
        assert time.monotonic() < deadline, "the request never reached the provider"
        time.sleep(0.01)


@pytest.mark.parametrize("stream", [False, True])
def test_a_note_written_before_the_question_is_recorded_keeps_the_made_session(make_daemon, tmp_path, stream):
    from servers.openai_server import Provider, serve_threaded

    flag = str(tmp_path / "asked")
    p, server = serve_threaded(Provider())
    try:
        d = started_with_provider(
            lambda: make_daemon(env={"SESSIOND_TEST_PAUSE": f"openai.asked:{flag}"}),
            f"http://127.0.0.1:{server.port}/v1",
            openai_listen="127.0.0.1:0",
        )
        c = d.client()
        p.faults.status, p.faults.times = 500, 1  # the provider fails before any answer
        app = openai_app(d, None)
        q = [{"role": "user", "content": "count"}]
        with concurrent.futures.ThreadPoolExecutor(1) as pool:

            def ask():
                res = app.chat.completions.create(model="echo-1", messages=q, stream=stream)
                return list(res) if stream else res

            call = pool.submit(ask)
            _arrived(flag)  # the session made, the request sent on; its question not recorded yet
            [s] = c.list_sessions()["sessions"]
            c.append(s["id"], "user", "a note of mine")
            os.remove(flag)
            with pytest.raises(openai.APIError):
                call.result(timeout=30)
        [s] = c.list_sessions()["sessions"]  # kept, with the note and the question
        assert sorted(m["content"] for m in c.messages(s["id"])["messages"]) == ["a note of mine", "count"]
    finally:
        server.stop()
