"""The daemon as a process: restarts, crashes, permissions, locking, migrations."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import stat
import tempfile

import pytest

from conftest import DaemonProc, run_cli
from sessiond.client import Client, DaemonNotRunning
from sessiond.storage.database import Database
from sessiond.storage.schema import SCHEMA_VERSION


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_data_survives_restart(daemon):
    c = daemon.client()
    sid = c.create_session(name="persist", system_prompt="sp")["id"]
    c.append_many(sid, [{"role": "user", "content": f"m{i}"} for i in range(20)])
    c.create_chat(sid, name="other")
    device = c.status()["device_id"]
    daemon.restart()
    c = daemon.client()
    assert c.status()["device_id"] == device  # a stable device id
    s = c.get_session(sid)
    assert s["name"] == "persist" and s["message_count"] == 20 and s["chat_count"] == 2
    assert [m["content"] for m in c.messages(sid)["messages"]] == [f"m{i}" for i in range(20)]
    # sequence numbers continue where they stopped
    m = c.append(sid, "user", "after restart")
    assert m["seq"] > max(x["seq"] for x in c.messages(sid)["messages"][:-1])


def test_acknowledged_messages_survive_kill_9(daemon):
    c = daemon.client()
    sid = c.create_session()["id"]
    acked = [c.append(sid, "user", f"msg {i}")["id"] for i in range(30)]
    daemon.kill()
    with pytest.raises(DaemonNotRunning):
        Client(daemon.home).status()
    daemon.start()  # a stale socket file from the killed daemon must not stop a new one
    got = [m["id"] for m in daemon.client().messages(sid, limit=1000)["messages"]]
    assert got == acked


def test_permissions(daemon):
    assert mode(daemon.home) == 0o700
    assert stat.S_ISSOCK(os.stat(daemon.socket).st_mode) and mode(daemon.socket) == 0o600
    assert mode(os.path.dirname(daemon.socket)) == 0o700
    c = daemon.client()
    sid = c.create_session()["id"]
    c.append(sid, "user", "x")
    c.sync(wait=True)
    keys = os.path.join(daemon.home, "keys")
    assert mode(keys) == 0o700
    files = [os.path.join(r, f) for r, _, fs in os.walk(keys) for f in fs]
    assert any(f.endswith("device.key") for f in files) and any(f.endswith(sid + ".key") for f in files)
    for f in files:
        assert mode(f) == 0o600, f
    # the database is its file and SQLite's WAL and shared-memory index beside it (the latest writes are
    # in the WAL until a checkpoint): each 0600
    for name in ("sessions.db", "sessions.db-wal", "sessions.db-shm"):
        assert mode(os.path.join(daemon.home, name)) == 0o600, name


def test_refuses_a_home_open_to_others(home):
    os.makedirs(home, mode=0o700)
    os.chmod(home, 0o755)
    res = run_cli(home, "daemon")
    assert res.returncode != 0 and "open to group or others" in res.stderr and "chmod 700" in res.stderr
    assert not os.path.exists(os.path.join(home, "sessiond.sock"))


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to give the folder to another user")
def test_refuses_a_home_owned_by_another_user(home):
    os.makedirs(home, mode=0o700)
    os.chown(home, 65534, 65534)
    res = run_cli(home, "daemon")
    assert res.returncode != 0 and "owned by uid 65534" in res.stderr


def test_second_daemon_on_the_same_home_is_refused(daemon):
    res = run_cli(daemon.home, "daemon")
    assert res.returncode != 0 and "already running" in res.stderr
    assert daemon.client().status()["pid"] == daemon.proc.pid  # the first one is untouched


def test_sigterm_shuts_down_cleanly(daemon):
    assert daemon.stop() == 0
    assert not os.path.exists(daemon.socket)


def test_logs_are_json_lines(daemon):
    c = daemon.client()
    c.create_session()
    daemon.stop()
    with open(os.path.join(daemon.home, "logs", "sessiond.log")) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    assert any(line["msg"] == "daemon started" for line in lines)
    assert all({"time", "level", "msg"} <= set(line) for line in lines)


def test_long_home_path_uses_a_private_socket_folder():
    base = tempfile.mkdtemp(prefix="sd-")
    home = os.path.join(base, "x" * 60, "y" * 60)
    d = DaemonProc(home).start()
    try:
        assert not d.socket.startswith(home) and len(d.socket) <= 100
        assert mode(os.path.dirname(d.socket)) == 0o700 and mode(d.socket) == 0o600
        assert d.client().status()["socket"] == d.socket
    finally:
        d.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_old_schema_upgrades_in_place(home):
    os.makedirs(home, mode=0o700)
    path = os.path.join(home, "sessions.db")

    async def make_old():
        db = await Database.open(path, upto=1)
        assert await db.schema_version() == 1
        await db.conn.execute(
            "INSERT INTO sessions(id, name, created_at, last_activity, current_chat)"
            " VALUES ('old', 'from v1', 1, 1, 'main')"
        )
        await db.conn.execute("INSERT INTO chats(session_id, id, name, created_at) VALUES ('old', 'main', 'main', 1)")
        await db.close()

    asyncio.run(make_old())
    d = DaemonProc(home).start()
    try:
        c = d.client()
        assert c.get_session("old")["name"] == "from v1"
        c.append("old", "user", "works after the upgrade")
    finally:
        d.stop()

    async def version():
        db = await Database.open(path)
        v = await db.schema_version()
        await db.close()
        return v

    assert asyncio.run(version()) == SCHEMA_VERSION


def test_config_file_and_bad_config(home):
    os.makedirs(home, mode=0o700)
    store = os.path.join(os.path.dirname(home), "elsewhere")
    with open(os.path.join(home, "config.toml"), "w") as f:
        f.write(f'store = "file://{store}"\nsync_interval = 0.5\n')
    d = DaemonProc(home).start()
    try:
        assert d.client().status()["store"] == "file://" + store
    finally:
        d.stop()
    with open(os.path.join(home, "config.toml"), "w") as f:
        f.write("store = [unclosed\n")
    res = run_cli(home, "daemon")
    assert res.returncode != 0 and "config.toml is not valid TOML" in res.stderr
    os.unlink(os.path.join(home, "config.toml"))
    res = run_cli(home, "daemon", "--store", "s3://bucket")
    assert res.returncode != 0 and "unsupported store URL" in res.stderr


def test_sigterm_with_a_stuck_event_subscriber_exits_promptly(daemon):
    """An app subscribed to /v1/events that stopped reading (its socket full) must not hold the daemon
    up when it is told to stop: the stream is cancelled, and the cancellation is not swallowed."""
    import signal
    import socket
    import subprocess
    import time

    sub = socket.socket(socket.AF_UNIX)
    sub.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sub.connect(daemon.socket)
    sub.sendall(b"GET /v1/events HTTP/1.1\r\nHost: localhost\r\n\r\n")
    sub.settimeout(10)
    got = b""
    while b"sessiond events" not in got:  # subscribed; from now on this app reads nothing more
        got += sub.recv(4096)
    c = daemon.client()
    sid = c.create_session()["id"]
    for _ in range(8):  # each batch's event names its 5,000 ids: far more than the socket buffers hold
        c.append_many(sid, [{"role": "user", "content": "x"} for _ in range(5000)])
    c.close()
    try:
        t = time.monotonic()
        daemon.proc.send_signal(signal.SIGTERM)
        try:
            daemon.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            raise AssertionError("the daemon did not stop within 10 s of SIGTERM with a subscriber open") from None
        assert daemon.proc.returncode == 0 and time.monotonic() - t < 10
    finally:
        sub.close()


def test_the_daemon_tunes_malloc_on_glibc():
    """tune_malloc (called by daemon/server.py run) sets glibc's mmap threshold so that sealing a 1 MiB
    page does not page-fault on fresh mappings (bench/results/malloc.json); elsewhere it does nothing."""
    import platform
    import subprocess
    import sys

    code = (
        "import resource, os\n"
        "from sessiond.daemon.malloc import tune_malloc\n"
        "from sessiond.sync.crypto import encrypt\n"
        "ok = tune_malloc()\n"
        "p = os.urandom(1020 * 1024); encrypt(p, bytes(32))\n"
        "f = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "for _ in range(20): encrypt(p, bytes(32))\n"
        "print(ok, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    ok, faults = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env).stdout.split()
    if platform.libc_ver()[0] != "glibc":
        assert ok == "False"
        return
    assert ok == "True" and int(faults) < 100  # untuned: ~600 a page, 12,000 here
