"""A command against a daemon that does not answer (its socket takes the connection, and nothing comes back
within the client's timeout): exit 3, as for no daemon at all, since what a script does next is the same (start
it, or restart it), with a message naming how; `--json`: the error code `daemon_not_answering`."""

from __future__ import annotations

import functools
import json
import os
import signal

from conftest import run_cli
from sessiond.cli import connect
from sessiond.cli.main import main
from sessiond.client import Client
from unixproxy import hung_listener


def _not_answering(res, *says: str) -> str:
    assert res.returncode == 3, res
    error = json.loads(res.stdout)["error"]
    assert error["code"] == "daemon_not_answering", error
    for s in says:
        assert s in error["message"], (s, error["message"])
    assert "Traceback" not in res.stderr, res.stderr
    return error["message"]


def test_status_and_start_against_a_socket_that_never_answers_exit_3(home):
    """`status` waited --timeout seconds and exited 1, though the README's exit code 3 is "no daemon answers":
    a script checking for 3 to (re)start the daemon missed it. No sessiond daemon holds this home, so `stop`
    cannot end what listens: the message says what can."""
    os.makedirs(home, mode=0o700)
    sock = os.path.join(home, "sessiond.sock")
    with hung_listener(sock) as held:
        message = _not_answering(run_cli(home, "status", "--timeout", "1", "--json"), "no answer within 1 s", sock)
        assert "no sessiond daemon holds this home" in message, message
        assert f"`sessiond start --home {home}`" in message, message
        assert held, "the status never reached the listener"
        res = run_cli(home, "start", "--json")  # start asks it first, and does not start a second daemon beside it
        _not_answering(res, "no answer within 5 s", f"`sessiond start --home {home}`")
        res = run_cli(home, "status", "--timeout", "1")  # to a person: on standard error
        assert res.returncode == 3 and "no answer within 1 s" in res.stderr and not res.stdout, res


def test_every_command_against_a_socket_that_never_answers_exits_3(home, monkeypatch, capsys):
    """Any command (here `ls` and `add`, with the client's timeout shortened from its 300 s) whose daemon does
    not answer exits 3 with the way out; one that may have changed something (a POST) says to check first."""
    monkeypatch.setattr(connect, "Client", functools.partial(Client, timeout=0.5))
    os.makedirs(home, mode=0o700)
    with hung_listener(os.path.join(home, "sessiond.sock")):
        for argv, more in ((["ls"], []), (["add", "s1", "--role", "user", "hi"], ["may or may not have been done"])):
            capsys.readouterr()
            assert main([*argv, "--home", home, "--json"]) == 3, argv
            out, err = capsys.readouterr()
            error = json.loads(out)["error"]
            assert error["code"] == "daemon_not_answering", (argv, error)
            for s in ["no answer within 0.5 s", f"`sessiond start --home {home}`", *more]:
                assert s in error["message"], (argv, s, error["message"])
            if not more:
                assert "may or may not" not in error["message"], error["message"]


def test_a_stopped_daemon_is_not_answering_and_stop_then_start_is_the_way(daemon):
    """A real daemon, stopped (SIGSTOP): it holds the home and its socket and answers nothing. Exit 3, naming its
    pid and the way: `sessiond stop` (which kills it), then `sessiond start`."""
    os.kill(daemon.proc.pid, signal.SIGSTOP)
    try:
        message = _not_answering(run_cli(daemon.home, "status", "--timeout", "1", "--json"), "within 1 s")
    finally:
        os.kill(daemon.proc.pid, signal.SIGCONT)
    assert f"pid {daemon.proc.pid}" in message, message
    assert f"`sessiond stop --home {daemon.home}`" in message and f"`sessiond start --home {daemon.home}`" in message
