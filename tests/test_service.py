"""`sessiond service` (issue 18): the unit files and plist it writes, what it asks systemctl/launchctl,
and socket activation for real: a process that binds the socket and hands it to the daemon as fd 3,
as systemd does, without systemd."""

from __future__ import annotations

import json
import os
import plistlib
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import tempfile

import pytest

from conftest import PY, run_cli
from sessiond.cli import units as service_units
from sessiond.client import Client
from sessiond.daemon import activation
from sessiond.daemon.home import read_lock, socket_path
from sessiond.daemon.homelock import lock_held


@pytest.fixture
def tmp():
    d = tempfile.mkdtemp(prefix="sd-svc-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


# ------------------------------------------------------------------------------ socket activation
# Plays the service manager's part after fork: moves the listening socket to fd 3, sets LISTEN_PID to
# its own pid (which the daemon keeps across exec) or to another one, and execs the daemon.
WRAPPER = r"""
import fcntl, os, sys
sock_fd, ready_fd, pid_mode, home = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
s = fcntl.fcntl(sock_fd, fcntl.F_DUPFD, 10)
r = fcntl.fcntl(ready_fd, fcntl.F_DUPFD, 10)
os.close(sock_fd)
os.close(ready_fd)
os.dup2(s, 3)
os.close(s)
os.environ["LISTEN_PID"] = str(os.getpid() if pid_mode == "self" else os.getppid())
os.environ["LISTEN_FDS"] = "1"
os.environ["LISTEN_FDNAMES"] = "sessiond"
os.execv(sys.executable, [sys.executable, "-m", "sessiond.cli.main", "daemon", "--home", home, "--ready-fd", str(r)])
"""


def bind_unix(path: str, mode: int = 0o600, *, listen: bool = True) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o777 & ~mode)
    try:
        s.bind(path)
    finally:
        os.umask(old)
    if listen:
        s.listen(16)
    return s


def spawn_activated(home: str, sock: socket.socket, pid_mode: str = "self") -> tuple[subprocess.Popen, bool]:
    """The daemon, handed `sock` as fd 3; returns the process and whether it said it is ready."""
    r, w = os.pipe()
    proc = subprocess.Popen(
        [PY, "-c", WRAPPER, str(sock.fileno()), str(w), pid_mode, home],
        pass_fds=(sock.fileno(), w),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    os.close(w)
    with os.fdopen(r, "rb") as f:
        ready = f.read(6) == b"ready\n"
    return proc, ready


def private_home(tmp: str) -> str:
    home = os.path.join(tmp, "home")
    os.mkdir(home, 0o700)
    os.chmod(home, 0o700)
    return home


def finish(proc: subprocess.Popen) -> tuple[int, str]:
    if proc.poll() is None:
        proc.terminate()
    out, err = proc.communicate(timeout=30)
    return proc.returncode, err.decode()


def test_daemon_serves_on_the_socket_it_is_handed_and_stops(tmp):
    home = private_home(tmp)
    path = os.path.join(home, "sessiond.sock")
    sock = bind_unix(path)
    inode = os.stat(path).st_ino
    proc, ready = spawn_activated(home, sock)
    try:
        assert ready, finish(proc)
        c = Client(home, timeout=30)
        info = c.status()
        assert info["pid"] == proc.pid and info["socket"] == path
        sid = c.create_session(name="activated")["id"]
        c.append(sid, "user", "through the handed socket")
        assert read_lock(home) == (proc.pid, path)  # clients find it as before
        # A daemon that had bound a socket of its own would have refused (ours answers there) or
        # replaced the file; the file is still the one this test bound.
        assert os.stat(path).st_ino == inode
        res = run_cli(home, "stop", "--json", check=True)
        assert json.loads(res.stdout)["stopped"] is True
        assert proc.wait(timeout=30) == 0
        # The socket file belongs to the manager, which keeps listening: the daemon left it in place.
        assert os.stat(path).st_ino == inode and stat.S_ISSOCK(os.stat(path).st_mode)
    finally:
        finish(proc)
    # A second activation on the same socket (the next request, under systemd) finds the session.
    proc, ready = spawn_activated(home, sock)
    try:
        assert ready, finish(proc)
        assert [m["content"] for m in Client(home, timeout=30).messages(sid)["messages"]] == [
            "through the handed socket"
        ]
        run_cli(home, "stop", check=True)
        assert proc.wait(timeout=30) == 0
    finally:
        finish(proc)
        sock.close()


def test_socket_for_another_pid_is_ignored(tmp):
    home = private_home(tmp)
    other = os.path.join(tmp, "other.sock")
    sock = bind_unix(other)
    proc, ready = spawn_activated(home, sock, pid_mode="parent")
    try:
        assert ready, finish(proc)
        path = os.path.join(home, "sessiond.sock")
        info = Client(home, timeout=30).status()
        assert info["pid"] == proc.pid and info["socket"] == path  # it bound its own socket
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        run_cli(home, "stop", check=True)
        assert proc.wait(timeout=30) == 0
        assert not os.path.exists(path)  # its own socket, so it removed it
    finally:
        finish(proc)
        sock.close()


def assert_refused(home: str, sock: socket.socket, want: str) -> None:
    """The daemon handed `sock` exits 2 saying `want`, holds no lock, and leaves the socket's file (the
    service manager's, which keeps listening there) as it was; `sock` is closed."""
    name = sock.getsockname()
    inode = os.stat(name).st_ino if isinstance(name, str) else None
    proc, ready = spawn_activated(home, sock)
    try:
        assert not ready
        code, err = finish(proc)
        assert code == 2 and "socket activation" in err and want in err, err
        assert "Traceback" not in err
        assert not lock_held(home)  # refused, and gone
        if inode is not None:
            assert os.stat(name).st_ino == inode and stat.S_ISSOCK(os.stat(name).st_mode)
    finally:
        sock.close()


@pytest.mark.parametrize("case", ["wrong_path", "tcp", "open_mode"])
def test_handed_socket_that_is_not_the_homes_is_refused(tmp, case):
    home = private_home(tmp)
    if case == "wrong_path":
        sock = bind_unix(os.path.join(tmp, "elsewhere.sock"))
        want = "not to " + os.path.join(home, "sessiond.sock")
    elif case == "tcp":
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        want = "not a Unix socket"
    else:
        sock = bind_unix(os.path.join(home, "sessiond.sock"), 0o666)
        want = "open to group or others"
    assert_refused(home, sock, want)


@pytest.mark.parametrize("case", ["not_listening", "not_yours"])
def test_handed_socket_that_is_not_listening_or_not_yours_is_refused(tmp, case):
    """The two checks the cases above do not reach, with real sockets at the home's own path: one
    bound but never listen()ed, and one listening but whose file belongs to another uid (nobody's;
    the test runs as root, so it chowns the file; as anyone else it cannot make such a socket)."""
    home = private_home(tmp)
    path = os.path.join(home, "sessiond.sock")
    if case == "not_listening":
        sock = bind_unix(path, listen=False)
        want = "is not listening"
    else:
        if os.getuid() != 0:
            pytest.skip("making a socket file owned by another uid needs root")
        sock = bind_unix(path)
        os.chown(path, 65534, 65534)
        assert os.stat(path).st_uid == 65534
        want = f"owned by uid 65534, not you (uid {os.getuid()})"
    assert_refused(home, sock, want)


def test_listen_fds_follows_the_protocol():
    env = {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "1", "LISTEN_FDNAMES": "sessiond", "OTHER": "x"}
    assert activation.listen_fds(env) == []
    assert env == {"OTHER": "x"}  # unset after reading, whoever they were for
    assert activation.listen_fds({}) == []
    with pytest.raises(activation.ActivationError, match="not numbers"):
        activation.listen_fds({"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "one"})


# ------------------------------------------------------------------------------ unit file content
def spec_for(home: str, store: str | None = None) -> service_units.Spec:
    return service_units.make_spec(home, store)


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    out: dict[str, dict[str, list[str]]] = {}
    section = None
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = out.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        section.setdefault(key, []).append(value)
    return out


def test_units_carry_home_store_socket_and_modes(tmp):
    home = os.path.join(tmp, "my home")
    store = os.path.join(tmp, "the store")
    spec = spec_for(home, store)
    units = service_units.systemd_units(spec)
    assert set(units) == {f"{spec.name}.socket", f"{spec.name}.service"}
    sock = parse_unit(units[f"{spec.name}.socket"])
    assert sock["Socket"]["ListenStream"] == [os.path.join(home, "sessiond.sock")] == [socket_path(home)]
    assert sock["Socket"]["SocketMode"] == ["0600"] and sock["Socket"]["DirectoryMode"] == ["0700"]
    assert sock["Socket"]["Service"] == [f"{spec.name}.service"]
    assert sock["Install"]["WantedBy"] == ["sockets.target"]
    svc = parse_unit(units[f"{spec.name}.service"])
    argv = shlex.split(svc["Service"]["ExecStart"][0])  # systemd's quoting, for these characters, is the shell's
    assert argv == [
        os.path.abspath(sys.executable),
        "-P",  # (the folder it runs in, a user unit's the user's home, not first on its sys.path)
        "-m",
        "sessiond.cli.main",
        "daemon",
        "--home",
        home,
    ]  # no store: the daemon syncs with the home's, which `service install --store` records
    assert spec.store == "file://" + store
    assert f'"{home}"' in svc["Service"]["ExecStart"][0]
    assert svc["Service"]["Restart"] == ["on-failure"]
    assert svc["Unit"]["Requires"] == [f"{spec.name}.socket"]
    # without --store the same unit: the daemon uses the one the home remembers
    assert service_units.systemd_units(spec_for(home)) == units


def test_exec_quoting_keeps_specifiers_and_variables_literal():
    assert service_units.exec_quote("/a b/c") == '"/a b/c"'
    assert service_units.exec_quote('say "hi"\\') == '"say \\"hi\\"\\\\"'
    assert service_units.exec_quote("100%$HOME") == "100%%$$HOME"
    assert service_units.exec_quote("plain") == "plain"
    units = service_units.systemd_units(spec_for("/tmp/odd %h $USER home"))
    name = service_units.unit_name("/tmp/odd %h $USER home")
    svc = parse_unit(units[f"{name}.service"])["Service"]["ExecStart"][0]
    assert '--home "/tmp/odd %%h $$USER home"' in svc  # $ expands only in command lines
    assert parse_unit(units[f"{name}.socket"])["Socket"]["ListenStream"] == ["/tmp/odd %%h $USER home/sessiond.sock"]


def test_store_with_credentials_is_refused(tmp):
    with pytest.raises(service_units.ServiceError, match="credentials"):
        spec_for(os.path.join(tmp, "h"), "s5+http://INVITECODE@relay.example:5050")


def test_one_name_per_home(tmp, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", os.path.join(tmp, "data"))
    monkeypatch.delenv("SESSIOND_HOME", raising=False)
    assert service_units.unit_name(os.path.join(tmp, "data", "sessiond")) == "sessiond"
    a, b = service_units.unit_name(os.path.join(tmp, "a")), service_units.unit_name(os.path.join(tmp, "b"))
    assert a != b and a.startswith("sessiond-") and len(a) == len("sessiond-") + 8
    assert service_units.unit_name(os.path.join(tmp, "a")) == a


def test_long_home_unit_uses_the_runtime_socket_clients_find(tmp, monkeypatch):
    runtime = os.path.join(tmp, "rt")
    os.mkdir(runtime, 0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", runtime)
    home = os.path.join(tmp, "x" * 90, "home")
    spec = spec_for(home)
    assert spec.socket.startswith(runtime + "/") and spec.env == {"XDG_RUNTIME_DIR": runtime}
    svc = parse_unit(service_units.systemd_units(spec)[f"{spec.name}.service"])
    assert svc["Service"]["Environment"] == [f"XDG_RUNTIME_DIR={runtime}"]


def test_launchd_plist_content(tmp):
    home = os.path.join(tmp, "my home")
    spec = spec_for(home, os.path.join(tmp, "store"))
    data = plistlib.loads(service_units.launchd_plist(spec))
    assert data["Label"] == spec.label and spec.name in spec.label
    assert data["ProgramArguments"] == spec.argv and data["ProgramArguments"][6] == home
    assert data["RunAtLoad"] is True and data["KeepAlive"] == {"SuccessfulExit": False}
    assert data["Umask"] == 0o077
    assert data["StandardErrorPath"] == os.path.join(home, "logs", "daemon.out")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verifies_the_units(tmp):
    # the executable's path has a space too: systemd must read the quoted path as one argument
    bindir = os.path.join(tmp, "py bin")
    os.mkdir(bindir)
    os.symlink(sys.executable, os.path.join(bindir, "python"))
    spec = spec_for(os.path.join(tmp, "my home"), os.path.join(tmp, "store"))
    spec.argv[0] = os.path.join(bindir, "python")
    units_dir = os.path.join(tmp, "units")
    os.mkdir(units_dir)
    for name, text in service_units.systemd_units(spec).items():
        with open(os.path.join(units_dir, name), "w") as f:
            f.write(text)
    runtime = os.path.join(tmp, "rt")
    os.mkdir(runtime, 0o700)
    res = subprocess.run(
        ["systemd-analyze", "--user", "verify", f"{spec.name}.socket", f"{spec.name}.service"],
        cwd=units_dir,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "XDG_RUNTIME_DIR": runtime},
    )
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    for bad in ("ignoring", "Unknown", "not executable", "Failed", "bad unit"):
        assert bad not in out, out


# ------------------------------------------------------------------------------ the CLI
FAKE = """#!/bin/sh
printf '%s\\n' "$*" >> "{log}"
case "$*" in
  *is-enabled*) echo enabled ;;
  *is-active*) echo active ;;
esac
exit 0
"""


def cli_env(tmp: str, fake: str | None = None) -> tuple[dict, str]:
    """A fake user: HOME and XDG_CONFIG_HOME in tmp, and a PATH with nothing but `fake` (a script
    standing for systemctl/launchctl that records its arguments), or no manager at all."""
    bindir = os.path.join(tmp, "bin")
    os.makedirs(bindir, exist_ok=True)
    log = os.path.join(tmp, "calls.log")
    if fake:
        path = os.path.join(bindir, fake)
        with open(path, "w") as f:
            f.write(FAKE.format(log=log))
        os.chmod(path, 0o755)
    env = {"HOME": os.path.join(tmp, "user"), "XDG_CONFIG_HOME": os.path.join(tmp, "config dir"), "PATH": bindir}
    return env, log


def calls(log: str) -> list[str]:
    try:
        with open(log) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def test_install_without_systemctl_writes_files_and_says_what_to_run(tmp):
    env, log = cli_env(tmp)
    home = os.path.join(tmp, "my home")
    res = run_cli(home, "service", "install", "--store", os.path.join(tmp, "st"), "--json", env=env)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    unit_dir = os.path.join(tmp, "config dir", "systemd", "user")
    name = service_units.unit_name(home)
    assert out["enabled"] is False and "systemctl is not installed" in out["reason"]
    assert out["todo"] == ["systemctl --user daemon-reload", f"systemctl --user enable --now {name}.socket"]
    assert sorted(out["files"]) == sorted(os.path.join(unit_dir, f"{name}.{k}") for k in ("socket", "service"))
    for path in out["files"]:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    text = open(os.path.join(unit_dir, f"{name}.service")).read()
    assert f'--home "{home}"' in text and "--store" not in text  # the home's store, recorded there:
    assert open(os.path.join(home, "store-url")).read() == f"file://{tmp}/st\n" and out["store"] == f"file://{tmp}/st"
    assert stat.S_IMODE(os.stat(home).st_mode) == 0o700  # the home exists, private, before a manager binds in it
    human = run_cli(home, "service", "install", env=env)
    assert "to enable it, run:" in human.stdout and f"systemctl --user enable --now {name}.socket" in human.stdout
    st = json.loads(run_cli(home, "service", "status", "--json", env=env, check=True).stdout)
    assert st["installed"] is True and st["enabled"] is False and st["source"] == "files"
    assert st["daemon_running"] is False
    res = run_cli(home, "service", "uninstall", "--json", env=env, check=True)
    assert sorted(json.loads(res.stdout)["removed"]) == sorted(out["files"])
    assert os.listdir(unit_dir) == []
    st = json.loads(run_cli(home, "service", "status", "--json", env=env, check=True).stdout)
    assert st["installed"] is False
    res = run_cli(home, "service", "uninstall", env=env, check=True)
    assert "no service installed" in res.stdout


def test_install_with_systemctl_enables_the_socket_and_uninstall_disables(tmp):
    env, log = cli_env(tmp, "systemctl")
    home = os.path.join(tmp, "home")
    name = service_units.unit_name(home)
    out = json.loads(run_cli(home, "service", "install", "--json", env=env, check=True).stdout)
    assert out["enabled"] is True and out["name"] == name
    assert calls(log) == ["--user daemon-reload", f"--user enable --now {name}.socket"]
    st = json.loads(run_cli(home, "service", "status", "--json", env=env, check=True).stdout)
    assert st["source"] == "systemctl" and st["enabled"] is True and st["active"] is True
    assert f"--user is-enabled {name}.socket" in calls(log)
    open(log, "w").close()
    out = json.loads(run_cli(home, "service", "uninstall", "--json", env=env, check=True).stdout)
    assert out["stopped"] is True and len(out["removed"]) == 2
    assert calls(log) == [f"--user disable --now {name}.socket {name}.service", "--user daemon-reload"]


def test_install_refuses_a_store_with_credentials_and_writes_nothing(tmp):
    env, log = cli_env(tmp, "systemctl")
    home = os.path.join(tmp, "home")
    res = run_cli(home, "service", "install", "--store", "s5+http://SECRETINVITE@relay.example:5050", env=env)
    assert res.returncode == 2 and "credentials" in res.stderr and "Traceback" not in res.stderr
    assert calls(log) == [] and not os.path.exists(os.path.join(tmp, "config dir"))
    # the way out it gives keeps the URL out of argv too (it said "start the daemon once with --store")
    assert "--store-file" in res.stderr and "with --store)" not in res.stderr, res.stderr


def test_install_refuses_while_a_daemon_started_by_hand_runs(tmp, daemon):
    env, log = cli_env(tmp)
    res = run_cli(daemon.home, "service", "install", env=env)
    assert res.returncode == 1 and "started by hand" in res.stderr and "sessiond stop" in res.stderr
    assert not os.path.exists(os.path.join(tmp, "config dir"))


def test_launchd_install_and_uninstall(tmp):
    env, log = cli_env(tmp, "launchctl")
    home = os.path.join(tmp, "home")
    out = json.loads(run_cli(home, "service", "install", "--manager", "launchd", "--json", env=env, check=True).stdout)
    label = "org.sessiond." + service_units.unit_name(home)
    plist = os.path.join(tmp, "user", "Library", "LaunchAgents", label + ".plist")
    assert out["files"] == [plist] and out["enabled"] is True
    with open(plist, "rb") as f:
        assert plistlib.load(f)["ProgramArguments"][-2:] == ["--home", home]
    uid = os.getuid()
    assert calls(log) == [f"bootout gui/{uid}/{label}", f"bootstrap gui/{uid} {plist}"]
    open(log, "w").close()
    out = json.loads(
        run_cli(home, "service", "uninstall", "--manager", "launchd", "--json", env=env, check=True).stdout
    )
    assert out["removed"] == [plist] and calls(log) == [f"bootout gui/{uid}/{label}"]


def test_install_for_a_long_home_points_clients_at_the_units_socket(tmp):
    env, log = cli_env(tmp)
    runtime = os.path.join(tmp, "rt")
    os.mkdir(runtime, 0o700)
    env["XDG_RUNTIME_DIR"] = runtime
    home = os.path.join(tmp, "y" * 100, "home")
    out = json.loads(run_cli(home, "service", "install", "--json", env=env, check=True).stdout)
    name = service_units.unit_name(home)
    with open(os.path.join(tmp, "config dir", "systemd", "user", f"{name}.socket")) as f:
        listen = parse_unit(f.read())["Socket"]["ListenStream"][0]
    assert listen == out["socket"] and listen.startswith(runtime + "/")
    # before the service's daemon ever ran, a client (whatever its environment) looks there
    assert socket_path(home) == listen and read_lock(home) == (None, listen)
    assert stat.S_IMODE(os.stat(os.path.dirname(listen)).st_mode) == 0o700


def _unit_store(unit_text: str, home: str) -> str:
    """The store of the daemon started as the unit's ExecStart says (its arguments after the interpreter's,
    with a ready fd), as its status gives it; the daemon is stopped before this returns."""
    from conftest import popen_cli

    argv = shlex.split(parse_unit(unit_text)["Service"]["ExecStart"][0])
    assert argv[:4] == [os.path.abspath(sys.executable), "-P", "-m", "sessiond.cli.main"], argv
    r, w = os.pipe()
    proc = popen_cli(
        [*argv[4:], "--ready-fd", str(w)],
        env=dict(os.environ),
        pass_fds=(w,),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    os.close(w)
    try:
        with os.fdopen(r, "rb") as f:
            assert f.read(6) == b"ready\n", proc.communicate(timeout=10)
        return Client(home).status()["store"]
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_the_service_syncs_with_the_homes_store_which_start_change_store_moves(tmp):
    """`service install --store A` wrote `--store A` into the unit, while `start --store B --change-store`
    moves the home (<home>/store-url) to B: the service's daemon, started with --store A on a home that
    syncs with B, was refused at every start (and a home already on B got a unit it could never start).
    The unit now names no store: install records its --store as the home's (as a first start does),
    refuses one that would move a home already syncing elsewhere (that move is `start --change-store`'s,
    which pushes the sessions), and the service's daemon follows the home wherever it moves."""
    env, _ = cli_env(tmp)
    home = os.path.join(tmp, "home")
    a, b = os.path.join(tmp, "store a"), os.path.join(tmp, "store b")
    out = json.loads(run_cli(home, "service", "install", "--store", a, "--json", env=env, check=True).stdout)
    unit = open(next(p for p in out["files"] if p.endswith(".service"))).read()
    assert "--store" not in unit and out["store"] == "file://" + a, (unit, out)
    assert open(os.path.join(home, "store-url")).read().strip() == "file://" + a
    assert _unit_store(unit, home) == "file://" + a  # the service's daemon: the home's store
    run_cli(home, "start", "--store", b, "--change-store", check=True)  # the home moves to B
    run_cli(home, "stop", check=True)
    assert _unit_store(unit, home) == "file://" + b  # the same unit, unchanged: it follows the home
    # installing again with the store the home has left is refused, and writes nothing: that move is a
    # `start --change-store`'s
    res = run_cli(home, "service", "install", "--store", a, env=env)
    assert res.returncode == 1 and "--change-store" in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert open(os.path.join(home, "store-url")).read().strip() == "file://" + b
    assert open(next(p for p in out["files"] if p.endswith(".service"))).read() == unit
    # and with the one it has, or none, it installs
    run_cli(home, "service", "install", "--store", b, env=env, check=True)
    run_cli(home, "service", "install", env=env, check=True)
    assert open(os.path.join(home, "store-url")).read().strip() == "file://" + b


def test_install_refuses_a_store_config_toml_contradicts_and_records_nothing(tmp):
    """The service's daemon reads config.toml's store when the home remembers none: an install --store of
    another one would have the daemon refuse at its second start; it is refused at install instead."""
    env, _ = cli_env(tmp)
    home = private_home(tmp)
    with open(os.path.join(home, "config.toml"), "w") as f:
        f.write(f'store = "file://{tmp}/configured"\n')
    res = run_cli(home, "service", "install", "--store", os.path.join(tmp, "other"), env=env)
    assert res.returncode == 1 and "config.toml sets the store" in res.stderr, res.stderr
    assert not os.path.exists(os.path.join(home, "store-url")) and not os.path.exists(os.path.join(tmp, "config dir"))
    out = json.loads(run_cli(home, "service", "install", "--json", env=env, check=True).stdout)
    assert out["store"] == f"file://{tmp}/configured"


def _older_unit(tmp: str, home: str, store: str, manager: str = "systemd") -> str:
    """The daemon's unit (or plist) as `service install --store STORE` wrote it before units named no store
    (`--store STORE` last on the daemon's command line), in the fake user's folders: its path."""
    spec = spec_for(home)
    spec.argv += ["--store", store]
    if manager == "launchd":
        path = os.path.join(tmp, "user", "Library", "LaunchAgents", spec.label + ".plist")
        data = service_units.launchd_plist(spec)
    else:
        path = os.path.join(tmp, "config dir", "systemd", "user", f"{spec.name}.service")
        data = service_units.systemd_units(spec)[f"{spec.name}.service"].encode()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return path


def _remember(home: str, store: str) -> None:
    """`store` as the home's (<home>/store-url, 0600 as the daemon writes it)."""
    with open(os.open(os.path.join(home, "store-url"), os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
        f.write(store + "\n")


def _service_finding(home: str, env: dict, *, daemon: bool = False) -> tuple[int, dict | None]:
    res = run_cli(home, "doctor", "--no-verify", "--json", env=env)
    report = json.loads(res.stdout)
    assert report["daemon"] is daemon, report
    found = [f for f in report["findings"] if f["check"] == "service"]
    assert len(found) <= 1, found
    return res.returncode, (found[0] if found else None)


def test_doctor_names_a_unit_left_on_the_store_the_home_moved_from(tmp):
    """A unit written by an older `service install --store A` keeps `--store A` on the daemon's command line;
    once the home moves to B (`start --change-store`) the service's daemon is refused at every start, and
    nothing said why until it was asked to start. `doctor` (and `service status`) now name that unit and the
    store it names, with the fix: install again, which writes a unit naming no store."""
    env, _ = cli_env(tmp)
    home = private_home(tmp)
    a, b = f"file://{tmp}/store a", f"file://{tmp}/store b"
    _remember(home, b)  # the home, moved to B
    path = _older_unit(tmp, home, a)
    code, found = _service_finding(home, env)
    assert code == 1 and found is not None and found["level"] == "problem", found
    assert path in found["message"] and "store a" in found["message"] and "store b" in found["message"], found
    assert found["fix"] == f"sessiond service install --home {home}"
    human = run_cli(home, "doctor", "--no-verify", env=env)
    assert "PROBLEM" in human.stdout and "fix: sessiond service install" in human.stdout, human.stdout
    st = json.loads(run_cli(home, "service", "status", "--json", env=env, check=True).stdout)
    assert st["unit_store"] == found, st
    assert "sessiond service install" in run_cli(home, "service", "status", env=env, check=True).stdout
    # the fix it names: the unit rewritten, naming no store; nothing left to say
    run_cli(home, "service", "install", env=env, check=True)
    assert "--store" not in open(path).read()
    assert _service_finding(home, env)[1] is None
    assert json.loads(run_cli(home, "service", "status", "--json", env=env, check=True).stdout)["unit_store"] is None


def test_doctor_names_a_unit_that_runs_the_daemon_without_python_P(tmp):
    """0.39.0's units run `python -P` (the folder the daemon runs in, a user unit's: the user's home, not first on
    its sys.path, where a ~/json.py would be imported inside the daemon); a unit an older `service install` wrote
    lacks it and stays so across the upgrade: doctor said nothing of it, the hardening reached no installed
    service. It is a warning now, with the fix: install again (which writes -P: the other tests' doctor then
    finds nothing)."""
    env, _ = cli_env(tmp)
    home = private_home(tmp)
    spec = spec_for(home)
    spec.argv.remove("-P")
    path = os.path.join(tmp, "config dir", "systemd", "user", f"{spec.name}.service")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(service_units.systemd_units(spec)[f"{spec.name}.service"])
    code, found = _service_finding(home, env)
    assert code == 0 and found is not None and found["level"] == "warn", found
    assert path in found["message"] and "-P" in found["message"], found
    assert found["fix"] == f"sessiond service install --home {home}"


def test_doctor_with_a_daemon_running_names_the_unit_too(tmp, make_daemon):
    env, _ = cli_env(tmp)
    d = make_daemon(f"file://{tmp}/now").start()
    _older_unit(tmp, d.home, f"file://{tmp}/before")
    code, found = _service_finding(d.home, {**env, "PATH": os.environ["PATH"]}, daemon=True)
    assert code == 1 and found["level"] == "problem" and "before" in found["message"], found


@pytest.mark.parametrize("manager", ["systemd", "launchd"])
def test_a_unit_naming_the_homes_own_store_is_a_warning(tmp, manager):
    """Not broken yet, but the next move of the home's store would leave the service behind."""
    env, _ = cli_env(tmp)
    home = private_home(tmp)
    store = f"file://{tmp}/same"
    _remember(home, store)
    _older_unit(tmp, home, os.path.join(tmp, "same"), manager)  # (a path: the daemon reads it as file://)
    code, found = _service_finding(home, env)
    assert code == 0 and found is not None and found["level"] == "warn", found
    assert "--change-store" in found["message"] and found["fix"] == f"sessiond service install --home {home}"
