"""`sessiond stop` while a model was answering (a long answer streaming to `sessiond ask`) waited for the
answer to end: the daemon's stop waited for every request under way (aiohttp's 60 s), so `stop` said nothing
for its 15 s, then killed the daemon (SIGKILL), and the part of the answer that had arrived was lost, though
`ask` had said "the daemon records what it had of the answer, marked interrupted". A stop now ends each
answer under way as an app leaving does: the generation stopped, what arrived recorded, marked
interrupted, and the daemon stops at once."""

from __future__ import annotations

import os
import subprocess
import time

from conftest import popen_cli, run_cli


def test_stop_while_a_model_answers_records_what_arrived_and_stops_at_once(slow_stream):
    d = slow_stream  # its provider streams its answer's words 0.3 s apart
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    question = " ".join(f"word{i}" for i in range(80))  # its echo: 81 chunks, 24 s, past stop's 15 s
    proc = popen_cli(
        ["ask", sid, question, "--home", d.home], env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert proc.stdout.read(len("echo: word0 word1")) == b"echo: word0 word1"  # some of it has arrived
        t0 = time.monotonic()
        res = run_cli(d.home, "stop")
        took = time.monotonic() - t0
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert res.returncode == 0 and "killed" not in res.stdout + res.stderr, res
    assert took < 10, took  # not the 15 s stop waits before it kills
    assert proc.returncode == 1 and b"broke in the middle of the answer" in err, err
    d.proc.wait(10)
    d.start()
    q, a = d.client().messages(sid)["messages"]
    assert q["content"] == question and a["role"] == "assistant" and a["interrupted"] is True, a
    assert a["content"].startswith("echo: word0 word1") and len(a["content"]) < len("echo: " + question), a
