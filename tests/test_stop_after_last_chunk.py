"""The daemon stopped after a model's whole answer had streamed to `sessiond ask`, while the daemon recorded it (its
commit a moment away): the stop closed the app's connection at once, as for a stream under way not told the stop
(the watch on its model's stream was over), so `ask` said that the connection broke, its answer cut, though the
answer was whole and recorded so. A question whose answer is being recorded is now let finish within the stop's
wait for the answers under way: the app gets the end of its stream (the message recorded)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

from asking import logged
from conftest import DaemonProc, popen_cli, started_with_provider


def _until(cond: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + 20
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert cond(), what


@pytest.fixture
def held(make_daemon, tmp_path) -> Iterator[Callable[[str], tuple[DaemonProc, str, object, Callable]]]:
    """held(point): (a daemon whose provider streams words 0.3 s apart, held at pause `point` while its flag file
    is there, the flag, the provider, run(*argv): `sessiond *argv` started); everything stopped after."""
    from servers.openai_server import Faults, Provider, serve_threaded

    p, server = serve_threaded(Provider(faults=Faults(delay=0.3)))
    procs: list[subprocess.Popen] = []
    flags: list[str] = []

    def run(*argv: str) -> subprocess.Popen:
        proc = popen_cli(
            [*argv, "--home", d.home], env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        procs.append(proc)
        return proc

    def make(point: str):
        nonlocal d
        flag = str(tmp_path / point)
        flags.append(flag)
        d = started_with_provider(
            lambda: make_daemon(env={"SESSIOND_TEST_PAUSE": f"{point}:{flag}"}),
            f"http://127.0.0.1:{server.port}/v1",
            default_provider="loop",
        )
        return d, flag, p, run

    d: DaemonProc
    try:
        yield make
    finally:
        for flag in flags:
            if os.path.exists(flag):
                os.remove(flag)
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        server.stop()


def _stopped(d: DaemonProc, flag: str, run) -> subprocess.Popen:
    """`sessiond stop` begun (its answers under way ended), then the held point let go."""
    stop = run("stop")
    _until(lambda: logged(d, "stop"), "the stop began")
    os.remove(flag)
    return stop


def test_a_stop_while_a_whole_answer_is_recorded_lets_the_app_have_its_end(held):
    d, flag, p, run = held("commit.end")
    with d.client() as c:
        sid = c.create_session(model="echo-1")["id"]
        other = c.create_session(name="ended meanwhile")["id"]
    ask = run("ask", sid, "w1 w2 w3 w4 w5 w6")
    assert ask.stdout is not None and ask.stdout.read(5) == b"echo:"  # its question recorded, the model streams
    # another session's end holds its commit: the answer's record, when it comes, joins that commit and waits
    run("end", other)
    _until(lambda: os.path.exists(flag), "the end's commit held")
    _until(lambda: p.completed, "the whole answer streamed")  # its record waits
    stop = _stopped(d, flag, run)
    out, err = ask.communicate(timeout=30)
    assert stop.wait(30) == 0
    assert ask.returncode == 0 and b"broke" not in err, (ask.returncode, out, err)
    assert out.decode().strip() == "w1 w2 w3 w4 w5 w6", out
    d.start()
    q, a = d.client().messages(sid)["messages"]
    assert a["content"] == "echo: w1 w2 w3 w4 w5 w6" and not a.get("interrupted"), a


def test_a_stop_between_the_models_first_event_and_the_stream_says_so(held):
    """The stop came after the model's first event, before the app's stream began (its watch on the model between
    the first event's and the rest's): the app's connection was closed, `ask` said that it broke. It is told the
    stop now, as a stream under way is."""
    d, flag, _, run = held("complete.head")
    with d.client() as c:
        sid = c.create_session(model="echo-1")["id"]
    ask = run("ask", sid, "w1 w2 w3")
    _until(lambda: os.path.exists(flag), "the model's first event in, held there")
    stop = _stopped(d, flag, run)
    _, err = ask.communicate(timeout=30)
    assert stop.wait(30) == 0
    assert ask.returncode == 1 and b"the daemon is stopping" in err and b"broke" not in err, err
    d.start()
    assert d.client().messages(sid)["messages"][0]["content"] == "w1 w2 w3"


def test_a_chunk_in_hand_as_the_stop_stops_the_streams_watch_is_kept(held):
    """The stop came after the model's first event, and the next had arrived too (read from the provider's wire
    without a wait) when the watch on the rest began, stopped at once: that chunk, in hand, was dropped unrecorded,
    the app told nothing of the answer was kept though its words had arrived (and were billed). It is kept, and
    passed on, as the rest of an interrupted answer is."""
    d, flag, p, run = held("complete.head")
    p.faults.delay = 0.0  # the whole answer arrives at once: the chunk after the first event is in hand at once
    with d.client() as c:
        sid = c.create_session(model="echo-1")["id"]
    ask = run("ask", sid, "w1 w2 w3")
    _until(lambda: os.path.exists(flag) and p.completed, "the model's whole answer in, held at its first event")
    stop = _stopped(d, flag, run)
    out, err = ask.communicate(timeout=30)
    assert stop.wait(30) == 0
    assert ask.returncode == 1 and b"the daemon is stopping" in err, err
    d.start()
    q, a = d.client().messages(sid)["messages"]
    assert q["content"] == "w1 w2 w3" and a["interrupted"] and "echo: w1 w2 w3".startswith(a["content"]), a
    assert out.decode().strip() == a["content"], (out, a)
