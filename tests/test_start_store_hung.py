"""A daemon whose start fails (here: openai_listen's port taken) while a store hangs (a folder on a network share
gone: a write that never returns). Its stop went on without that store (the sync engine's stop gives up on
it), but then the process waited at its exit for the store's thread, as long as the write hung: no os._exit on
that path, unlike a stop's. `sessiond start` (and a service manager) waited for it, no error said. Now it ends
in a bounded time, after the database is closed, with its error message and exit code."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

from conftest import popen_cli, wait_for, write_config


def test_a_start_failing_while_a_store_hangs_ends_with_its_error(make_daemon, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    held = str(tmp_path / "held")
    d = make_daemon(f"file://{store}", env={"SESSIOND_TEST_PAUSE": f"store.write:{held}"}).start()
    c = d.client()
    sid = c.create_session(name="s")["id"]
    c.append(sid, "user", "acknowledged, not pushed")
    wait_for(lambda: os.path.exists(held), timeout=30, what="the push's write held in the folder store")
    d.proc.send_signal(signal.SIGKILL)  # (its push left to the next start)
    d.proc.communicate(timeout=30)
    os.remove(held)
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    write_config(d.home, openai_listen=f"127.0.0.1:{taken.getsockname()[1]}")
    listening = str(tmp_path / "listening")
    env = {**os.environ, "SESSIOND_TEST_PAUSE": f"store.write:{held},start.listening:{listening}"}
    proc = popen_cli(
        ["daemon", "--home", d.home, "--store", f"file://{store}"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: os.path.exists(listening), timeout=30, what="the start held before it listens on TCP")
        wait_for(lambda: os.path.exists(held), timeout=30, what="the start's push held in the folder store")
        began = time.monotonic()
        os.remove(listening)  # the start goes on: its TCP port is taken
        try:
            out, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            raise AssertionError("the daemon whose start failed waited at its exit for the hung store") from None
        took = time.monotonic() - began
        said = err.decode()
        assert proc.returncode == 2 and "openai_listen" in said and "cannot listen there" in said, (said, took)
        assert "Traceback" not in said and said.count("\n") == 1, said
        assert took < 15, took  # the stop's budget, not the hung write's
    finally:
        taken.close()
        for flag in (held, listening):
            if os.path.exists(flag):
                os.remove(flag)  # the held write goes on (the process then ends)
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
    # nothing was lost: a start without the fault pushes the append
    os.remove(os.path.join(d.home, "config.toml"))
    d.env.pop("SESSIOND_TEST_PAUSE")
    d.start()
    assert d.client().sync(sid, wait=True)["complete"] is True
