"""A question the OpenAI-compatible endpoint checked and sent on is recorded, whatever another write took meanwhile.
The endpoint judges a request's new messages (the chat's room, the quota's, the context budget: check_room,
check_fits) and sends the request to the provider before it records them (the provider thinks while they commit).
A write that committed in between (the app's own append, an answer of another chat of the session, which an
answer's prompt tokens charge) could take the room they were judged by: the question's append then refused it
(429 quota_exceeded, 400 context_length_exceeded, 409 limit_reached) after the model was asked and began answering,
its prompt billed, and nothing of it kept. Once asked, the question is recorded as its answer is: past what a write
meanwhile took, and in a session paused meanwhile (a pause stops new questions, not one the model is answering:
its answer is kept, as /complete keeps it). (The daemon is held where the request has left and the question is
not recorded yet.)"""

from __future__ import annotations

import concurrent.futures
import os

import openai
import pytest

from conftest import arrived, openai_app


@pytest.mark.parametrize("took", ["quota", "budget", "room", "paused"])
def test_a_question_sent_on_is_recorded_past_what_a_write_meanwhile_took(asked_paused, took):
    d, p, flag = asked_paused
    c = d.client()
    sid = c.create_session(model="echo-1", auto_compact=False)["id"]
    if took == "quota":
        c.update_session(sid, token_quota=100)  # the question's 50 tokens fit, and so do the other 60 alone
    elif took == "budget":
        c.update_session(sid, max_context_tokens=100)  # 80 for the chat's messages: 50, or 40, not both
    question = "word " * 40
    app = openai_app(d, sid)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        call = pool.submit(
            app.chat.completions.create, model="echo-1", messages=[{"role": "user", "content": question}]
        )
        arrived(flag)  # checked and sent on; its question not recorded yet
        if took == "quota":
            c.append(sid, "user", "elsewhere", tokens=60)
        elif took == "budget":
            c.append(sid, "user", "elsewhere", tokens=40)
        elif took == "room":  # the chat's last room (4 of 4), which the question and its answer were judged by
            c.append_many(sid, [{"role": "user", "content": f"m{i}"} for i in range(4)])
        else:  # a pause stops new questions, not one the model is answering (as an answer paid for is kept)
            c.pause(sid)
        os.remove(flag)
        try:
            answer = call.result(timeout=30).choices[0].message.content
        except openai.APIStatusError as exc:
            pytest.fail(f"the question the provider was asked was refused: {exc.status_code} {exc.body}")
    assert [r["messages"][-1]["content"] for r in p.requests] == [question]
    assert answer.startswith("echo: word")
    kept = [(m["role"], m["content"]) for m in c.messages(sid)["messages"]]
    assert kept[-2:] == [("user", question), ("assistant", answer)], kept
