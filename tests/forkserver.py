"""Daemons and CLI calls for the suite, started from a process that has already imported sessiond.

Every `python -m sessiond.cli.main ...` the suite starts spends most of its CPU importing (aiohttp, pydantic,
sessiond: ~0.65 s a daemon, ~0.15 s a CLI call on the 2-core CI machine), and the suite starts ~580 daemons
and ~800 CLI calls: close to half of its CPU. A zygote (this file run as a program) imports all that once,
then forks a child per request. The child is a real, separate process, as a started one is: its own pid,
stdin/stdout/stderr and the descriptors asked for at the numbers asked for, its own working directory and
environment, signals (SIGTERM, SIGKILL) sent to it directly, its exit status reported as Popen reports it.
What it does not have is its own command line: /proc/PID/cmdline reads the zygote's. It goes when the zygote
does (PR_SET_PDEATHSIG), and the zygote when the suite's process does (its stdin at its end): a run killed
leaves neither behind. The tests that read
command lines (that no secret is in them), and any request whose environment differs from the zygote's in
a variable read at import time (SSL_CERT_FILE, PYTHON*...), start the program for real: `spawn` decides.
SESSIOND_TEST_EXEC=1 starts everything for real (make test-long does).

Protocol, one Unix-socket connection per child: the request (JSON, with the descriptors as SCM_RIGHTS), then
the zygote answers the child's pid, and later its wait status, each a line of text.
"""

from __future__ import annotations

import array
import ctypes
import gc
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

# What a child may be given in its environment beyond the zygote's own: the variables sessiond reads
# when it runs (not when it is imported), and pytest's own. Any other difference starts the program for real.
RUNTIME_VARS = ("SESSIOND_", "XDG_", "HOME", "COLUMNS", "LINES", "TERM", "NO_COLOR", "PYTEST_")

MAIN = ["-m", "sessiond.cli.main"]


# ----------------------------------------------------------------------------------------------- the zygote


def _recv_request(conn: socket.socket) -> tuple[dict, list[int]]:
    fds = array.array("i")
    data = b""
    while not data.endswith(b"\n"):
        msg, anc, _flags, _addr = conn.recvmsg(1 << 16, socket.CMSG_SPACE(64 * fds.itemsize))
        if not msg:
            raise EOFError
        data += msg
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[: len(payload) - (len(payload) % fds.itemsize)])
    return json.loads(data), list(fds)


def _become(req: dict, fds: list[int]) -> None:
    """In the forked child: take the descriptors, directory, environment and arguments asked for."""
    if req.get("new_session"):
        os.setsid()
    # move what was received out of the way of the numbers it goes to, then put each at its number
    high = [_dup_above(fd, 256) for fd in fds]
    for fd in fds:
        os.close(fd)
    for target, fd in zip(req["targets"], high, strict=True):
        os.dup2(fd, target, inheritable=True)
        os.close(fd)
    os.chdir(req["cwd"])
    os.environ.clear()
    os.environ.update(req["env"])
    sys.argv = [req["argv0"], *req["args"]]
    # the command, as `python -m sessiond.cli.main` is: cli/__init__.py told so at its import, made in the zygote,
    # a program of its own (it keeps Python's Ctrl-C), so a child's late press was not the command's (settled())
    import sessiond.cli

    sessiond.cli.AS_COMMAND = True
    # Python's own start-up choices for its standard streams (the zygote's were made the same way), anew
    # for these descriptors: stdout line-buffered on a terminal only, stderr always
    import io

    def stream(fd: int, mode: str, old, line: bool):
        return io.TextIOWrapper(
            open(fd, mode, closefd=False), encoding=old.encoding, errors=old.errors, line_buffering=line
        )

    sys.stdin = stream(0, "rb", sys.stdin, False)
    sys.stdout = stream(1, "wb", sys.stdout, os.isatty(1))
    sys.stderr = stream(2, "wb", sys.stderr, True)
    import random

    random.seed()  # not the zygote's sequence, the same in every child


def _dup_above(fd: int, low: int) -> int:
    import fcntl

    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, low)


def _die_with(zygote: int, prctl) -> None:
    """In a forked child: be killed when the zygote goes (Linux's PR_SET_PDEATHSIG; the zygote is one thread,
    so it fires when the process goes). The zygote leaves when the suite's process does (its stdin at its
    end), and a child of a run killed (kill -9 of pytest or of an xdist worker) outlived it: a daemon whose
    fixture was never torn down ran on for good, its command line the zygote's (`tests/forkserver.py`).
    A child whose zygote went already, before this was set, leaves at once."""
    pr_set_pdeathsig = 1
    if prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0) != 0:
        os.write(2, b"forkserver: PR_SET_PDEATHSIG failed\n")
        os._exit(70)
    if os.getppid() != zygote:
        os._exit(70)


def serve(path: str) -> dict | None:
    """The zygote's loop: returns (in a forked child only) the request the child is to run."""
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(64)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, None)
    sel.register(sys.stdin, selectors.EVENT_READ, "parent")  # closed when the suite's process ends
    children: dict[int, tuple[socket.socket, int]] = {}  # pidfd -> (connection, pid)
    # tests/tools/cpu_per_file.py: each child's CPU at its end, with its arguments, appended to this file
    log_rusage = os.environ.get("FORKSERVER_RUSAGE_LOG")
    req_args: dict[int, list[str]] = {}  # pid -> its arguments (log_rusage only)
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # (found once: each child calls it, _die_with)
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            if key.data == "parent":
                if not os.read(0, 64):
                    os._exit(0)
                continue
            if key.data is None:
                conn, _ = listener.accept()
                conn.settimeout(10)  # one request that never comes must not stop the zygote's other children
                try:
                    req, fds = _recv_request(conn)
                except (EOFError, OSError, ValueError):
                    conn.close()
                    continue
                zygote = os.getpid()
                pid = os.fork()
                if pid == 0:
                    _die_with(zygote, prctl)
                    sel.close()
                    listener.close()
                    for c, _pid in children.values():
                        c.close()
                    for pidfd in children:
                        os.close(pidfd)
                    conn.close()
                    _become(req, fds)
                    return req
                for fd in fds:
                    os.close(fd)
                pidfd = os.pidfd_open(pid)
                children[pidfd] = (conn, pid)
                if log_rusage:
                    req_args[pid] = req["args"]
                sel.register(pidfd, selectors.EVENT_READ, "child")
                conn.settimeout(None)
                conn.sendall(f"{pid}\n".encode())
            else:
                pidfd = key.fd
                conn, pid = children.pop(pidfd)
                sel.unregister(pidfd)
                os.close(pidfd)
                _, status, usage = os.wait4(pid, 0)
                if log_rusage:
                    _log_rusage(log_rusage, req_args.pop(pid, []), usage)
                try:
                    conn.sendall(f"{status}\n".encode())
                except OSError:
                    pass
                conn.close()


def _log_rusage(path: str, args: list[str], usage) -> None:
    """One line of JSON: a child's arguments (the command's first two words) and its CPU."""
    line = json.dumps({"args": args[:2], "user": usage.ru_utime, "sys": usage.ru_stime})
    with open(path, "a") as f:
        f.write(line + "\n")


def zygote_main(path: str) -> None:
    gc.disable()  # until the imports are frozen (below)
    # everything a daemon and the CLI's commands import, imported once
    import importlib
    import pkgutil

    # every module of sessiond's (the commands and the daemon import theirs when they run); the package's
    # folders are sub-packages of a namespace (an editable install maps them), walked one by one
    for top in ("storage", "sync", "stores", "relay", "api", "client", "daemon", "cli"):
        package = importlib.import_module(f"sessiond.{top}")
        for info in pkgutil.walk_packages(package.__path__, f"sessiond.{top}."):
            importlib.import_module(info.name)
    assert threading.active_count() == 1, "the zygote must not fork with threads running"
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    gc.freeze()  # the imported modules' objects: a child's collections neither scan nor copy their pages
    req = serve(path)
    if req is not None:  # the child
        os._exit(_run_child(req["args"]))


def _run_child(args: list[str]) -> int:
    """The child's program, as `python -m sessiond.cli.main` runs it, to its exit status. It leaves without
    the interpreter's finalization (os._exit): tearing down the modules it shares with the zygote would write
    to (and so copy) most of their pages, ~0.1-0.2 s of a child's time. What finalization would do that
    matters is done here: non-daemon threads waited for, logs and the standard streams flushed."""
    import logging
    import traceback

    gc.enable()
    try:
        from sessiond.cli.main import main

        code: object = main(args)
    except SystemExit as exc:
        code = exc.code
    except KeyboardInterrupt:  # as Python leaves on one: killed by SIGINT
        traceback.print_exc()
        sys.stderr.flush()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
        code = 130
    except BaseException:
        traceback.print_exc()
        code = 1
    for t in threading.enumerate():
        if t is not threading.main_thread() and not t.daemon:
            t.join()
    logging.shutdown()
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code & 0xFF
    else:  # sys.exit("message"): printed, status 1
        print(code, file=sys.stderr)
        status = 1
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except (OSError, ValueError):
            pass
    return status


# ---------------------------------------------------------------------------------------------- the suite


class Forked:
    """What the suite uses of subprocess.Popen, for a child of the zygote."""

    def __init__(self, args: list[str], conn: socket.socket, pid: int, stdin, stdout, stderr):
        self.args = args
        self.pid = pid
        self.returncode: int | None = None
        self.stdin, self.stdout, self.stderr = stdin, stdout, stderr
        self._conn = conn
        self._buf = b""

    def _status(self, timeout: float | None) -> int | None:
        if self.returncode is not None:
            return self.returncode
        self._conn.settimeout(timeout)
        try:
            while not self._buf.endswith(b"\n"):
                chunk = self._conn.recv(64)
                if not chunk:
                    raise RuntimeError("the fork server went away")
                self._buf += chunk
        except (TimeoutError, BlockingIOError):
            return None
        self._conn.close()
        self.returncode = os.waitstatus_to_exitcode(int(self._buf))
        return self.returncode

    def poll(self) -> int | None:
        return self._status(0)

    def wait(self, timeout: float | None = None) -> int:
        code = self._status(timeout)
        if code is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        return code

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def communicate(self, input: bytes | None = None, timeout: float | None = None) -> tuple[bytes, bytes]:
        out: dict[str, bytes] = {}

        def read(name, f):
            out[name] = f.read() if f is not None else None
            if f is not None:
                f.close()

        readers = [
            threading.Thread(target=read, args=(n, f), daemon=True)
            for n, f in (("out", self.stdout), ("err", self.stderr))
        ]
        for t in readers:
            t.start()
        if self.stdin is not None:
            try:
                if input:
                    self.stdin.write(input)
                self.stdin.close()
            except BrokenPipeError:
                pass
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in readers:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
        self.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return out.get("out"), out.get("err")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for f in (self.stdin, self.stdout, self.stderr):
            if f is not None:
                f.close()
        self.wait()


class ForkServer:
    def __init__(self, python: str):
        self._dir = tempfile.mkdtemp(prefix="sd-zyg-")
        self.path = os.path.join(self._dir, "z.sock")
        self.env = dict(os.environ)
        self.proc = subprocess.Popen(
            [python, os.path.abspath(__file__), self.path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=self.env,
            cwd=os.path.dirname(os.path.abspath(__file__)),
        )
        if self.proc.stdout is None or self.proc.stdout.readline() != b"ready\n":
            raise RuntimeError("the fork server did not start")
        import importlib.util

        spec = importlib.util.find_spec("sessiond.cli.main")
        self.argv0 = spec.origin if spec and spec.origin else "sessiond"

    def can_run(self, env: dict) -> bool:
        keys = set(env) | set(self.env)
        return all(env.get(k) == self.env.get(k) or k.startswith(RUNTIME_VARS) for k in keys)

    def spawn(
        self,
        args: list[str],
        *,
        env: dict,
        stdin=None,
        stdout=None,
        stderr=None,
        pass_fds=(),
        cwd=None,
        new_session=False,
    ) -> Forked:
        """Like Popen([python, -m, sessiond.cli.main, *args], ...): PIPE or None (inherit) for the streams,
        or a file object / descriptor."""
        ends: list[int] = []  # the child's ends, closed here once sent
        mine: dict[str, object] = {}
        targets, fds = [], []
        for n, (what, mode) in enumerate(((stdin, "wb"), (stdout, "rb"), (stderr, "rb"))):
            if what is subprocess.PIPE:
                r, w = os.pipe()
                child_end, my_end = (r, w) if n == 0 else (w, r)
                ends.append(child_end)
                mine[n] = os.fdopen(my_end, mode)
                fd = child_end
            elif what is subprocess.DEVNULL:
                fd = os.open(os.devnull, os.O_RDWR)
                ends.append(fd)
            elif what is None:
                fd = n
            else:
                fd = what if isinstance(what, int) else what.fileno()
            targets.append(n)
            fds.append(fd)
        for fd in pass_fds:
            targets.append(fd)
            fds.append(fd)
        # argv as Python decodes it (bytes: the file system's encoding, undecodable bytes as surrogates)
        req = {
            "args": [os.fsdecode(a) for a in args],
            "env": env,
            "cwd": cwd or os.getcwd(),
            "targets": targets,
            "argv0": self.argv0,
        }
        req["new_session"] = new_session
        conn = socket.socket(socket.AF_UNIX)
        try:
            data = json.dumps(req).encode() + b"\n"
            conn.connect(self.path)
            sent = conn.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
            conn.sendall(data[sent:])
            got = b""
            while b"\n" not in got:
                chunk = conn.recv(64)
                if not chunk:
                    raise RuntimeError("the fork server did not start the child")
                got += chunk
        except BaseException:
            conn.close()
            for f in mine.values():
                f.close()
            raise
        finally:
            for fd in ends:
                os.close(fd)
        line, _, rest = got.partition(b"\n")
        child = Forked([*MAIN, *args], conn, int(line), mine.get(0), mine.get(1), mine.get(2))
        child._buf = rest  # its exit status, if it was that quick
        return child

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.kill()
        self.proc.wait()
        try:
            os.unlink(self.path)
            os.rmdir(self._dir)
        except OSError:
            pass


if __name__ == "__main__":
    zygote_main(sys.argv[1])
