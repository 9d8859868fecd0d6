"""The daemon's lifetime: `daemon` (run in the foreground), `start`, `stop`, `status`."""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING

from ...client import Client, ClientError, DaemonNotRunning, UnsafeSocket
from ...daemon.home import read_lock, resolve_home
from ...daemon.homelock import holds_lock
from ...storage.redact import scrub_text, shown_store
from ..errors import EXIT_USAGE, CliError, stuck
from ..forkstart import ForkedDaemon, fork_daemon, fork_wanted
from ..inputs import STORE_ARGV_WARNING, hide_store_secrets, read_fd, store_args
from ..options import positive_seconds, seconds
from ..output import emit, for_home
from ..startfail import end_failed, not_started, start_failure, unwritable
from . import Arguments, Commands
from .status import cmd_status

if TYPE_CHECKING:  # (the model needs pydantic, which a command need not import: ~0.1 s of every CLI call's start)
    from ...api.meta import Status

MAX_STORE_BYTES = 32768  # the store URL(s) `start` hands its daemon through a pipe (its buffer holds 64 KiB)
STORE_FILE_HELP = (
    "read the store URL(s) from this file, one a line ('-': standard input), instead of --store: "
    "an invite or password in the URL then stays out of the process list"
)


def register(commands: Commands) -> None:
    p = commands.add("daemon", cmd_daemon, "run the daemon in the foreground")
    p.add_argument(
        "--store",
        action="append",
        help="store URL (default: the one this home used before, else config.toml's, else file://<home>/store); "
        "repeat it for a mirror: every write goes to each store" + STORE_ARGV_WARNING,
    )
    p.add_argument("--store-file", dest="store_file", metavar="PATH", help=STORE_FILE_HELP)
    p.add_argument("--store-fd", dest="store_fd", type=int, help=argparse.SUPPRESS)  # from `start`
    p.add_argument("--store-from", dest="store_from", help=argparse.SUPPRESS)  # `start`'s options that gave it
    p.add_argument(
        "--change-store",
        action="store_true",
        dest="change_store",
        help="confirm moving this home to another store than the one it used before (with the store it uses: "
        "make a folder store of it that went, empty)",
    )
    _reset_device_key_option(p)
    p.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    p = commands.add("start", cmd_start, "start the daemon in the background; returns once it answers")
    p.add_argument(
        "--store",
        action="append",
        help="store URL (default: the one this home used before); repeat it for a mirror of several stores"
        + STORE_ARGV_WARNING,
    )
    p.add_argument("--store-file", dest="store_file", metavar="PATH", help=STORE_FILE_HELP)
    p.add_argument(
        "--change-store",
        action="store_true",
        dest="change_store",
        help="confirm moving this home to another store than the one it used before (with the store it uses: "
        "make a folder store of it that went, empty)",
    )
    _reset_device_key_option(p)
    p = commands.add("stop", cmd_stop, "stop the daemon")
    p.add_argument(
        "--timeout",
        type=seconds,
        default=15.0,
        help="seconds to wait for a clean stop before killing the daemon (default 15; s, m or h may follow: 1m)",
    )
    p = commands.add("status", cmd_status, "socket, pid, version, device id, counts and sync state")
    p.add_argument(
        "--timeout",
        type=positive_seconds,
        default=10.0,
        help="seconds to wait for the daemon's answer before calling it stuck (default 10; s, m or h may follow: 30s)",
    )
    p.add_argument("--sessions", action="store_true", help="list every session's sync state")


def _reset_device_key_option(p: Arguments) -> None:
    p.add_argument(
        "--reset-device-key",
        action="store_true",
        dest="reset_device_key",
        help="if the device key (keys/device.key) is lost, make a new one: this device can then no longer "
        "update the sessions it pushed where they are shared (their followers reject the new key); "
        "restore the old key with `sessiond key import` instead if you can",
    )


def cmd_daemon(args) -> int:
    from ...daemon.home import normalize_store_urls
    from ...daemon.server import run

    store = store_args(args)
    if args.store_fd is not None:  # `start` hands the store over a pipe: never in argv (/proc/PID/cmdline)
        store = [*(store or []), *read_fd(args.store_fd).split("\n")]
        hide_store_secrets(store)
    try:
        if store:  # a store URL the daemon would refuse, refused before the home is made
            normalize_store_urls(store)
        run(
            resolve_home(args.home),
            store,
            ready_fd=args.ready_fd,
            change_store=args.change_store,
            as_json=args.json,
            reset_device_key=args.reset_device_key,
            failed_hung=lambda exc: end_failed(args, exc),
            store_from=args.store_from or store_options(args) or "--store",
        )
    except Exception as exc:
        said = start_failure(args, exc)
        if said is exc:
            raise
        raise said from None
    return 0


def store_options(args) -> str:
    """The options the store URLs were given by, as a refusal of them names them (`--store`, `--store-file`)."""
    return " and ".join(o for o, given in (("--store", args.store), ("--store-file", args.store_file)) if given)


def cmd_start(args) -> int:
    from ...daemon.home import Home, HomeError, normalize_store_urls

    home = Home(resolve_home(args.home))
    wanted = store_args(args)
    try:
        store = normalize_store_urls(wanted) if wanted else None
    except HomeError as exc:
        raise CliError(scrub_text(str(exc)), EXIT_USAGE) from None
    if store and len(store.encode()) > MAX_STORE_BYTES:  # what the pipe to the daemon takes at once
        raise CliError(f"the store URL(s) are {len(store.encode())} bytes; at most {MAX_STORE_BYTES} fit", EXIT_USAGE)
    try:
        return _already_running(args, home.path, Client(home.path, timeout=5).status(), store)
    except DaemonNotRunning:
        pass
    except UnsafeSocket:
        raise  # its folder refused: said as such, not as a daemon that does not answer
    except ClientError as exc:  # a daemon holds the home's socket, but does not answer on it
        raise stuck(home.path, exc) from None
    home.prepare()
    read_fd, write_fd = os.pipe()
    # The daemon runs this package's entry point (cli/main.py) with the command `daemon`; -P: not with the folder
    # `start` ran in first on its sys.path, as `python -m` puts it (a nacl.py or secrets.py there was imported)
    program = [sys.executable, "-P", "-m", "sessiond.cli.main"]
    daemon_args = ["daemon", "--home", home.path, "--ready-fd", str(write_fd)]
    passed = [write_fd]
    if store:
        # The store URL can carry a secret (an invite, a password): it goes to the daemon through a
        # pipe, not argv, which every local user can read (ps, /proc/PID/cmdline). A few hundred bytes
        # fit the pipe's buffer: written and closed before the daemon starts, read by it to EOF.
        store_read, store_write = os.pipe()
        os.write(store_write, store.encode())
        os.close(store_write)
        daemon_args += ["--store-fd", str(store_read), f"--store-from={store_options(args)}"]
        passed.append(store_read)
    if args.change_store:
        daemon_args += ["--change-store"]
    if args.reset_device_key:
        daemon_args += ["--reset-device-key"]
    out_path = os.path.join(home.logs, "daemon.out")
    # (each start appends to it; moved aside past its cap, as sessiond.log is, by the daemon that takes the
    # home's lock: logs.cap_output; never by a start losing to another, which writes into it still)
    try:
        fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    except OSError as exc:
        refused = unwritable(exc, home.path)
        if refused is None:
            raise
        raise refused from None
    proc: subprocess.Popen | ForkedDaemon
    if fork_wanted():  # the test suite's alone: the daemon forked from this command (cli/forkstart.py)
        proc = fork_daemon(daemon_args, fd, passed)
    else:
        proc = subprocess.Popen(
            program + daemon_args,
            stdin=subprocess.DEVNULL,
            stdout=fd,
            stderr=fd,
            pass_fds=tuple(passed),
            start_new_session=True,
            close_fds=True,
        )
    os.close(fd)
    for passed_fd in passed:
        os.close(passed_fd)
    with os.fdopen(read_fd, "rb") as ready:
        line = ready.read(6)  # "ready\n", or EOF if the daemon exited
    if line != b"ready\n":
        proc.wait(timeout=10)
        if _lost_to_another(home.path, proc):  # a start racing this one, or a daemon still starting when it asked
            return _wait_for_other(args, home.path, store, proc, out_path)
        raise not_started(home.path, proc, out_path)
    info = Client(home.path, timeout=10).status()
    # a store failing as the daemon starts (a folder store's folder away): said as `sync --wait` says it
    failing = [
        f"store {st['url']} failing: {for_home(err, home.path)} (sessions are served here meanwhile; their"
        " pushes wait until it is back)"
        for st in info.get("stores") or []
        if st.get("reachable") is False and (err := st.get("last_error"))
    ]
    emit(
        args,
        {
            "started": True,
            "pid": info["pid"],
            "socket": info["socket"],
            "device_id": info["device_id"],
            **({"store_failing": failing} if failing else {}),
        },
        "\n".join([f"sessiond started (pid {info['pid']}) on {info['socket']}", *failing]),
    )
    return 0


def _running_keeps(args, home: str, pid: int, store: str | None, not_wanted: str) -> CliError:
    """The daemon running for `home` was asked (`start` beside it) what only a starting daemon does: another
    store, --change-store, --reset-device-key. It keeps what it has (its `store`): the way to what was asked."""
    from ...storage.redact import shown_url

    again = ["sessiond", "start", "--home", home]
    for url in args.store or ():  # as given, so that it runs as printed (but a URL's credentials: hidden)
        again += ["--store", shown_url(url)]
    if args.store_file:
        again += ["--store-file", args.store_file]
    if not_wanted or args.change_store:  # another store than the home's is a move, which --change-store confirms
        again.append("--change-store")
    if args.reset_device_key:
        again.append("--reset-device-key")
    keeps = (
        f"uses store {store}, {not_wanted}, and keeps it while it runs"
        if not_wanted
        else f"keeps its store ({store})" + (" and its device key" if args.reset_device_key else "") + " while it runs"
    )
    return CliError(
        f"the daemon already running for this home (pid {pid}) {keeps} (a store changes, and a device key "
        f"is reset, only as a daemon starts): stop it first (`sessiond stop --home {shlex.quote(home)}`), then "
        f"`{shlex.join(again)}`"
    )


def _already_running(args, home: str, info: Status, store: str | None) -> int:
    """What a start says beside the daemon running for `home` (`info`: its status): it runs, exit 0; or, asked
    what only a starting daemon does (another store, --change-store, --reset-device-key), why not."""
    from ...sync.mirrorurls import same_stores

    shown = shown_store(store) if store else None  # as status shows it: without its credentials
    running = "\n".join(str(info.get("store") or "").split())
    other = store is not None and not same_stores(running, store)  # a URL's credentials are not another store
    if other or args.change_store or args.reset_device_key:
        raise _running_keeps(args, home, info["pid"], info.get("store"), f"not {shown}" if other else "")
    emit(
        args,
        {"started": False, "pid": info["pid"], "socket": info["socket"], "device_id": info["device_id"]},
        f"sessiond is already running (pid {info['pid']}) on {info['socket']}",
    )
    return 0


def _lost_to_another(home: str, proc: subprocess.Popen | ForkedDaemon) -> bool:
    from ...daemon.homelock import lock_held
    from ...daemon.listen import lock_holder

    return lock_held(home) and lock_holder(home) != proc.pid


OTHER_START_WAIT = 60.0  # seconds a start that lost the home to another start's daemon waits for it to answer
OTHER_START_WAIT_ENV = "SESSIOND_TEST_OTHER_START_WAIT"


def other_start_wait() -> float:
    """OTHER_START_WAIT, or SESSIOND_TEST_OTHER_START_WAIT seconds (for tests: the end of the wait seen within
    seconds). Read when used, as the other test knobs are."""
    text = os.environ.get(OTHER_START_WAIT_ENV, "").strip()
    return float(text) if text else OTHER_START_WAIT


def _wait_for_other(args, home: str, store: str | None, proc: subprocess.Popen | ForkedDaemon, out_path: str) -> int:
    """The daemon this start spawned found another holding the home's lock: a start racing this one won, or a
    daemon was still starting when this one asked. The outcome asked for is that one's: once it answers, said
    as a start beside a running daemon says it (exit 0, not an error for the same outcome); still starting
    after OTHER_START_WAIT, said so (exit 0 too). It gone without answering (its start failed): an error."""
    from ...daemon.homelock import lock_held
    from ...daemon.listen import lock_holder

    deadline = time.monotonic() + other_start_wait()
    pid = lock_holder(home)
    while True:
        try:
            return _already_running(args, home, Client(home, timeout=5).status(), store)
        except UnsafeSocket:
            raise
        except ClientError:  # (no socket yet, or not served yet)
            pass
        if not lock_held(home):
            if pid is not None:  # (its last line is written after it lets the lock go)
                _wait_gone(pid, 5)
            raise not_started(home, proc, out_path)
        if time.monotonic() >= deadline:
            where = shlex.quote(home)
            emit(
                args,
                {"started": False, "starting": True, "pid": pid},
                f"a sessiond daemon is still starting for {home}"
                + (f" (pid {pid})" if pid else "")
                + f"; `sessiond status --home {where}` shows it once it answers",
            )
            return 0
        time.sleep(0.1)  # (polls the other daemon until it answers, or the deadline)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped by its parent) is gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _wait_gone(pid: int, seconds: float) -> bool:
    """Poll until process `pid` has exited, up to a deadline."""
    deadline = time.monotonic() + seconds
    while _alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def cmd_stop(args) -> int:
    # The lock file names the daemon (its pid), whatever answers on the socket: a hung daemon can still
    # be stopped, and the check that the pid holds the lock means no other process is ever signalled.
    home = resolve_home(args.home)
    pid = read_lock(home)[0]
    if pid is None or not holds_lock(pid, home):
        emit(args, {"stopped": False, "running": False}, "no sessiond daemon is running for this home")
        return 0
    os.kill(pid, signal.SIGTERM)
    if _wait_gone(pid, args.timeout) or not holds_lock(pid, home):  # exited, or past its last step
        emit(args, {"stopped": True, "pid": pid, "killed": False}, f"sessiond stopped (pid {pid})")
        return 0
    # Still that daemon (it holds the lock), and hung: end it. Acknowledged writes are committed already.
    os.kill(pid, signal.SIGKILL)
    print(
        f"sessiond: the daemon (pid {pid}) did not stop within {args.timeout:g} s; killed it (SIGKILL)", file=sys.stderr
    )
    if not _wait_gone(pid, 10):
        raise CliError(f"the daemon (pid {pid}) is still running after SIGKILL")
    emit(args, {"stopped": True, "pid": pid, "killed": True}, f"sessiond stopped (pid {pid}, killed)")
    return 0
