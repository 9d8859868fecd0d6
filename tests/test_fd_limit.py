"""Few file descriptors, with a real daemon started as a program under a low soft RLIMIT_NOFILE (as a desktop
session's 1024 is, below its hard limit): many clients at once each hold a connection, and the append stream's
second while the first is kept alive, so with the soft limit left as it is their accepts fail (EMFILE) and the
clients wait on each other until the daemon's idle timeout closes connections. The daemon raises its soft limit
to the hard one at start, as it may, and so serves them all."""

from __future__ import annotations

import resource
import subprocess
import threading
import time

from conftest import PY, DaemonProc

SOFT = 64
CLIENTS = 120


class LowFdDaemon(DaemonProc):
    """Started for real (not forked from the test's zygote) with RLIMIT_NOFILE's soft limit at SOFT."""

    def _spawn(self, cmd: list[str], ready_fd: int) -> subprocess.Popen:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]

        def low() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (SOFT, hard))

        return subprocess.Popen(
            [PY, "-m", "sessiond.cli.main", *cmd],
            pass_fds=(ready_fd,),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env,
            preexec_fn=low,
        )


def _soft_limit(pid: int) -> int:
    with open(f"/proc/{pid}/limits") as f:
        (line,) = [x for x in f if x.startswith("Max open files")]
    return int(line.split()[3])


def test_many_clients_at_once_under_a_low_soft_descriptor_limit_are_all_served(home):
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert hard > SOFT + 2 * CLIENTS, "the test needs a hard limit above what its clients use"
    d = LowFdDaemon(home).start()
    try:
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
        deadline = time.monotonic() + 30
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        assert len(done) == CLIENTS and set(done.values()) == {"ok"}, (len(done), set(done.values()))
        with d.client() as c:
            assert sum(len(c.messages(s)["messages"]) for s in sids) == 3 * CLIENTS
        assert _soft_limit(d.proc.pid) == hard
    finally:
        assert d.stop() == 0
