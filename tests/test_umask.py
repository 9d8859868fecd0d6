"""What sessiond writes is private whatever the umask it runs under: with `umask 000` no file or folder it makes
(the home, its folder store, the relay's data folder, an export, and the folders it makes to reach them) is open
to another local user's writes, and none that holds a key, a token or a conversation to their reads
(docs/SECURITY.md, "Another local user")."""

from __future__ import annotations

import json
import os
import stat
import subprocess

from conftest import PY


def _sessiond(*args: str, umask: int, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PY, "-m", "sessiond.cli.main", *args], umask=umask, capture_output=True, text=True, timeout=120, **kw
    )


def _made(top: str) -> list[tuple[str, int]]:
    """(path, mode) of `top` and everything under it."""
    out = [(top, stat.S_IMODE(os.lstat(top).st_mode))]
    for root, dirs, files in os.walk(top):
        for name in dirs + files:
            path = os.path.join(root, name)
            out.append((path, stat.S_IMODE(os.lstat(path).st_mode)))
    return out


def test_under_umask_000_nothing_sessiond_makes_is_open_to_other_users(tmp_path):
    base = tmp_path / "base"
    base.mkdir(mode=0o700)
    home = str(base / "new" / "deep" / "home")  # its parents missing: the daemon makes them
    store = str(base / "elsewhere" / "deep" / "store")  # a folder store whose parents are missing too
    relay = str(base / "relay-parent" / "deep" / "data")
    out = base / "out"
    out.mkdir(mode=0o777)
    os.chmod(out, 0o777)
    try:
        started = _sessiond("start", "--home", home, "--store", f"file://{store}", umask=0)
        assert started.returncode == 0, started.stderr
        sid = _sessiond("new", "--home", home, "--name", "secret", umask=0).stdout.strip()
        assert _sessiond("add", "--home", home, sid, "--role", "user", "hello", umask=0).returncode == 0
        assert _sessiond("share", "--home", home, sid, "--write", umask=0).returncode == 0
        assert _sessiond("sync", "--wait", "--home", home, umask=0).returncode == 0
        exported = _sessiond("export", "--home", home, sid, "-o", str(out / "e.json"), umask=0)
        assert exported.returncode == 0, exported.stderr
    finally:
        _sessiond("stop", "--home", home, umask=0)
    serve = subprocess.Popen(
        [PY, "-m", "sessiond.cli.main", "serve", "--json", "--listen", "127.0.0.1:0", "--data", relay],
        umask=0,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert serve.stdout is not None
        assert "url" in json.loads(serve.stdout.readline())  # serving: its data folder is made
    finally:
        serve.terminate()
        serve.wait(timeout=30)
    writable = []  # by group or others: another user could put or swap what sessiond reads there
    readable = []  # by group or others, in the home, the store, the relay's data or an export
    for top in (str(base / "new"), str(base / "elsewhere"), str(base / "relay-parent"), str(out / "e.json")):
        for path, mode in _made(top):
            if mode & 0o022:
                writable.append((path, oct(mode)))
            inside = path.startswith((home, store, relay)) or path == str(out / "e.json")
            if inside and mode & 0o044:
                readable.append((path, oct(mode)))
    assert os.path.exists(os.path.join(home, "keys", "device.key")) and os.listdir(os.path.join(store, "heads"))
    assert writable == []
    assert readable == []


def test_under_umask_000_service_install_leaves_no_unit_another_user_could_rewrite(tmp_path):
    # a unit file is what the service manager runs as you: a folder of it that another user can write lets
    # them put their own unit (their own command) in its place
    base = tmp_path / "user"
    base.mkdir(mode=0o700)
    home = str(base / "home")
    env = {"HOME": str(base), "XDG_CONFIG_HOME": str(base / "config"), "PATH": str(tmp_path / "no-bin")}
    res = _sessiond("service", "install", "--home", home, "--json", umask=0, env=env)
    assert res.returncode == 0, res.stderr
    files = json.loads(res.stdout)["files"]
    assert files and all(f.startswith(str(base / "config")) for f in files)
    writable = [(p, oct(m)) for p, m in _made(str(base / "config")) if m & 0o022]
    assert writable == []
