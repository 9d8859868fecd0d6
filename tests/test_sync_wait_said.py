"""`sessiond sync --wait` on a store that fails (a relay down: its connections refused) waits up to its
--timeout (60 s by default) for the store to answer again, as the README says. It waited in silence: nothing
on the screen until the end, so a user could not tell a slow push from a store that is down. It says on
standard error, as the push fails, what failed and that it tries again until --timeout."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import queue
import subprocess
import threading
import time

import pytest

from conftest import DaemonProc, config_refused, popen_cli


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
            reader = threading.Thread(target=_lines, args=(proc.stderr, said), daemon=True)
            reader.start()
            try:
                line = said.get(timeout=30)  # long before the 60 s are over
                assert proc.poll() is None, "the notice came only with the end"
            finally:
                proc.terminate()
                proc.wait(10)
                reader.join(10)  # (at the end of its stream: closed under its readline, it raised in its thread)
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
            # 3 s: the daemon's retries back off from 0.2 s, doubling: 4 failures at least within them
            ["sync", sid, "--wait", "--timeout", "3", "--home", d.home, "--json"],
            env=d.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = proc.communicate(timeout=60)
        assert time.monotonic() - t0 >= 2.5  # it waited its --timeout (the store may come back meanwhile)
        assert proc.returncode == 1 and json.loads(out)["complete"] is False, out
        notices = [line for line in err.decode().splitlines() if "trying again" in line]
        assert len(notices) == 1, err  # the same failure again (the daemon's retries) is not said again
    finally:
        d.stop()


@contextlib.contextmanager
def _running(argv: list[str], env: dict):
    """`sessiond *argv` started, the lines of its standard error put in a queue as they come (None at its
    end): yields (the process, the queue); afterwards the process is ended (killed if it still runs)."""
    proc = popen_cli(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    said: queue.Queue = queue.Queue()
    reader = threading.Thread(target=_lines, args=(proc.stderr, said), daemon=True)
    reader.start()
    try:
        yield proc, said
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(10)  # (at the end of its stream: closed under its readline, it raised in its thread)
        proc.stdout.close()
        proc.stderr.close()


def _first_notice(home: str, env: dict, argv: list[str]) -> tuple[str | None, object]:
    """`sessiond *argv --home home`'s first line on standard error, read while it runs (None: none came
    before it ended), and the process, ended."""
    with _running([*argv, "--home", home], env) as (proc, said):
        line = said.get(timeout=30)
        running = proc.poll() is None
        proc.wait(30)
    return (line if running else None), proc


def test_end_and_rm_say_what_fails_while_they_wait_for_the_store(reserved_port, tmp_path):
    """`end` and `rm` of a shared session wait for the session's push as long as a store call may take
    (store_timeout, 30 s by default); against a store that is down, that long in silence, then the answer.
    They say, as the push fails, what failed, and what the command does meanwhile. (The test's home waits
    5 s, not 30: the notice comes at the push's first failure, long before either; the answers after the
    wait, ended here and refused, are the same.)"""
    from conftest import relay_served, write_config

    write_config(str(tmp_path / "home"), store_timeout=5)

    # on the port held for the test: stopped, the relay's port is given to no other server's bind to port 0, nor to
    # a connection's own port (another worker's server there answered the pushes, or held them unanswered)
    listen = f"127.0.0.1:{reserved_port.port}"
    with relay_served(str(tmp_path / "relay"), "--open-registration", "--listen", listen) as relay:
        d = DaemonProc(str(tmp_path / "home"), relay["url"]).start()
        try:
            with d.client() as c:
                shared = c.create_session(name="shared", initial_messages=[{"role": "user", "content": "hi"}])["id"]
                c.share(shared)
                assert c.sync(shared, wait=True, timeout=30)["complete"]
                ended = c.create_session(name="ended")["id"]
                assert c.sync(ended, wait=True, timeout=30)["complete"]
        except BaseException:
            d.stop()
            raise
    try:  # the relay is gone: its connections refused
        with d.client() as c:
            c.append(shared, "user", "written while the relay is down")
            c.append(ended, "user", "so is this")
        with concurrent.futures.ThreadPoolExecutor(2) as pool:  # the two waits at once, not one after the other
            end = pool.submit(_first_notice, d.home, d.env, ["end", ended])
            rm = pool.submit(_first_notice, d.home, d.env, ["rm", shared, "--json"])
        line, proc = end.result()
        assert line is not None and ended in line and "cannot connect" in line, line
        assert "not pushed yet" in line and "the end" in line, line
        assert proc.returncode == 0  # ended here all the same, as before
        line, proc = rm.result()
        assert line is not None and shared in line and "cannot connect" in line, line
        assert "--force" in line, line
        assert proc.returncode == 1  # refused, as before: nothing deleted
        with d.client() as c:
            assert c.get_session(shared)["id"] == shared and c.get_session(ended)["status"] == "ended"
    finally:
        d.stop()


def test_share_says_what_fails_while_it_waits_for_the_store(reserved_port, tmp_path):
    """`share` pushes the session before it makes its code, waiting for the store as long as a store call
    may take (store_timeout, 30 s by default): against a store that is down, 30 s of silence, then the
    refusal. It says, as the push fails, what failed, and that the share waits for it. (The test's home
    waits 5 s, not 30: the notice comes at the push's first failure, long before either.)"""
    from conftest import write_config

    write_config(str(tmp_path / "home"), store_timeout=5)
    d = DaemonProc(str(tmp_path / "home"), f"s5+http://127.0.0.1:{reserved_port.port}").start()
    try:
        with d.client() as c:
            sid = c.create_session(name="to share")["id"]
        t0 = time.monotonic()
        line, proc = _first_notice(d.home, d.env, ["share", sid])
        assert line is not None and sid in line and "cannot connect" in line, line
        assert "not pushed yet" in line and "the share waits" in line, line
        assert proc.returncode == 1  # refused, as before: no code made
        assert time.monotonic() - t0 < 20  # after the home's store_timeout, not the 30 s default
        with d.client() as c:
            assert c.shares(sid)["shares"] == []
    finally:
        d.stop()


def test_the_same_failure_of_another_object_or_session_is_said_once(capsys, tmp_path):
    """A folder store's failure names the object it could not write, a different one for each session: the
    notice of each session's failure would be a line per session (a thousand for a thousand sessions). The
    same failure but for its ids is said once."""
    from sessiond.cli.progress import StoreWaits

    class NoDaemon:  # a home no daemon serves: StoreWaits reads no stream, and says what it is given
        home, socket = str(tmp_path / "home"), str(tmp_path / "home" / "sessiond.sock")

    waits = StoreWaits(NoDaemon(), None, 10.0, lambda left: "waiting")
    try:
        for sid, obj in (
            ("01m95nx3f3jqpfmre62y8extnb", "01dd84" + "a" * 58),
            ("01m95nx3f3jqpfmre62y8extnc", "02" * 32),
        ):
            waits._failed(
                {"session": sid, "retry_in": 1, "error": f"cannot write object {obj}: the store folder /x is missing"}
            )
        waits._failed({"session": "s", "retry_in": 1, "error": "another failure"})
    finally:
        waits.close()
    said = capsys.readouterr().err.splitlines()
    assert len(said) == 2 and "01m95nx3f3jqpfmre62y8extnb" in said[0] and "another failure" in said[1], said


def test_a_failure_waiting_does_not_mend_is_not_said_to_be_tried_again_until_timeout(store_dir, tmp_path):
    """`sync --wait` ends at once, exit 1, on a push failure waiting does not mend (README: a folder store's
    folder gone, credentials refused, a store full). Its notice on standard error said all the same "trying
    again until --timeout (60 s left; Ctrl-C stops waiting ...)", and the command ended a moment later: the
    user was told to wait a minute that was never waited. The notice says the wait ends, and why."""
    import os

    folder = os.path.join(store_dir, "store")
    d = DaemonProc(str(tmp_path / "home"), f"file://{folder}").start()
    try:
        with d.client() as c:
            sid = c.create_session(name="away", initial_messages=[{"role": "user", "content": "hi"}])["id"]
            c.sync(sid, wait=True, timeout=30)
            os.rename(folder, folder + ".away")  # a share not mounted: the folder is gone
            c.append(sid, "user", "while the folder is away")
        t0 = time.monotonic()
        proc = popen_cli(
            ["sync", sid, "--wait", "--timeout", "60", "--home", d.home],
            env=d.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = proc.communicate(timeout=60)
        assert time.monotonic() - t0 < 30 and proc.returncode == 1, (out, err)  # it did not wait its timeout
        notices = [line for line in err.decode().splitlines() if sid in line]
        assert notices and "missing or not a folder" in notices[0], err
        assert "trying again" not in err.decode() and "s left" not in err.decode(), err
        assert "waiting does not mend" in notices[0], err
    finally:
        d.stop()


def test_a_daemon_stopping_answers_a_sync_wait_for_a_store_that_is_down_and_stops(reserved_port, tmp_path):
    """A `sync --wait` waiting for a store that is down held the daemon's stop: its request was waited for
    until its --timeout (60 s by default, up to an hour) or aiohttp's 60 s, past `sessiond stop`'s 15 s,
    which then killed the daemon (SIGKILL). Stopping, the daemon answers the wait with what is pushed so far
    (not complete) and stops at once."""
    d = DaemonProc(str(tmp_path / "home"), f"s5+http://127.0.0.1:{reserved_port.port}").start()
    try:
        with d.client() as c:
            sid = c.create_session(name="waiting", initial_messages=[{"role": "user", "content": "hi"}])["id"]
        cli = ["sync", sid, "--wait", "--timeout", "600", "--home", d.home, "--json"]
        with _running(cli, d.env) as (proc, said):
            line = said.get(timeout=30)  # the wait is under way: the push failed once
            assert line is not None and "trying again" in line, line
            t0 = time.monotonic()
            d.proc.terminate()
            assert d.proc.wait(10) == 0  # a clean stop, not one cut short by a kill
            assert time.monotonic() - t0 < 5
            out = proc.stdout.read()
            assert proc.wait(10) == 1 and json.loads(out)["complete"] is False, out  # answered, not hung up on
    finally:
        d.stop()


@pytest.mark.parametrize("value", ["0.5", "0", "241", "true", '"30"', "inf", "nan"])
def test_a_store_timeout_out_of_its_range_or_not_a_number_is_refused(tmp_path, value):
    says = r"'store_timeout' must be a number of seconds, 1 to 240"
    assert config_refused(tmp_path, "store_timeout", value, "1", says).store_timeout == 1.0
    from sessiond.daemon.home import Config

    assert Config.load(str(tmp_path / "none")).store_timeout == 30.0  # no config.toml: the default
