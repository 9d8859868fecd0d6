"""`sessiond ask` when an answer stops early tells what the session holds: Ctrl-C before any of the answer
arrived says nothing of it is recorded (was: "what arrived is recorded, marked interrupted", and nothing
was), and it is so also when the model had opened its stream and was silent, thinking (the daemon stops
the generation as the app leaves; was: at the model's first words, which it then recorded, though the
app never got them); Ctrl-C mid-answer says that what arrived is recorded, naming the messages (the
daemon's record of the request, GET /v1/sessions/{id}/complete?key=, read once it has ended it; was: no
ids, and `ask --json` only {"error"}); and with --json, a provider's failure mid-answer gives the part
that was recorded (its message, marked interrupted) beside the error (was: the error alone)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time

import pytest

from asking import logged
from conftest import popen_cli, run_cli, started_with_provider, wait_for
from servers.openai_server import Provider, serve_threaded
from sessiond.client import ApiError


@pytest.fixture
def loop(make_daemon):
    """make(timeout=None): a daemon whose provider is the loopback one (giving up after `timeout` s of
    silence, if given); yields (make, provider)."""
    p, server = serve_threaded(Provider())

    def make(timeout: float | None = None):
        table = {"timeout": timeout} if timeout is not None else {}
        return started_with_provider(make_daemon, f"http://127.0.0.1:{server.port}/v1", table=table)

    yield make, p
    server.stop()


def assistant(c, sid):
    return [m for m in c.messages(sid)["messages"] if m["role"] == "assistant"]


def ask(d, sid: str, text: str, *flags: str) -> subprocess.Popen:
    return popen_cli(
        ["ask", sid, text, "--home", d.home, *flags],
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _interrupted(proc: subprocess.Popen) -> tuple[bytes, bytes]:
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    return out, err


@pytest.mark.parametrize("how", ["thinking", "silent"])
def test_ctrl_c_before_any_of_the_answer_says_nothing_of_it_is_recorded(loop, how):
    make, p = loop
    d = make()
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    # (the model's silence outlasts any machine's load: it ends as soon as the daemon drops the request, and one of
    # 5 s ended first on a loaded machine, the model then answering and the drop this test waits for never coming)
    if how == "thinking":  # the fault itself: no answer yet (the daemon's answer not begun)
        p.faults.hang = 120
    else:  # the answer's stream open, its first chunk of no text sent, no word yet
        p.faults.first_delay = 120
    proc = ask(d, sid, "hello")
    wait_for(lambda: c.messages(sid)["messages"], timeout=20, what="the question recorded")
    if how == "silent":
        wait_for(lambda: p.requests, timeout=20, what="the provider asked")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert b"marked interrupted" not in err and b"nothing of it is recorded" in err, err
    wait_for(lambda: p.left_unanswered + p.streams_stopped == 1, timeout=20, what="the provider's request dropped")
    assert assistant(c, sid) == []


def _pressed_until(pid: int, ended: threading.Event) -> None:
    """Ctrl-C pressed again and again, a tenth of a millisecond apart, at process `pid` until `ended`."""
    while not ended.is_set():
        try:
            os.kill(pid, signal.SIGINT)
        except ProcessLookupError:
            return
        time.sleep(0.0001)


def _mid_answer(loop, words: int = 100, delay: float = 0.1) -> tuple:
    """`ask` of a long answer (`words` words, `delay` s apart), once some of it has been printed: (client,
    session id, the process, what it printed so far)."""
    make, p = loop
    d = make()
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    p.faults.delay = delay
    proc = ask(d, sid, _words(words))
    got = b""
    while b"w3" not in got:  # some of the answer has arrived
        got += os.read(proc.stdout.fileno(), 100)
    return c, sid, proc, got


def test_ctrl_c_mid_answer_says_what_arrived_is_recorded(loop):
    c, sid, proc, _ = _mid_answer(loop)
    out, err = _interrupted(proc)
    # named on one line, as the daemon recorded them once it had stopped (the answer is in when `ask` exits)
    question, answer = c.messages(sid)["messages"]
    line = err.decode().strip()
    assert "\n" not in line and "what arrived is recorded, marked interrupted" in line, line
    assert f"message {answer['id']}" in line and f"the question: message {question['id']}" in line, line
    assert answer["interrupted"] is True


def test_json_gives_the_part_recorded_when_the_provider_fails_mid_answer(loop):
    make, p = loop
    d = make(timeout=0.5)
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    p.faults.delay = 1.5  # the fault itself: a stream that goes silent past the provider's timeout
    res = run_cli(d.home, "ask", sid, "one two three", "--json")
    assert res.returncode == 1, res.stderr
    said = json.loads(res.stdout)
    assert said["error"]["code"] == "provider_timeout"
    [a] = assistant(c, sid)
    assert a["interrupted"] is True and a["content"] == "echo:"
    assert said["message"]["id"] == a["id"] and said["message"]["interrupted"] is True
    assert said["message"]["content"] == "echo:"
    assert "recorded" in res.stderr, res.stderr


def test_an_empty_question_is_refused_before_anything_is_recorded_or_sent(loop):
    """`sessiond ask ID ""` (a shell variable left unset) or an empty standard input recorded an empty user
    message and sent the chat to the model, which answered it and spent tokens; it is a usage error now, the
    session unchanged and the model not asked."""
    make, p = loop
    d = make()
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    before = len(p.requests)
    for text, stdin in (("", None), ("  \n", None), ("-", "\n")):
        for extra in ([], ["--json"]):
            res = run_cli(d.home, "ask", sid, text, *extra, input=stdin)
            assert res.returncode == 2 and "question is empty" in res.stderr, (text, res.stderr)
            if extra:
                assert json.loads(res.stdout)["error"]["code"] == "usage"
    assert c.messages(sid)["messages"] == [] and len(p.requests) == before


def test_an_answer_streamed_to_people_has_its_control_and_bidi_characters_escaped(loop):
    """`ask` wrote the model's answer to the terminal as it came: an answer holding an escape sequence or a
    right-to-left override (a model can be led to repeat what a synced message or fetched page holds)
    could rewrite the screen or show its text reordered; now escaped as `log` escapes it, exact in --json."""
    make, _ = loop
    d = make()
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    res = run_cli(d.home, "ask", sid, "a\u202eb\x1b[2Jc\u2066d")
    assert res.returncode == 0, res.stderr
    assert res.stdout == "echo: a\\u202eb\\x1b[2Jc\\u2066d\n", res.stdout
    assert assistant(c, sid)[0]["content"] == "echo: a\u202eb\x1b[2Jc\u2066d"


def test_ctrl_c_with_json_names_the_question_and_the_part_recorded(loop):
    """`ask --json` stopped by Ctrl-C printed only {"error": ...}: an app had no way to tell which messages the
    stop left in the session. It names them now: the question, and the answer as recorded (marked
    interrupted), from the daemon's own record of the request, after the daemon has ended it."""
    make, p = loop
    d = make()
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    p.faults.delay = 0.1
    text = " ".join(f"w{i}" for i in range(100))
    proc = ask(d, sid, text, "--json")
    # (sent is not received: on a loaded machine the daemon may hold fewer words than the provider sent when the
    # CLI leaves; 6 sent, 0.1 s apart, leave it half a second to have read the first)
    wait_for(lambda: p.words_sent >= 6, timeout=20, what="some of the answer sent")
    out, err = _interrupted(proc)
    said = json.loads(out)
    assert said["error"]["code"] == "interrupted"
    question, answer = c.messages(sid)["messages"]
    assert said["question"]["id"] == question["id"] and question["content"] == text
    assert said["message"]["id"] == answer["id"] and answer["interrupted"] is True
    # what the daemon had read when the CLI left: a start of the echo, however much (h-flake29 saw 'echo: w0'
    # with 3 words sent, where the test wanted 'echo: w0 w1')
    assert said["message"]["content"] == answer["content"] and answer["content"].startswith("echo: w0")
    assert ("echo: " + text).startswith(answer["content"]) and answer["content"] != "echo: " + text
    assert answer["id"] in err.decode() and question["id"] in err.decode(), err
    # the daemon's record it was read from: a key it has no record of, nothing; an unknown session, 404
    assert c.asked(sid, "another-key") == {"key": "another-key", "question": None, "answer": None}
    with pytest.raises(ApiError) as e:
        c.asked("no-such-session", "k")
    assert e.value.status == 404


def test_ctrl_c_with_json_before_the_answer_names_the_question_alone(loop):
    make, p = loop
    d = make()
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    p.faults.hang = 5  # the fault itself: no answer yet
    proc = ask(d, sid, "hello", "--json")
    [question] = wait_for(lambda: c.messages(sid)["messages"], timeout=20, what="the question recorded")
    out, err = _interrupted(proc)
    said = json.loads(out)
    assert said["error"]["code"] == "interrupted" and said["message"] is None
    assert said["question"]["id"] == question["id"]
    assert b"nothing of it is recorded" in err and question["id"].encode() in err, err
    wait_for(lambda: p.left_unanswered == 1, timeout=20, what="the provider's request dropped")
    assert assistant(c, sid) == []


def test_ask_says_when_the_session_nears_or_passes_its_token_quota(loop):
    """Each answer counts against the session's token quota (its prompt's tokens too), so a few questions
    can take it from safe to exhausted: `ask` says so on standard error once an answer leaves it at the
    warning level or past it (was: nothing until the next question was refused; the levels were only in
    `sessiond quota`). Standard output keeps the answer alone."""
    make, p = loop
    d = make()
    c = d.client()
    sid = c.create_session(model="echo-1", token_quota=1000)["id"]
    first = run_cli(d.home, "ask", sid, "hello")
    assert first.returncode == 0 and first.stdout == "echo: hello\n" and first.stderr == "", first
    quota = int(c.quota(sid)["tokens_used"] / 0.75)  # 75 % used: the next answer leaves it past 70 %
    c.update_session(sid, token_quota=quota)
    res = run_cli(d.home, "ask", sid, "a question")
    level = c.quota(sid)["level"]
    assert res.returncode == 0 and res.stdout == "echo: a question\n" and level != "safe", (res, level)
    note = f"this session has used {c.quota(sid)['tokens_used']} of its {quota} tokens ({level}); see `sessiond quota"
    assert note in res.stderr and f"{sid}`" in res.stderr, res.stderr
    # --json: the stored answer alone on standard output, the note on standard error
    c.update_session(sid, token_quota=int(c.quota(sid)["tokens_used"] / 0.75))
    res = run_cli(d.home, "ask", sid, "--json", "last one")
    assert json.loads(res.stdout)["content"] == "echo: last one" and "of its" in res.stderr, res


def test_a_model_silent_after_its_first_empty_chunk_is_not_said_to_stop_mid_answer(loop):
    # was: "sent nothing for 0.5 s (in the middle of the answer)", though no text had come, and nothing was recorded
    make, p = loop
    d = make(timeout=0.5)
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    p.faults.first_delay = 2.0  # the fault itself: OpenAI's role chunk, then silence past the timeout
    res = run_cli(d.home, "ask", sid, "one two")
    assert res.returncode == 1, res.stderr
    assert "provider_timeout" in res.stderr or "sent nothing" in res.stderr, res.stderr
    assert "in the middle of the answer" not in res.stderr and "before any of the answer" in res.stderr, res.stderr
    assert assistant(c, sid) == []


def test_an_empty_answer_is_said_so(loop):
    # was: nothing printed at all, as if `ask` had not run
    make, p = loop
    d = make()
    sid = d.client().create_session(model="echo-1")["id"]
    p.faults.empty = True
    res = run_cli(d.home, "ask", sid, "say nothing")
    assert res.returncode == 0, res.stderr
    assert res.stdout == "" and "(the model answered nothing)" in res.stderr, (res.stdout, res.stderr)
    res = run_cli(d.home, "ask", sid, "say nothing", "--json")  # the stored answer, standard error clean
    assert res.returncode == 0 and json.loads(res.stdout)["content"] == "" and res.stderr == "", res


def test_more_ctrl_cs_while_ask_stops_still_name_what_was_kept(loop):
    # was: a second or third Ctrl-C, while `ask` closed the stream or asked the daemon what it kept, printed
    # the stop message without the kept messages' ids (or "interrupted (Ctrl-C)"), and no line end after the
    # part of the answer printed
    # and (was, 1 run in ~50) a press after the stop message was printed, as `ask` ended, printed a second line,
    # "interrupted (Ctrl-C)": Ctrl-C is held ignored from the first press to the end now
    c, sid, proc, got = _mid_answer(loop)
    ended = threading.Event()
    pressing = threading.Thread(target=_pressed_until, args=(proc.pid, ended), daemon=True)
    pressing.start()  # a user's presses, again and again until `ask` ends (the fault itself, not a wait)
    try:
        out, err = proc.communicate(timeout=30)
    finally:
        ended.set()
        pressing.join(timeout=10)
    assert proc.returncode == 130, err
    assert (got + out).endswith(b"\n"), (got + out, err)
    wait_for(lambda: len(c.messages(sid)["messages"]) == 2, timeout=30, what="the part that arrived recorded")
    question, answer = c.messages(sid)["messages"]
    line = err.decode().strip()
    assert "\n" not in line and f"message {answer['id']}" in line, line
    assert f"the question: message {question['id']}" in line, line


def test_ctrl_c_before_the_daemon_took_the_question_records_nothing_as_said(make_daemon, tmp_path):
    """Ctrl-C after `ask` sent its question but before the daemon took it (here: held at its start; in life,
    a busy loop, or the same Ctrl-C a moment after the send): `ask` asked what was kept, was told nothing,
    and said "nothing was"; then the daemon took the question and recorded it, the app long gone (the model
    not asked). Now a question whose app has gone before it is taken is not recorded: what `ask` said holds."""
    flag = str(tmp_path / "taken")
    p, server = serve_threaded(Provider())
    try:
        d = started_with_provider(
            lambda: make_daemon(env={"SESSIOND_TEST_PAUSE": f"complete.start:{flag}"}),
            f"http://127.0.0.1:{server.port}/v1",
        )
        c = d.client()
        sid = c.create_session(model="echo-1")["id"]
        p.faults.hang = 5  # (were the model asked, it would not answer before the daemon saw its app gone)
        proc = ask(d, sid, "hello")
        wait_for(lambda: os.path.exists(flag), timeout=20, what="the question held at the daemon's door")
        out, err = _interrupted(proc)
        assert b"nothing was" in err, err
        os.remove(flag)  # the daemon goes on with the question
        wait_for(lambda: logged(d, "complete.app_gone"), timeout=20, what="the daemon done with the question")
        assert c.messages(sid)["messages"] == [], err  # as `ask` said
        assert p.requests == []
    finally:
        server.stop()


@pytest.mark.parametrize("text", ["Let me look.", ""], ids=["with-text", "calls-only"])
def test_ask_prints_the_tool_calls_of_an_answer_it_recorded(loop, text):
    """An answer that calls a tool is printed with its calls, as `log` shows them (`-> name(arguments) [id]`)
    after its text. Was: only its text: an answer that was only a call printed nothing at all, exit 0, and
    the user learnt of the call only from `log` (an answer that could not be recorded printed its calls)."""
    make, p = loop
    p.faults.call_unasked, p.faults.call_text = "lookup", text
    d = make()
    sid = d.client().create_session(model="echo-1")["id"]
    res = run_cli(d.home, "ask", sid, "a b c")
    assert res.returncode == 0, (res.stdout, res.stderr)
    call = d.client().messages(sid)["messages"][-1]["tool_calls"][0]
    line = f"-> lookup({call['function']['arguments']}) [{call['id']}]\n"
    assert res.stdout == (f"{text}\n" if text else "") + line, res.stdout
    assert "answered nothing" not in res.stderr, res.stderr


def test_log_marks_an_answer_recorded_interrupted(loop):
    """`ask` says of an answer cut short (Ctrl-C, a provider gone silent) "what arrived is recorded, marked
    interrupted: message ID"; `sessiond log` showed that message as any whole answer, no mark, so a reader
    of the conversation could not tell the answer stopped mid-sentence. `log` marks it `[interrupted]`, as it
    marks a compacted message `[compacted]` (--json has `interrupted: true`)."""
    make, p = loop
    d = make(timeout=0.5)
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    p.faults.delay = 1.5  # the fault itself: a stream that goes silent past the provider's timeout
    assert run_cli(d.home, "ask", sid, "one two three").returncode == 1
    p.faults.delay = 0.0
    run_cli(d.home, "ask", sid, "whole", check=True)
    cut, whole = assistant(c, sid)
    assert cut["interrupted"] is True and not whole.get("interrupted")
    full = run_cli(d.home, "log", sid, check=True).stdout
    assert f"{cut['id']} [interrupted]:" in full and f"{whole['id']}:" in full, full
    assert full.count("[interrupted]") == 1, full
    short = run_cli(d.home, "log", sid, "--short", check=True).stdout.splitlines()
    assert short[1] == "assistant: [interrupted] echo:" and short[3] == "assistant: echo: whole", short


def test_a_provider_failure_says_the_question_is_recorded_and_again_answers_it(loop):
    """A provider's failure leaves the question recorded (README), but `ask` said only the provider's error:
    a user who ran `ask ID TEXT` again once the provider was back had the question twice in the session, and
    the CLI had no way to have the model answer the recorded one. The failure now names the recorded question
    and `sessiond ask ID --again`, which asks the model to answer the chat as it stands, adding nothing."""
    make, p = loop
    d = make()
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    p.faults.status, p.faults.times = 500, 1  # the fault itself: the provider fails this one request
    res = run_cli(d.home, "ask", sid, "what is BLAKE3?")
    assert res.returncode == 1, res
    [question] = c.messages(sid)["messages"]
    assert f"the question is recorded as message {question['id']}" in res.stderr, res.stderr
    assert f"sessiond ask --home {d.home} {sid} --again" in res.stderr, res.stderr
    res = run_cli(d.home, "ask", sid, "--again", check=True)
    assert res.stdout.strip() == "echo: what is BLAKE3?", res.stdout
    assert [(m["role"], m["content"]) for m in c.messages(sid)["messages"]] == [
        ("user", "what is BLAKE3?"),
        ("assistant", "echo: what is BLAKE3?"),
    ]


def test_ask_again_failing_too_says_the_question_still_waits(loop):
    """`ask ID --again` failing in its turn (the provider still down) said only the provider's error: not that the
    chat's question still waited, nor that --again was still the way (the first failure's hint, scrolled away). It
    says both, as the first failure does, and --again then answers the one question."""
    make, p = loop
    d = make()
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    c.append(sid, "user", "what is BLAKE3?")  # (recorded by an ask whose provider failed)
    p.faults.status, p.faults.times = 500, 1
    res = run_cli(d.home, "ask", sid, "--again")
    assert res.returncode == 1, res
    assert "the chat's last question still waits" in res.stderr, res.stderr
    assert f"sessiond ask --home {d.home} {sid} --again" in res.stderr, res.stderr
    assert run_cli(d.home, "ask", sid, "--again", check=True).stdout.strip() == "echo: what is BLAKE3?"
    assert [m["role"] for m in c.messages(sid)["messages"]] == ["user", "assistant"]
    # --again with a question, or neither: usage errors, nothing sent or recorded
    for argv in (["ask", sid, "more", "--again"], ["ask", sid]):
        res = run_cli(d.home, *argv)
        assert res.returncode == 2 and "--again" in res.stderr, res
    assert len(c.messages(sid)["messages"]) == 2


def test_ctrl_c_on_ask_again_before_the_answer_does_not_say_the_question_was_not_recorded(loop):
    """`ask ID --again` adds no question (the chat's last one, recorded by an `ask` whose provider failed, is
    answered); stopped by Ctrl-C before any of the answer arrived, it said "stopped before the question was
    recorded: nothing was", as an `ask` stopped before its question was taken says: the user was told the
    question they had asked was not recorded, and would ask it again, recording it twice. It says that nothing of
    the answer is recorded, and that the question is as it was."""
    make, p = loop
    d = make()
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    c.append(sid, "user", "what is BLAKE3?")
    p.faults.first_delay = 5  # the fault itself: the answer's stream open, no word yet
    proc = popen_cli(
        ["ask", sid, "--again", "--home", d.home], env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    wait_for(lambda: p.requests, timeout=20, what="the provider asked")
    _, err = _interrupted(proc)
    assert b"before the question was recorded" not in err and b"nothing was" not in err, err
    assert b"nothing of it is recorded" in err, err
    assert [m["role"] for m in c.messages(sid)["messages"]] == ["user"]


def test_ask_again_on_a_chat_with_nothing_to_answer_is_refused_before_the_model_is_asked(loop):
    """`ask ID --again` (POST complete without content) on a chat holding no message sent the provider an empty
    `messages` list: OpenAI refuses it (400, "[] is too short"), said as the provider's error, and a provider that
    answers anyway had its answer to nothing recorded. Refused now, nothing sent or recorded, naming the way on: a
    question."""
    make, p = loop
    d = make()
    c = d.client()
    sid = c.create_session(model="echo-1", system_prompt="be brief")["id"]
    res = run_cli(d.home, "ask", sid, "--again")
    assert res.returncode != 0, res
    assert "no message" in res.stderr and f"sessiond ask --home {d.home} {sid} TEXT" in res.stderr, res.stderr
    assert p.requests == [] and c.messages(sid)["messages"] == []
    with pytest.raises(ApiError) as refused:  # the API's refusal names the way on in its terms too
        c.complete(sid)
    assert refused.value.status == 422 and refused.value.details["api"] == [
        f'POST /v1/sessions/{sid}/complete {{"chat": "main", "content": QUESTION}}'
    ], refused.value.details
    c.append(sid, "user", "hello")  # a question recorded (its provider failed, say): --again answers it
    assert run_cli(d.home, "ask", sid, "--again", check=True).stdout.strip() == "echo: hello"


def test_the_again_hint_after_a_provider_failure_keeps_the_model_and_provider_asked(loop):
    """A provider's failure names `sessiond ask ID --again` to have the recorded question answered; asked with
    --model (or --provider), the hint left it out, so run as printed it asked the chat's own model instead (README:
    a hint runs as printed). It carries the --model and --provider the question was asked with."""
    make, p = loop
    d = make()
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    p.faults.status, p.faults.times = 500, 1  # the fault itself: the provider fails this one request
    res = run_cli(d.home, "ask", sid, "--model", "echo-2", "--provider", "loop", "what is BLAKE3?")
    assert res.returncode == 1, res
    assert f"sessiond ask --home {d.home} {sid} --model echo-2 --provider loop --again" in res.stderr, res.stderr


def test_the_again_hint_after_a_model_the_provider_lacks_names_another_model(loop):
    """A model the provider does not have (model_not_found) is told to choose another with --model; the way on
    for the recorded question repeated the missing model (`ask ID --model nosuch --again`), so run as printed
    it failed the same way. It names a model to choose instead, keeping the chat and provider asked."""
    make, _ = loop
    d = make()
    sid = d.client().create_session(model="echo-1")["id"]
    res = run_cli(d.home, "ask", sid, "--model", "nosuch", "--provider", "loop", "what is BLAKE3?")
    assert res.returncode == 1 and "has no model 'nosuch'" in res.stderr, res
    assert "--model nosuch --again" not in res.stderr, res.stderr
    assert f"sessiond ask --home {d.home} {sid} --model MODEL --provider loop --again" in res.stderr, res.stderr
    res = run_cli(d.home, "ask", sid, "--model", "echo-2", "--provider", "loop", "--again", check=True)
    assert res.stdout.strip() == "echo: what is BLAKE3?", res


def test_ask_again_on_a_chat_already_answered_is_refused_and_adds_no_second_answer(loop):
    """`ask ID --again` is for a question recorded when its provider failed; on a chat whose last message is
    already the model's whole answer it asked the model again and recorded a second answer after the first (a
    user retrying an `ask` that had in fact worked got the answer twice). Refused now, nothing sent or recorded,
    naming the way on; an answer cut short (marked interrupted) may still be asked again."""
    make, p = loop
    d = make()
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    run_cli(d.home, "ask", sid, "hello", check=True)
    sent = len(p.requests)
    res = run_cli(d.home, "ask", sid, "--again")
    assert res.returncode == 1, res
    [_, answer] = c.messages(sid)["messages"]
    assert f"already ends in the model's answer (message {answer['id']})" in res.stderr, res.stderr
    assert f"sessiond ask --home {d.home} {sid} TEXT" in res.stderr, res.stderr
    assert len(p.requests) == sent and len(c.messages(sid)["messages"]) == 2
    res = run_cli(d.home, "ask", sid, "--again", "--json")
    assert res.returncode == 1 and json.loads(res.stdout)["error"]["code"] == "already_answered", res


def test_an_answer_piped_to_a_reader_that_stops_is_still_recorded_whole(loop):
    """`sessiond ask S "..." | head -c 20`: head exits once it has its bytes, and `ask`'s next write met a
    closed pipe; it exited at once, its connection closing, which the daemon reads as the app leaving (as a
    Ctrl-C): the generation stopped and the answer recorded `[interrupted]`, cut at whatever had arrived. The
    question was asked for its answer: `ask` now stops printing but reads the answer to its end, recorded
    whole (Ctrl-C still stops it), and exits 0 as before."""
    c, sid, proc, _ = _mid_answer(loop, words=60, delay=0.02)
    proc.stdout.close()  # the reader stops, as head does
    proc.stdout = None  # (nothing more to read of it)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and b"Traceback" not in err, err
    (answer,) = wait_for(lambda: assistant(c, sid), timeout=30, what="the answer recorded")
    assert not answer.get("interrupted") and answer["content"] == f"echo: {_words(60)}", answer


def _words(n: int) -> str:
    return " ".join(f"w{i}" for i in range(n))


def test_ctrl_c_as_the_answer_s_head_arrives_leaves_the_daemon_no_answer_to_record(loop, monkeypatch, capsys):
    """Ctrl-C landing just as the answer's head arrived, before the client handed `ask` its stream (the daemon
    had begun a stream, the model silent): the connection stays open while `ask` asks what was kept, so the
    daemon did not see the app leave, and recorded the model's whole answer once it came (`ask` said "the whole
    answer is recorded", for a question stopped before any of it arrived). Seen under load, as the `silent`
    case above sends its Ctrl-C as the provider is asked. Now the client closes the connection first."""
    from sessiond.cli.main import main
    from sessiond.client import blocking

    make, p = loop
    d = make()
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    p.faults.first_delay = 3  # the stream's first chunk of no text, then the model silent: no word yet

    class CtrlC(blocking.CompletionStream):
        def __init__(self, *args, **kw):
            super().__init__(*args, **kw)
            raise KeyboardInterrupt  # (the signal's exception, at this point of the client's code)

    monkeypatch.setattr(blocking, "CompletionStream", CtrlC)
    assert main(["ask", sid, "hello", "--home", d.home]) == 130
    err = capsys.readouterr().err
    assert "nothing of it is recorded" in err and "whole answer" not in err, err
    wait_for(lambda: p.left_unanswered + p.streams_stopped == 1, timeout=20, what="the provider's request dropped")
    assert assistant(c, sid) == []


def test_a_question_to_a_session_with_no_model_names_how_to_find_and_set_one(loop):
    """A newcomer's `sessiond new` then `sessiond ask ID "hi"` was refused with 'no model to ask: give one (--model
    / "model") or set the session's': the API's field name in the CLI's words, and nothing said of where a model's
    name comes from. The refusal (nothing recorded or sent) names `sessiond models` for the provider asked, the
    setting and the one-question way, each a command to run; the API's ways in `details.api`."""
    make, p = loop
    d = make()
    c = d.client()
    sid = c.create_session(name="no model")["id"]
    res = run_cli(d.home, "ask", sid, "hi")
    assert res.returncode == 1, res
    said = res.stderr
    assert f"`sessiond models --home {d.home} --provider loop` lists the models of provider 'loop'" in said, said
    assert "''s" not in said, said  # (was: "lists 'loop''s")
    assert f"`sessiond set --home {d.home} {sid} --model NAME`" in said, said
    assert f"`sessiond ask --home {d.home} {sid} --model NAME TEXT`" in said and '"model"' not in said, said
    assert p.requests == [] and c.messages(sid)["messages"] == []
    with pytest.raises(ApiError) as refused:
        c.complete(sid, "hi")
    assert refused.value.status == 422 and refused.value.details["api"] == [
        f'PATCH /v1/sessions/{sid} {{"model": MODEL}}',
        f'POST /v1/sessions/{sid}/complete {{"model": MODEL, ...}}',
        "GET /openai/v1/models",
    ], refused.value.details
    assert c.messages(sid)["messages"] == []
