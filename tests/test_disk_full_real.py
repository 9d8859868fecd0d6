"""A real full disk under a real daemon: its home on a small tmpfs of the test's own, filled for real. An
append or an import the disk cannot take is refused with 507 disk_full (where, and what to do), nothing of it
stored; the daemon stays up, and once there is room it writes again and pushes what its outbox held, with no
restart. A start on a full disk says so in one line. Skipped where mounting is not permitted (not root, or a
sandbox without it); the mount goes however the test ends."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile

import pytest

from conftest import DaemonProc, popen_cli, run_cli
from sessiond.client import ApiError
from waiting import wait_for


@contextlib.contextmanager
def small_disk(size: str):
    where = tempfile.mkdtemp(prefix="sd-disk-")
    try:
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", where], capture_output=True
        )
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
        try:
            yield where
        finally:
            subprocess.run(["umount", "-l", where], check=True)
    finally:
        os.rmdir(where)


def fill(path: str) -> None:
    """Fill the file system holding `path` to its last byte, with the file `path`."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for block in (1 << 16, 512, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * block)
    finally:
        os.close(fd)


def test_appends_and_an_import_on_a_full_disk_are_refused_clearly_and_all_goes_on_once_there_is_room():
    # Once there is room, the push (its store is on this disk too) and the background checkpoint of the WAL into
    # sessions.db both take of it: on 48 MB (a WAL of 32 MiB kept allocated) the room freed held one of them, and
    # when the checkpoint came first the push failed 'disk full' again. About 60 MB are used in the end.
    with small_disk("96m") as disk:
        home = os.path.join(disk, "home")
        d = DaemonProc(home).start()
        try:
            with d.client() as c:
                sid = c.create_session(name="full")["id"]
                c.append(sid, role="user", content="before")
                acknowledged = ["before"]
                filler = os.path.join(disk, "filler")
                fill(filler)
                big = os.urandom(200_000).hex()
                with pytest.raises(ApiError) as refused:
                    for i in range(100):  # (what the WAL already holds room for is taken first)
                        c.append(sid, role="user", content=f"{i} {big}")
                        acknowledged.append(f"{i} {big}")
                err = refused.value
                assert err.status == 507 and err.code == "disk_full", (err.status, err.code, err.message)
                assert home in err.message and "Free some space" in err.message, err.message
                assert d.proc.poll() is None
                assert [m["content"] for m in c.messages(sid)["messages"]] == acknowledged

                other = os.path.join(tempfile.gettempdir(), f"sd-import-{os.getpid()}.json")
                with open(other, "w") as f:
                    json.dump([{"role": "user", "content": big}], f)
                try:
                    r = run_cli(home, "import-file", other)
                finally:
                    os.unlink(other)
                assert r.returncode != 0 and "is full" in r.stderr and "internal" not in r.stderr, r.stderr
                assert [s["id"] for s in c.list_sessions()["sessions"]] == [sid]  # nothing of it stays

                os.unlink(filler)  # room again: no restart
                c.append(sid, role="user", content="after")
                acknowledged.append("after")
                assert [m["content"] for m in c.messages(sid)["messages"]] == acknowledged
                assert c.sync(sid, wait=True, timeout=30)["complete"]  # what it held, pushed once there is room
        finally:
            assert d.stop() == 0


def test_a_start_on_a_full_disk_says_so_in_one_line():
    with small_disk("1m") as disk:
        fill(os.path.join(disk, "filler"))
        d = DaemonProc(os.path.join(disk, "home"))
        with pytest.raises(RuntimeError) as refused:
            d.start()
            d.stop()
        said = str(refused.value).strip().splitlines()[-1]
        assert said.startswith(f"sessiond: cannot start: the disk holding {disk}/home is full"), said
        assert "free some space" in said, said


def test_a_log_the_full_disk_cannot_take_is_said_in_one_line_and_goes_on_whole_once_there_is_room():
    """The daemon's log on the full disk: each line it cannot write is dropped, said once on its standard error
    (not Python's 'Logging error' and a traceback for every line, for as long as the disk stays full), and
    once there is room its lines go on, each whole."""
    with small_disk("48m") as disk, tempfile.TemporaryFile() as err:
        home = os.path.join(disk, "home")
        d = DaemonProc(home)
        d._spawn = lambda cmd, fd: popen_cli(  # type: ignore[method-assign]
            cmd, pass_fds=(fd,), stdout=subprocess.PIPE, stderr=err, env=d.env
        )
        d.start()
        try:
            with d.client() as c:
                sids = [c.create_session(name=f"logged {i}")["id"] for i in range(8)]
                assert c.sync(wait=True, timeout=30)["complete"]
                filler = os.path.join(disk, "filler")
                fill(filler)
                for sid in sids:  # (the WAL has room for them; each push's retries, a log line each)
                    c.append(sid, role="user", content="x" * 10_000)
                wait_for(
                    lambda: err.seek(0) == 0 and b"cannot write its log" in err.read(),
                    timeout=30,
                    what="the log's lines dropped, said on stderr",
                )
                os.unlink(filler)
                assert c.sync(wait=True, timeout=30)["complete"]
        finally:
            d.proc.stderr = open(os.devnull, "rb")
            assert d.stop() == 0
        err.seek(0)
        said = err.read().decode()
        with open(os.path.join(home, "logs", "sessiond.log"), "rb") as f:
            lines = f.read().splitlines()
    assert "Logging error" not in said and "Traceback" not in said, said[-2000:]
    assert said.count("cannot write its log") == 1, said[-2000:]
    for line in lines:
        json.loads(line)  # each whole
    assert any(json.loads(x)["msg"] == "pushed" for x in lines)  # (once there was room)


def test_an_export_to_a_full_disk_says_what_to_do_and_leaves_no_file(daemon):
    with daemon.client() as c:
        sid = c.create_session(name="exported", initial_messages=[{"role": "user", "content": "x" * 50_000}])["id"]
    with small_disk("1m") as disk:
        fill(os.path.join(disk, "filler"))
        out = os.path.join(disk, "export.json")
        r = run_cli(daemon.home, "export", sid, "-o", out)
        assert r.returncode == 1, r.stderr
        said = r.stderr
        assert out in said and "full" in said and "free some space" in said and "-o" in said, said
        assert sorted(os.listdir(disk)) == ["filler"]  # nothing half written, no temporary file left
