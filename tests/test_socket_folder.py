"""A long home's socket lives outside the home, in a folder under the runtime directory: that folder and
its parent must be this user's own real folders that no other user can write to. Otherwise another local
user could have made them first and swap the socket for their own: the daemon refuses to start there,
a client refuses to connect there, each saying what to fix, and nothing is changed.
(Another owner cannot be made without root: the modes and symbolic links are tested; the uid
comparison is in api/locate.py, check_socket_folder.)"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading

import pytest

from conftest import run_cli
from sessiond.api.locate import runtime_socket_path


@pytest.fixture
def where():
    """(home, runtime dir, the socket path a daemon of that home would use): a home too long for a
    socket in it, and a runtime dir (XDG_RUNTIME_DIR) the test sets up."""
    base = tempfile.mkdtemp(prefix="sd-sock-")
    home = os.path.join(base, "h" * 60, "o" * 60, "home")
    runtime = os.path.join(base, "rt")
    old = os.environ.get("XDG_RUNTIME_DIR")
    os.environ["XDG_RUNTIME_DIR"] = runtime
    try:
        path = runtime_socket_path(home)
    finally:
        if old is None:
            del os.environ["XDG_RUNTIME_DIR"]
        else:
            os.environ["XDG_RUNTIME_DIR"] = old
    assert path.startswith(runtime + "/")
    yield home, runtime, path
    run_cli(home, "stop", env={"XDG_RUNTIME_DIR": runtime})
    for d in (runtime, os.path.dirname(path)):
        if os.path.isdir(d) and not os.path.islink(d):
            os.chmod(d, 0o700)
    shutil.rmtree(base, ignore_errors=True)


def _refused(home: str, runtime: str, *expected: str) -> None:
    res = run_cli(home, "start", env={"XDG_RUNTIME_DIR": runtime})
    assert res.returncode != 0, res.stdout
    assert "Traceback" not in res.stderr and "refusing to use it for the socket" in res.stderr, res.stderr
    for text in expected:
        assert text in res.stderr, res.stderr


def test_a_runtime_folder_others_can_write_is_refused(where):
    home, runtime, path = where
    os.mkdir(runtime)
    os.chmod(runtime, 0o777)  # as if another user had made it, open to all
    _refused(home, runtime, runtime, "mode 0777", f"chmod 700 {runtime}")
    assert not os.path.exists(os.path.dirname(path))  # nothing made in it
    assert os.stat(runtime).st_mode & 0o777 == 0o777  # nor changed


def test_a_socket_folder_open_to_others_is_refused(where):
    home, runtime, path = where
    os.makedirs(os.path.dirname(path), mode=0o700)
    os.chmod(os.path.dirname(path), 0o755)
    _refused(home, runtime, os.path.dirname(path), "mode 0755")
    assert not os.path.exists(path)


@pytest.mark.parametrize("which", ["socket folder", "its parent"])
def test_a_symbolic_link_is_refused(where, tmp_path, which):
    home, runtime, path = where
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)  # private, ours: only being a link is wrong (its target can be swapped)
    if which == "its parent":
        os.symlink(target, runtime)
        link = runtime
    else:
        os.mkdir(runtime, 0o700)
        os.symlink(target, os.path.dirname(path))
        link = os.path.dirname(path)
    _refused(home, runtime, link, "symbolic link")
    assert os.listdir(target) == []


def test_a_client_does_not_talk_to_a_socket_planted_in_an_open_folder(where):
    """No daemon runs; someone made the socket's folder (open to all) and listens there. `sessiond ls`
    must not send it anything."""
    home, runtime, path = where
    os.makedirs(os.path.dirname(path))
    os.chmod(runtime, 0o777)
    got: list[bytes] = []
    planted = socket.socket(socket.AF_UNIX)
    planted.bind(path)
    planted.listen()
    planted.settimeout(30)

    def serve() -> None:
        try:
            conn, _ = planted.accept()
        except OSError:
            return
        with conn:
            data = conn.recv(65536)
            if not data:  # the test's own wake-up call below
                return
            got.append(data)
            conn.sendall(
                b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n{"sessions": []}'
            )

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        res = run_cli(home, "ls", env={"XDG_RUNTIME_DIR": runtime})
    finally:
        if t.is_alive():  # nothing connected: wake the accept up, sending nothing
            with socket.socket(socket.AF_UNIX) as wake:
                wake.connect(path)
        t.join(10)
        planted.close()
    assert res.returncode != 0 and "refusing to use it for the socket" in res.stderr, (res.stdout, res.stderr)
    assert got == []


@pytest.mark.parametrize("command", ["status", "ls", "start"])
def test_an_app_gets_the_refusal_as_a_client_error(where, monkeypatch, command):
    """The Python clients refuse such a folder with a ClientError (UnsafeSocket), the base an app catches
    for every way a call can fail (it was api/locate.py's HomeError, which sessiond.client does not even
    export); the CLI still says what it is (bad_home), not that a daemon is stuck."""
    from sessiond.client import AsyncClient, Client, ClientError, UnsafeSocket

    home, runtime, path = where
    os.mkdir(runtime)
    os.chmod(runtime, 0o777)
    monkeypatch.setenv("XDG_RUNTIME_DIR", runtime)
    for make in (Client, AsyncClient):
        with pytest.raises(ClientError, match="refusing to use it for the socket") as e:
            make(home)
        assert isinstance(e.value, UnsafeSocket) and f"chmod 700 {runtime}" in str(e.value)
    res = run_cli(home, command, "--json", env={"XDG_RUNTIME_DIR": runtime})
    assert res.returncode == 1, (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr and "stuck" not in res.stderr, res.stderr
    assert '"code": "bad_home"' in res.stdout and "refusing to use it for the socket" in res.stdout, res.stdout
