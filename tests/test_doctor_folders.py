"""`sessiond doctor` flags a folder on the daemon's own paths that another local user can write: a parent of the
home, the folder store and its parents, the socket's folder, the service unit's folder. sessiond makes none such
any more (test_umask.py), but one an older sessiond made under `umask 000`, or one widened by hand, keeps its
mode: another user could swap the home, the store's heads or the unit (what the service manager runs as you)
for their own. Each is named with its mode and the exact chmod, in the text and in --json."""

from __future__ import annotations

import json
import os
import stat
import subprocess

from conftest import PY, DaemonProc


def _sessiond(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The CLI under `umask 000`, as an older sessiond ran when it made these folders."""
    return subprocess.run(
        [PY, "-m", "sessiond.cli.main", *args],
        umask=0,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def _doctor(home: str, env: dict | None = None) -> tuple[int, dict, str]:
    res = _sessiond("doctor", "--home", home, "--json", "--no-verify", env=env)
    text = _sessiond("doctor", "--home", home, "--no-verify", env=env).stdout
    return res.returncode, json.loads(res.stdout), text


def _writable(report: dict) -> list[dict]:
    return [f for f in report["findings"] if f["check"] == "folders" and f["level"] == "problem"]


def _made_open(path: str) -> None:
    """`path` made as mkdir under umask 000 makes it (its parents too): 0777."""
    old = os.umask(0)
    try:
        os.makedirs(path, 0o777)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o777


def test_a_parent_of_the_home_open_to_others_writes_is_named_with_its_chmod(tmp_path):
    base = tmp_path / "base"
    base.mkdir(mode=0o700)
    parent = str(base / "old" / "deep")
    _made_open(parent)
    home = os.path.join(parent, "home")
    os.mkdir(home, 0o700)
    code, rep, text = _doctor(home)
    assert code == 1 and not rep["ok"]
    named = {f["message"].split()[1]: f for f in _writable(rep)}  # "folder PATH ..."
    assert set(named) == {parent, str(base / "old")}, rep
    for path, f in named.items():
        assert "0777" in f["message"] and "another user" in f["message"]
        assert f["fix"] == f"chmod go-w {path}"
        assert f"fix: chmod go-w {path}" in text
    # fixed as said: no finding left, an ok one instead
    for path in named:
        subprocess.run(["chmod", "go-w", path], check=True)
    code, rep, _ = _doctor(home)
    assert _writable(rep) == []
    assert any(f["check"] == "folders" and f["level"] == "ok" for f in rep["findings"]), rep


def test_a_sticky_folder_like_tmp_is_not_flagged(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)  # others may write, but not rename or remove what is yours (/tmp's mode)
    home = str(shared / "home")
    os.mkdir(home, 0o700)
    _, rep, _ = _doctor(home)
    assert _writable(rep) == [], rep


def test_a_folder_store_open_to_others_writes_is_named_daemon_or_not(tmp_path):
    home = str(tmp_path / "home")
    store_parent = str(tmp_path / "stores")
    _made_open(store_parent)
    store = os.path.join(store_parent, "store")
    d = DaemonProc(home, store=f"file://{store}").start()
    try:
        os.chmod(store, 0o777)  # as an older sessiond under umask 000 left it
        os.chmod(os.path.join(store, "heads"), 0o777)
        code, rep, text = _doctor(home)
        assert rep["daemon"] and code == 1
        flagged = sorted(f["fix"] for f in _writable(rep))
        assert flagged == sorted(f"chmod go-w {p}" for p in (store_parent, store, os.path.join(store, "heads")))
        assert f"fix: chmod go-w {store}" in text
    finally:
        d.stop()
    code, rep, _ = _doctor(home)  # no daemon: the store the home remembers
    assert not rep["daemon"] and code == 1
    assert f"chmod go-w {store}" in [f["fix"] for f in _writable(rep)]


def test_the_service_units_folder_open_to_others_writes_is_named(tmp_path):
    user = tmp_path / "user"
    user.mkdir(mode=0o700)
    home = str(user / "home")
    env = {"HOME": str(user), "XDG_CONFIG_HOME": str(user / "config"), "PATH": str(tmp_path / "no-bin")}
    res = _sessiond("service", "install", "--home", home, "--json", env=env)
    assert res.returncode == 0, res.stderr
    units = os.path.dirname(json.loads(res.stdout)["files"][0])
    _, rep, _ = _doctor(home, env)
    assert _writable(rep) == [], rep
    os.chmod(units, 0o777)  # widened by hand, or made so by an older sessiond under umask 000
    code, rep, text = _doctor(home, env)
    assert code == 1
    (f,) = _writable(rep)
    assert units in f["message"] and "0777" in f["message"] and f["fix"] == f"chmod go-w {units}"
    assert "service" in f["message"]


def test_the_daemon_refuses_a_home_or_key_folder_others_can_write_naming_the_chmod(tmp_path):
    # as ssh refuses a key file others may write: the home and keys/ hold every key and conversation
    home = str(tmp_path / "home")
    started = _sessiond("start", "--home", home)
    assert started.returncode == 0, started.stderr
    assert _sessiond("stop", "--home", home).returncode == 0
    for folder in (os.path.join(home, "keys"), home):
        os.chmod(folder, 0o777)  # as an older sessiond under umask 000 left it, or a chmod by hand
        res = _sessiond("start", "--home", home)
        assert res.returncode != 0, res.stdout
        assert f"chmod 700 {folder}" in res.stderr and "0777" in res.stderr, res.stderr
        os.chmod(folder, 0o700)
    res = _sessiond("start", "--home", home)
    assert res.returncode == 0, res.stderr
    assert _sessiond("stop", "--home", home).returncode == 0
