"""`sessiond stop` while a request was under way in the daemon waited for it: the daemon's stop gave the
requests under way aiohttp's 60 s to end, so `stop` said nothing for its 15 s, then killed the daemon
(SIGKILL: no clean stop).
* A model answering (a long answer streaming to `sessiond ask`): the part of the answer that had arrived was
  lost, though `ask` had said "the daemon records what it had of the answer, marked interrupted". A stop now
  ends each answer under way as an app leaving does: the generation stopped, what arrived recorded, marked
  interrupted; and (since 0.37) the stream's `error` event tells the app so before it ends (code `stopping`,
  the message kept and `ask --again`), where `ask` said only that the connection broke.
* A `sync --wait` for a store that is down (and `share`, `rm`, `end` waiting for a push): the stop now gives
  such requests a few seconds (STOP_GRACE), then ends them, their apps told the connection broke.
Either way the daemon stops at once, cleanly."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable

import pytest

from conftest import DaemonProc, popen_cli, run_cli


def _stopped_while(d: DaemonProc, argv: list[str], under_way: Callable[[subprocess.Popen], None]):
    """`sessiond stop` run once `sessiond *argv` is under way (`under_way(proc)` returns): the stop's result,
    how long it took, and the command's exit code and standard error."""
    proc = popen_cli([*argv, "--home", d.home], env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        under_way(proc)
        t0 = time.monotonic()
        res = run_cli(d.home, "stop")
        took = time.monotonic() - t0
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert res.returncode == 0 and "killed" not in res.stdout + res.stderr, res
    assert took < 12, took  # not the 15 s stop waits before it kills
    assert d.proc is not None and d.proc.wait(10) == 0  # a clean stop
    return proc.returncode, err


def test_stop_while_a_model_answers_records_what_arrived_and_stops_at_once(slow_stream):
    d = slow_stream  # its provider streams its answer's words 0.3 s apart
    sid = d.client().create_session(model="echo-1")["id"]
    question = " ".join(f"word{i}" for i in range(80))  # its echo: 81 chunks, 24 s, past stop's 15 s

    def some_arrived(proc: subprocess.Popen) -> None:
        assert proc.stdout is not None and proc.stdout.read(17) == b"echo: word0 word1"

    code, err = _stopped_while(d, ["ask", sid, question], some_arrived)
    # told why and what was kept, not that the connection broke (the stream's error event, before its end)
    assert code == 1 and b"the daemon is stopping" in err and b"broke" not in err, err
    d.start()
    q, a = d.client().messages(sid)["messages"]
    assert q["content"] == question and a["role"] == "assistant" and a["interrupted"] is True, a
    assert a["content"].startswith("echo: word0 word1") and len(a["content"]) < len("echo: " + question), a
    assert f"recorded as message {a['id']}, marked interrupted".encode() in err and b"--again" in err, err


def test_stop_while_sync_waits_for_a_store_that_is_down_stops_cleanly(reserved_port, tmp_path):
    d = DaemonProc(str(tmp_path / "home"), f"s5+http://127.0.0.1:{reserved_port.port}").start()
    try:
        with d.client() as c:
            sid = c.create_session(name="waiting", initial_messages=[{"role": "user", "content": "hi"}])["id"]

        def waiting(proc: subprocess.Popen) -> None:
            assert proc.stderr is not None and b"not pushed yet" in proc.stderr.readline()  # the push failed

        code, _ = _stopped_while(d, ["sync", sid, "--wait", "--timeout", "120"], waiting)
        assert code != 0
        d.start()
        with d.client() as c:  # the message still waits for its push
            assert c.get_session(sid)["sync"]["pending"] >= 1
    finally:
        d.stop()


@pytest.mark.parametrize("chosen", [[], ["--model", "echo-2"]])
def test_stop_before_the_models_first_word_says_so_and_keeps_the_question(make_daemon, chosen):
    """The model still thinking when the daemon stopped: `ask` said the connection broke. It now says that the
    daemon is stopping, nothing of the answer was recorded, and how to have the question answered: as it was
    asked (the way on named `ask --again` without the model the question chose, which asks the session's own)."""
    from conftest import started_with_provider
    from servers.openai_server import Faults, Provider, serve_threaded

    p, server = serve_threaded(Provider(faults=Faults(held=True)))
    try:
        d = started_with_provider(make_daemon, f"http://127.0.0.1:{server.port}/v1", default_provider="loop")
        sid = d.client().create_session(model="echo-1")["id"]

        def asked(proc: subprocess.Popen) -> None:
            deadline = time.monotonic() + 10
            while not p.requests and time.monotonic() < deadline:  # the model asked: it thinks, held
                time.sleep(0.02)
            assert p.requests

        code, err = _stopped_while(d, ["ask", sid, *chosen, "count"], asked)
        p.resume.set()
        assert code == 1 and b"the daemon is stopping" in err and b"broke" not in err, err
        assert f"{sid} --chat main{''.join(' ' + a for a in chosen)} --again`".encode() in err, err  # (--home before)
        assert p.requests[-1]["model"] == (chosen[1] if chosen else "echo-1")
        d.start()
        assert [m["role"] for m in d.client().messages(sid)["messages"]] == ["user"]
    finally:
        p.resume.set()
        server.stop()
