"""`sessiond sync --wait` on a store that fails (a relay down: its connections refused) waits up to its
--timeout (60 s by default) for the store to answer again, as the README says. It waited in silence: nothing
on the screen until the end, so a user could not tell a slow push from a store that is down. It says on
standard error, as the push fails, what failed and that it tries again until --timeout."""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time

from conftest import DaemonProc, popen_cli


def _lines(stream, out: queue.Queue) -> None:
    for line in iter(stream.readline, b""):
        out.put(line.decode())
    out.put(None)


def test_sync_wait_says_what_fails_while_it_waits_for_the_store(reserved_port, tmp_path):
    d = DaemonProc(str(tmp_path / "home"), f"s5+http://127.0.0.1:{reserved_port.port}").start()
    try:
        with d.client() as c:
            sid = c.create_session(name="waiting", initial_messages=[{"role": "user", "content": "hi"}])["id"]
        for json_flag in ((), ("--json",)):
            cli = ["sync", sid, "--wait", "--timeout", "60", "--home", d.home, *json_flag]
            proc = popen_cli(cli, env=d.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            said: queue.Queue = queue.Queue()
            threading.Thread(target=_lines, args=(proc.stderr, said), daemon=True).start()
            try:
                line = said.get(timeout=30)  # long before the 60 s are over
                assert proc.poll() is None, "the notice came only with the end"
            finally:
                proc.terminate()
                proc.wait(10)
                proc.stdout.close()
                proc.stderr.close()
            assert line is not None and sid in line, line
            assert "cannot connect" in line and "127.0.0.1" in line, line  # what failed
            assert "trying again" in line and "--timeout" in line, line  # and what the command does meanwhile
        with d.client() as c:  # the notices are the CLI's: the session is as it was, waiting for the store
            assert c.get_session(sid)["sync"]["pending"] >= 1
    finally:
        d.stop()


def test_a_failing_store_s_notice_is_said_once_not_at_every_retry(reserved_port, tmp_path):
    d = DaemonProc(str(tmp_path / "home"), f"s5+http://127.0.0.1:{reserved_port.port}").start()
    try:
        with d.client() as c:
            sid = c.create_session(name="waiting", initial_messages=[{"role": "user", "content": "hi"}])["id"]
        t0 = time.monotonic()
        proc = popen_cli(
            ["sync", sid, "--wait", "--timeout", "6", "--home", d.home, "--json"],
            env=d.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = proc.communicate(timeout=60)
        assert time.monotonic() - t0 >= 5  # it waited its --timeout (the store may come back meanwhile)
        assert proc.returncode == 1 and json.loads(out)["complete"] is False, out
        notices = [line for line in err.decode().splitlines() if "trying again" in line]
        assert len(notices) == 1, err  # the same failure again (the daemon's retries) is not said again
    finally:
        d.stop()
