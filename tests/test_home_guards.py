"""What a daemon's start and the key commands do with a home in a bad state: a damaged or lost device key,
a sessions.db written by a newer sessiond or damaged, two starts at once. Each is refused (or repaired)
with one line that names the file, what is wrong and what to do; never a traceback, never a fork."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import stat
import subprocess

import pytest

from conftest import DaemonProc, cli_json, popen_cli, run_cli
from sessiond.storage.schema import SCHEMA_VERSION
from sessiond.sync.keys import mnemonic_to_seed
from waiting import wait_for


def _pushed_session(home: str) -> tuple[str, str]:
    """A home whose daemon made one session and pushed it (signed with the device key); stopped. Returns
    (the session id, the device key's 24 backup words)."""
    d = DaemonProc(home).start()
    try:
        c = d.client()
        sid = c.create_session(name="signed")["id"]
        c.append(sid, "user", "hello")
        assert c.sync(sid, wait=True, timeout=30)["complete"]
    finally:
        d.stop()
    words = cli_json(home, "key", "export")["mnemonic"]
    return sid, words


def _one_clear_line(res: subprocess.CompletedProcess) -> str:
    assert res.returncode != 0, res.stdout
    assert "Traceback" not in res.stderr, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    return lines[0]


def test_key_import_replaces_a_damaged_device_key(home):
    """`sessiond doctor` names `sessiond key import` as the fix of a damaged device key: it must work."""
    _, words = _pushed_session(home)
    device = os.path.join(home, "keys", "device.key")
    with open(device, "wb") as f:
        f.write(b"\x00" * 7)  # cut short
    doctor = run_cli(home, "doctor")
    assert "key import" in doctor.stdout, doctor.stdout
    res = run_cli(home, "key", "import", input=words)  # no --force: there is no working key to keep
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    assert "damaged" in res.stdout and "replaced" in res.stdout, res.stdout
    with open(device, "rb") as f:
        assert f.read() == mnemonic_to_seed(words)
    assert stat.S_IMODE(os.stat(device).st_mode) == 0o600
    assert [n for n in os.listdir(os.path.dirname(device)) if n.startswith("device.key")] == ["device.key"]
    assert cli_json(home, "key", "export")["mnemonic"] == words
    d = DaemonProc(home).start()  # and the daemon starts on it again
    d.stop()


def test_key_export_of_a_damaged_key_says_what_to_do(home):
    _pushed_session(home)
    with open(os.path.join(home, "keys", "device.key"), "wb") as f:
        f.write(b"xyz")
    line = _one_clear_line(run_cli(home, "key", "export"))
    assert "device.key" in line and "damaged" in line and "key import" in line, line


def test_a_lost_device_key_stops_the_start_until_restored_or_reset(home):
    sid, words = _pushed_session(home)
    device = os.path.join(home, "keys", "device.key")
    os.unlink(device)
    for cmd in (["start"], ["daemon"]):
        line = _one_clear_line(run_cli(home, *cmd))
        assert device in line, line
        assert "key import" in line and "--reset-device-key" in line, line
        assert not os.path.exists(device)  # no new identity made behind the user's back
    # the way out: the backup words, no --force needed (there is no key to keep)
    res = run_cli(home, "key", "import", input=words)
    assert res.returncode == 0, res.stderr
    with open(device, "rb") as f:
        assert f.read() == mnemonic_to_seed(words)
    d = DaemonProc(home).start()
    assert d.client().get_session(sid)["name"] == "signed"
    d.stop()
    # the other way out, explicit: a new key
    os.unlink(device)
    res = run_cli(home, "start", "--reset-device-key")
    try:
        assert res.returncode == 0, res.stderr
        with open(device, "rb") as f:
            assert f.read() != mnemonic_to_seed(words)
    finally:
        run_cli(home, "stop")


def test_a_lost_device_key_is_no_matter_when_nothing_was_signed_with_it(home):
    d = DaemonProc(home).start()
    d.client().create_session(name="never pushed", id="local")
    d.stop()
    with (
        contextlib.closing(sqlite3.connect(os.path.join(home, "sessions.db"))) as conn,
        conn,
    ):  # as if its pushes had all failed
        conn.execute("UPDATE sync_state SET head_rev=0, pushed_seq=0, tree=NULL, pending=NULL")
    os.unlink(os.path.join(home, "keys", "device.key"))
    d = DaemonProc(home).start()
    assert d.client().get_session("local")["name"] == "never pushed"
    d.stop()
    assert os.path.getsize(os.path.join(home, "keys", "device.key")) == 32


def test_a_database_of_a_newer_sessiond_is_refused_in_one_line(home):
    DaemonProc(home).start().stop()
    db = os.path.join(home, "sessions.db")
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:  # closed: the change is in the file itself
        conn.execute("UPDATE schema_version SET version=?", (SCHEMA_VERSION + 1,))
    with open(db, "rb") as f:
        before = f.read()
    for cmd in (["start"], ["daemon"]):
        line = _one_clear_line(run_cli(home, *cmd))
        assert db in line and "newer sessiond" in line and "upgrade sessiond" in line, line
    with open(db, "rb") as f:
        assert f.read() == before
    doctor = run_cli(home, "doctor", "--json")
    found = [f for f in cli_json_of(doctor)["findings"] if f["check"] == "database"]
    assert [f["level"] for f in found] == ["problem"], found
    assert "newer" in found[0]["message"] and "upgrade" in found[0]["fix"], found


def cli_json_of(res: subprocess.CompletedProcess) -> dict:
    import json

    assert "Traceback" not in res.stderr, res.stderr
    return json.loads(res.stdout)


def test_a_damaged_database_is_refused_in_one_line(home):
    DaemonProc(home).start().stop()
    db = os.path.join(home, "sessions.db")
    good = db + ".good"
    shutil.copyfile(db, good)
    doctor = cli_json_of(run_cli(home, "doctor", "--json"))
    assert [f["level"] for f in doctor["findings"] if f["check"] == "database"] == ["ok"], doctor
    for damage in ("truncated", "not a database"):
        with open(good, "rb") as f:
            data = f.read()
        with open(db, "wb") as f:
            f.write(data[:3000] if damage == "truncated" else b"these are not the bytes of a database\n" * 50)
        for cmd in (["start"], ["daemon"]):
            line = _one_clear_line(run_cli(home, *cmd))
            assert db in line and "damaged" in line, line
            assert "backup" in line and "doctor" in line, line
        doctor = cli_json_of(run_cli(home, "doctor", "--json"))
        found = [f for f in doctor["findings"] if f["check"] == "database"]
        assert [f["level"] for f in found] == ["problem"], (damage, found)
        assert db in found[0]["message"] and "damaged" in found[0]["message"], found
        assert not doctor["ok"]


@pytest.mark.exec_start  # finds the daemons by their command lines
def test_two_starts_at_once_one_daemon_and_both_say_it_runs(home):
    """Two `sessiond start` racing on one home: one starts the daemon, the other says that one is running, as a
    later `start` does, and exits 0 as it does (the one losing the race exited 1 with "already running (or
    starting)": a login script run twice saw an error for the outcome it asked for); never a traceback, never
    two daemons."""
    os.makedirs(home, mode=0o700)
    for _ in range(3):
        procs = [
            popen_cli(["start", "--home", home], env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for _ in range(2)
        ]
        outs = [tuple(b.decode() for b in p.communicate(timeout=120)) for p in procs]
        try:
            codes = [p.returncode for p in procs]
            for out, err in outs:
                assert "Traceback" not in out + err, err
            running = cli_json(home, "status")
            pid = running["pid"]
            assert _daemon_pids(home) == [pid]  # one daemon, the one answering
            assert codes == [0, 0], (codes, outs)
            said = sorted(out.strip() for out, _ in outs)
            assert said == [f"sessiond is already running (pid {pid}) on {running['socket']}", said[1]], outs
            assert said[1].startswith(f"sessiond started (pid {pid})"), outs
        finally:
            run_cli(home, "stop", check=True)
        assert _daemon_pids(home) == []


def test_a_start_beside_a_daemon_still_starting_waits_for_it_and_leaves_its_output(home, tmp_path):
    """A `start` while another start's daemon is still starting (it holds the home's lock, it does not answer
    yet) waits for that one to answer, then says it runs and exits 0 (it exited 1, "already running (or
    starting)"), as a start beside a running daemon does. It never moves that daemon's daemon.out aside (it
    did, when the file was past its cap: the starting daemon's lines then went on into daemon.out.1): only
    the start that runs the daemon does, once it holds the lock."""
    from sessiond.daemon import logs

    with _start_held_locked(home, tmp_path) as held:
        ino = os.stat(held.out).st_ino
        with open(held.out, "ab") as f:  # the file the starting daemon writes to, now past the cap (sparse)
            f.truncate(logs.MAX_LOG_BYTES + 1)
        second = held.second("--json")
        assert second.poll() is None, second.communicate()  # waiting for the first to answer, not an error
        os.remove(held.flag)
        s_out, s_err = (b.decode() for b in second.communicate(timeout=120))
        f_out, f_err = (b.decode() for b in held.first.communicate(timeout=120))
        assert held.first.returncode == 0 and "sessiond started" in f_out, (f_out, f_err)
        assert second.returncode == 0 and "Traceback" not in s_err, (s_out, s_err)
        running = cli_json(home, "status")
        want = {"started": False, "pid": running["pid"], "socket": running["socket"], "device_id": running["device_id"]}
        assert json.loads(s_out) == want
        assert os.stat(held.out).st_ino == ino and not os.path.exists(held.out + ".1")  # where its daemon writes


def test_a_start_beside_a_daemon_still_starting_past_its_wait_says_so(home, tmp_path):
    """A `start` whose wait for another start's daemon to answer ends (OTHER_START_WAIT, 60 s; a second here
    through the tests' SESSIOND_TEST_OTHER_START_WAIT) with that one still starting: it says so, naming its pid
    and how to see it once it answers, and exits 0 (the outcome asked for is under way, not an error)."""
    wait = {"SESSIOND_TEST_OTHER_START_WAIT": "1"}
    with _start_held_locked(home, tmp_path) as held:
        from sessiond.daemon.listen import lock_holder

        pid = lock_holder(home)  # (the starting daemon's)
        text, as_json = held.second(env=wait), held.second("--json", env=wait)
        t_out, t_err = (b.decode() for b in text.communicate(timeout=60))
        j_out, j_err = (b.decode() for b in as_json.communicate(timeout=60))
        assert held.first.poll() is None  # (still held: still starting)
        assert text.returncode == 0 and "Traceback" not in t_err, (t_out, t_err)
        assert t_out.startswith(f"a sessiond daemon is still starting for {home} (pid {pid})"), t_out
        assert f"`sessiond status --home {home}` shows it once it answers" in t_out, t_out
        assert as_json.returncode == 0 and "Traceback" not in j_err, (j_out, j_err)
        said = json.loads(j_out)
        assert said == {"started": False, "starting": True, "pid": pid}, said


def test_a_start_waiting_for_another_that_fails_says_why(home, tmp_path):
    """A `start` waiting for another start's daemon to answer, which then fails (a damaged database): an error,
    exit non-zero, with that daemon's reason; not its own daemon's "already running" line, nor a wait."""
    DaemonProc(home).start().stop()
    with _start_held_locked(home, tmp_path) as held:
        second = held.second()
        with open(os.path.join(home, "sessions.db"), "wb") as f:
            f.write(b"these are not the bytes of a database\n" * 50)
        os.remove(held.flag)
        s_out, s_err = (b.decode() for b in second.communicate(timeout=120))
        held.first.communicate(timeout=120)
        assert held.first.returncode != 0 and second.returncode == 1, (held.first.returncode, s_out, s_err)
        line = s_err.strip()
        assert len(line.splitlines()) == 1 and "Traceback" not in line, s_err
        assert line.startswith("sessiond: the daemon did not start: "), line
        assert "damaged" in line and "already running" not in line, line


class _Held:
    """A `sessiond start` whose daemon is held just after it took the home's lock (until `flag` is removed)."""

    def __init__(self, home: str, flag: str):
        self.home, self.flag = home, flag
        self.out = os.path.join(home, "logs", "daemon.out")
        self.first = popen_cli(
            ["start", "--home", home],
            env={**os.environ, "SESSIOND_TEST_PAUSE": f"start.locked:{flag}"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.seconds: list = []

    def second(self, *flags: str, env: dict | None = None):
        """Another `start` (`env`: more of its environment), returned once its own daemon has found the home taken."""
        proc = popen_cli(
            ["start", "--home", self.home, *flags],
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.seconds.append(proc)
        wait_for(lambda: _daemon_out_says(self.out, "already running (or starting)"), timeout=60, what="the loser")
        return proc


@contextlib.contextmanager
def _start_held_locked(home: str, tmp_path):
    os.makedirs(home, mode=0o700, exist_ok=True)
    held = _Held(home, str(tmp_path / "locked"))
    try:
        wait_for(lambda: os.path.exists(held.flag) and open(held.flag).read(), timeout=60, what="the lock taken")
        yield held
    finally:
        if os.path.exists(held.flag):
            os.remove(held.flag)
        for p in (held.first, *held.seconds):
            if p.poll() is None:
                p.communicate(timeout=120)
        run_cli(home, "stop")


def _daemon_out_says(path: str, text: str) -> bool:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 4096))
        return text.encode() in f.read()


def _daemon_pids(home: str) -> list[int]:
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit() and _is_daemon_of(int(name), home):
            out.append(int(name))
    return out


def _is_daemon_of(pid: int, home: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    if b"daemon" not in argv or home.encode() not in argv:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except OSError:
        return False


def test_a_home_that_cannot_be_made_is_refused_naming_it_and_no_daemon_said_to_hold_it(tmp_path):
    """A home whose folder cannot be made (a file where a parent folder should be, a name longer than the
    file system takes; for another user, a folder not theirs to write) ended `start` in a traceback
    (mkdir's OSError), and `status` (and `start`, before it tried) said "a daemon holds this home but does
    not answer" of a path where no socket can be, while `stop` said none runs. Now no daemon answers there
    (exit 3, saying how to start one), and `start` refuses in one line naming the folder, why, and what to
    give instead. Nothing is made."""
    (tmp_path / "file").write_text("")
    for home in (str(tmp_path / "file" / "home"), str(tmp_path / ("d" * 300))):
        res = run_cli(home, "start", "--store", f"file://{tmp_path}/store", "--json")
        assert res.returncode not in (0, 3), res
        assert "Traceback" not in res.stderr, res.stderr
        message = json.loads(res.stdout)["error"]["message"]
        assert "cannot make the home folder" in message and "--home" in message, message
        assert "does not answer" not in message, message
        for argv in (["status"], ["ls"]):
            res = run_cli(home, *argv, "--json")
            assert res.returncode == 3, res
            assert json.loads(res.stdout)["error"]["code"] == "daemon_not_running", res.stdout
    assert sorted(os.listdir(tmp_path)) == ["file"]


def test_a_home_file_that_is_not_text_is_named_not_taken_for_standard_input(home, tmp_path):
    """<home>/store-url holding bytes that are not UTF-8 (a torn or stray write) stopped the start with
    "standard input is not UTF-8 text": the CLI's catch-all for a decoding error, which named the wrong
    thing. The start is refused naming the file and what to do; so is store-unmade's and openai-api-key's
    (the OpenAI listener's key, ASCII). And a provider's
    api_key_file that is not text stopped the start the same way, where an unreadable key is said by the
    request that needs it: the daemon starts, and the question is refused naming the key file."""
    run_cli(home, "start", "--store", f"file://{tmp_path}/store", check=True)
    run_cli(home, "stop", check=True)
    with open(os.path.join(home, "config.toml"), "w") as f:
        f.write('openai_listen = "127.0.0.1:0"\n')  # (so that the start reads openai-api-key)
    for name in ("store-url", "store-unmade", "openai-api-key"):
        path = os.path.join(home, name)
        kept = open(path, "rb").read() if os.path.exists(path) else None
        with open(path, "wb") as f:
            f.write(b"\xff\xfe damaged\n")
        res = run_cli(home, "start", "--json")
        assert res.returncode != 0, res
        message = json.loads(res.stdout)["error"]["message"]
        assert path in message and "standard input" not in message, message
        assert "not UTF-8" in message or "not ASCII" in message, message
        if kept is None:
            os.remove(path)
        else:
            with open(path, "wb") as f:
                f.write(kept)
    key = tmp_path / "key"
    key.write_bytes(b"\xff\xfe\x00")
    with open(os.path.join(home, "config.toml"), "w") as f:
        f.write(f'[providers.p]\nbase_url = "http://127.0.0.1:9/v1"\napi_key_file = "{key}"\n')
    d = DaemonProc(home).start()
    try:
        c = d.client()
        sid = c.create_session(model="m")["id"]
        res = run_cli(home, "ask", sid, "hi", "--json")
        assert res.returncode == 1, res
        error = json.loads(res.stdout)["error"]
        assert error["code"] == "provider_key_unreadable" and str(key) in error["message"], error
        assert "not UTF-8" in error["message"], error
    finally:
        d.stop()


def test_a_config_toml_that_is_not_utf8_is_named(home):
    """config.toml holding bytes that are not UTF-8 stopped the start with "standard input is not UTF-8 text"
    (tomllib decodes the file before it parses it): the file is named, as a TOML error names it."""
    os.makedirs(home, mode=0o700)
    path = os.path.join(home, "config.toml")
    with open(path, "wb") as f:
        f.write(b'default_provider = "\xff"\n')
    res = run_cli(home, "daemon", "--json")
    assert res.returncode == 2, res
    message = json.loads(res.stdout)["error"]["message"]
    assert path in message and "not UTF-8" in message and "standard input" not in message, message
