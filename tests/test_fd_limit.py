"""Few file descriptors, with a real daemon started as a program under a low soft RLIMIT_NOFILE (as a desktop
session's 1024 is, below its hard limit): many clients at once each hold a connection, and the append stream's
second while the first is kept alive, so with the soft limit left as it is their accepts fail (EMFILE) and the
clients wait on each other until the daemon's idle timeout closes connections. The daemon raises its soft limit
to the hard one at start, as it may, and so serves them all."""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import tempfile
import threading
import time

from conftest import PY, DaemonProc, write_config
from sessiond.client import Client
from waiting import wait_for

SOFT = 64
CLIENTS = 120


class LowFdDaemon(DaemonProc):
    """Started for real (not forked from the test's zygote) with RLIMIT_NOFILE's soft limit at SOFT (and its
    hard one too, given `hard`); its standard error into `stderr`, a file, if given (a pipe no one reads
    while the clients run would fill)."""

    def __init__(self, home: str, *, hard: int | None = None, stderr=None):
        super().__init__(home)
        self.hard = hard
        self.stderr = stderr

    def stop(self) -> int:
        if self.proc is not None and self.proc.stderr is None:  # (into a file: DaemonProc.stop closes a pipe)
            self.proc.stderr = open(os.devnull, "rb")
        return super().stop()

    def _spawn(self, cmd: list[str], ready_fd: int) -> subprocess.Popen:
        hard = self.hard or resource.getrlimit(resource.RLIMIT_NOFILE)[1]

        def low() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (SOFT, hard))

        return subprocess.Popen(
            [PY, "-m", "sessiond.cli.main", *cmd],
            pass_fds=(ready_fd,),
            stdout=subprocess.PIPE,
            stderr=self.stderr or subprocess.PIPE,
            env=self.env,
            preexec_fn=low,
        )


def _soft_limit(pid: int) -> int:
    with open(f"/proc/{pid}/limits") as f:
        (line,) = [x for x in f if x.startswith("Max open files")]
    return int(line.split()[3])


def _clients_at_once(d: DaemonProc, timeout: float) -> list[str]:
    """CLIENTS clients at once, each appending 3 messages to one of 10 sessions; what each met ("ok" or the
    error), once all are done or `timeout` has passed (those not done then are missing)."""
    with d.client() as c:
        sids = [c.create_session(name=f"s{i}")["id"] for i in range(10)]
    done: dict[int, str] = {}

    def client(i: int) -> None:
        try:
            with d.client() as cc:
                for k in range(3):  # the first a POST on a kept connection, the others on the append stream
                    cc.append(sids[i % 10], role="user", content=f"{i}-{k}")
            done[i] = "ok"
        except Exception as exc:
            done[i] = f"{type(exc).__name__}: {exc}"

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    with d.client() as c:
        assert sum(len(c.messages(s)["messages"]) for s in sids) == 3 * sum(v == "ok" for v in done.values())
    return list(done.values())


def test_many_clients_at_once_under_a_low_soft_descriptor_limit_are_all_served(home):
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert hard > SOFT + 2 * CLIENTS, "the test needs a hard limit above what its clients use"
    d = LowFdDaemon(home).start()
    try:
        done = _clients_at_once(d, 30)
        assert len(done) == CLIENTS and set(done) == {"ok"}, (len(done), set(done))
        assert _soft_limit(d.proc.pid) == hard
    finally:
        assert d.stop() == 0


def test_out_of_descriptors_the_daemon_says_so_once_in_its_log_and_serves_everyone_as_connections_close(home):
    """The hard limit low too: the daemon cannot raise it. Its accepts fail (EMFILE) until connections close
    (the kept ones idle past connection_idle_timeout, here 1 s): it says so in its log, once, naming the limit
    and what to do, not a traceback on its standard error at every retry of the accept (a second apart, for as
    long as it lasts), and every client is served in the end."""
    write_config(home, connection_idle_timeout=1)
    with tempfile.TemporaryFile() as err:
        d = LowFdDaemon(home, hard=SOFT, stderr=err).start()
        try:
            done = _clients_at_once(d, 60)
            assert len(done) == CLIENTS and set(done) == {"ok"}, (len(done), set(done))
        finally:
            assert d.stop() == 0
        err.seek(0)
        said = err.read().decode()
    assert "Traceback" not in said and "out of system resource" not in said, said[-2000:]
    with open(os.path.join(home, "logs", "sessiond.log")) as f:
        lines = [x for x in map(json.loads, f) if x.get("event") == "out_of_descriptors"]
    assert len(lines) == 1, lines
    msg = lines[0]["msg"]
    assert f"{SOFT}" in msg and "ulimit -n" in msg and "LimitNOFILE" in msg, msg


def test_a_push_out_of_descriptors_is_said_so_not_as_a_failing_disk_and_goes_through_once_some_close(home):
    """Connections that send nothing hold every descriptor the daemon may have (hard limit 64): a push to its
    folder store cannot open the object's file (EMFILE). Its error says that, the limit and what to do (not
    that the disk or share is failing, which sends one looking at the wrong thing), and once those connections
    close the push goes through, with no restart."""
    with tempfile.TemporaryFile() as err:
        d = LowFdDaemon(home, hard=SOFT, stderr=err).start()
        held: list[socket.socket] = []
        try:
            with Client(home, append_stream=False) as c:  # (its one kept connection, made while there is room)
                sid = c.create_session(name="pushed")["id"]
                assert c.sync(sid, wait=True, timeout=20)["complete"]
                for _ in range(SOFT + 16):
                    s = socket.socket(socket.AF_UNIX)
                    s.connect(d.socket)  # (queued by the kernel past what the daemon accepts)
                    held.append(s)
                wait_for(
                    lambda: len(os.listdir(f"/proc/{d.proc.pid}/fd")) >= SOFT, what="the daemon out of descriptors"
                )
                c.append(sid, role="user", content="written while out of descriptors")
                state = c.sync(sid, wait=True, timeout=3)["sessions"][sid]
                said = state["last_error"] or ""
                assert state["pending"] and "out of file descriptors" in said and f"{SOFT}" in said, state
                assert "failing" not in said and "ulimit -n" in said, said
                for s in held:
                    s.close()
                held.clear()
                assert c.sync(sid, wait=True, timeout=30)["complete"]
        finally:
            for s in held:
                s.close()
            assert d.stop() == 0
