"""Real daemons in temporary homes, over real sockets, as separate processes."""

from __future__ import annotations

import atexit
import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from sessiond.client import AsyncClient, Client, DaemonNotRunning
from sessiond.daemon.home import socket_path
from waiting import eventually, wait_for  # re-exported: tests import them from here

PY = sys.executable

# pytest rewrites each test module's asserts (parse, rewrite, compile: ~12 s of CPU for the suite's ~390 files)
# and keeps the result in tests/__pycache__, unless bytecode is not to be written: with PYTHONDONTWRITEBYTECODE
# set (as on this machine and CI) every xdist worker rewrote every file on every run, four times ~12 s of CPU
# before the first test. The rewritten modules are kept now (this process only; what it starts inherits the
# variable); `make test` writes them once before the workers start.
sys.dont_write_bytecode = False

# Daemons and CLI calls start from a fork server that has imported sessiond once (tests/forkserver.py):
# the same program as `python -m sessiond.cli.main`, in a process of its own, without ~0.65 s of imports each.
# A test marked `real_exec` (it reads command lines, say) starts them for real, as SESSIOND_TEST_EXEC=1 does all.
# A `sessiond start` from the fork server forks its daemon in turn (SESSIOND_TEST_FORK_START, cli/forkstart.py:
# ~0.5 s of CPU less a start), but in a test marked `exec_start` (it reads that daemon's command line).
EXEC_ONLY = os.environ.get("SESSIOND_TEST_EXEC") == "1"
_fork: dict = {}  # "server": this worker's ForkServer (None if it could not start); "exec": the test's marker
_fork_lock = threading.Lock()


def _fork_server():
    if EXEC_ONLY or _fork.get("exec"):
        return None
    with _fork_lock:
        if "server" not in _fork:
            from forkserver import ForkServer

            try:
                _fork["server"] = ForkServer(PY)
            except (OSError, RuntimeError, AttributeError):  # no pidfd_open (Linux < 5.3): start for real
                _fork["server"] = None
        return _fork["server"]


def popen_cli(args: list[str], *, env: dict, **kw):
    """`python -m sessiond.cli.main *args` started: from the fork server where it can be, else for real.
    kw: stdin, stdout, stderr, pass_fds, as subprocess.Popen takes them, and new_session (Popen's
    start_new_session)."""
    server = _fork_server()
    if server is not None and server.can_run(env):
        if not _fork.get("exec_start"):  # its `start` forks its daemon too (cli/forkstart.py)
            env = {**env, "SESSIOND_TEST_FORK_START": "1"}
        return server.spawn(args, env=env, **kw)
    if "new_session" in kw:
        kw["start_new_session"] = kw.pop("new_session")
    return subprocess.Popen([PY, "-m", "sessiond.cli.main", *args], env=env, **kw)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    _fork["exec"] = item.get_closest_marker("real_exec") is not None  # before the test's fixtures start
    _fork["exec_start"] = item.get_closest_marker("exec_start") is not None


def pytest_collection_modifyitems(items):
    from fileorder import longest_first

    longest_first(items)  # the longest files handed to the workers first (tests/fileorder.py)


def pytest_sessionfinish(session):
    server = _fork.pop("server", None)
    if server is not None:
        server.close()


# A suite started in the background of a shell without job control inherits SIGINT ignored, and so does
# every process it starts: the tests of Ctrl-C (a KeyboardInterrupt in a client, `sessiond ask` stopped
# with exit 130) would then test nothing. Ctrl-C is what they test: restore it (its handler is reset to
# the default in the processes started from here, where Python installs its own).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


class UnixHTTP(http.client.HTTPConnection):
    """Send arbitrary bytes to a daemon's socket, as a misbehaving app would."""

    def __init__(self, path: str, timeout: float = 60):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(self._path)


def raw_post(sock_path: str, path: str, body: dict, extra: str = "") -> socket.socket:
    """A JSON POST written on a daemon's socket, its answer left unread: returns the connection, for a test
    to close as an app that goes away would. `extra`: more header lines, each ending in CRLF."""
    raw = json.dumps(body).encode()
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock_path)
    s.sendall(
        f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n{extra}"
        f"Content-Length: {len(raw)}\r\n\r\n".encode()
        + raw
    )
    return s


class ReservedPort:
    """A loopback TCP port held for a test: bound (SO_REUSEADDR) but not listening. Nothing else is given it
    (neither a bind to port 0 nor a connection's own port), a connection to it is refused, and a server the
    test starts on it (binding with SO_REUSEADDR, as asyncio and `sessiond serve` do) listens there beside
    the reservation, and can stop and start there again. A port found free and let go (bind to 0, close)
    is anyone's until the server binds it: another process's connection meanwhile may be given it."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> ReservedPort:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@pytest.fixture
def reserved_port():
    """A ReservedPort held for the whole test: for a server the test stops and starts again on one address
    (a relay's accounts are per address), which no other listen or connection can be given meanwhile."""
    with ReservedPort() as held:
        yield held


@contextlib.contextmanager
def relay_served(data: str, *flags: str, log_path: str | None = None):
    """A `sessiond serve` relay process on a free loopback port, its data in `data`; yields what it printed
    (--json: its url and port), and stops it (cleanly) afterwards."""
    with open(log_path or os.devnull, "wb") as log:
        proc = popen_cli(  # (from the fork server, as the daemons are: ~0.65 s of imports less a relay)
            ["serve", "--listen", "127.0.0.1:0", "--data", data, "--json", *flags],
            env=dict(os.environ),
            stdout=subprocess.PIPE,
            stderr=log,
        )
    line = proc.stdout.readline() if proc.stdout else b""
    if not line:
        proc.kill()
        said = open(log_path).read()[-2000:] if log_path else ""
        raise RuntimeError(f"sessiond serve did not start: {said}")
    try:
        yield json.loads(line)
    finally:
        proc.terminate()
        assert proc.wait(15) == 0


class DaemonProc:
    """A sessiond daemon running as its own process on a home folder."""

    def __init__(self, home: str, store: str | list[str] | None = None, env: dict | None = None):
        self.home = home
        self.store = store
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None

    @property
    def socket(self) -> str:
        return socket_path(self.home)

    def start(self, timeout: float = 20) -> DaemonProc:
        r, w = os.pipe()
        cmd = ["daemon", "--home", self.home, "--ready-fd", str(w)]
        for url in [self.store] if isinstance(self.store, str) else self.store or ():  # a list: a mirror
            cmd += ["--store", url]
        self.proc = self._spawn(cmd, w)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            line = f.read(6)
        if line != b"ready\n":
            out, err = self.proc.communicate(timeout=timeout)
            raise RuntimeError(f"daemon did not start: {err.decode()[-2000:]}")
        return self

    def _spawn(self, cmd: list[str], ready_fd: int) -> subprocess.Popen:
        return popen_cli(cmd, pass_fds=(ready_fd,), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env)

    def client(self) -> Client:
        return Client(self.home)

    def aclient(self) -> AsyncClient:
        return AsyncClient(self.home)

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL: no chance to clean up."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
            self.proc.stdout.close()
            self.proc.stderr.close()

    def restart(self) -> DaemonProc:
        self.stop()
        return self.start()


_FLAG_ROOT: list[str] = []  # this process's folder of pause flags (flag_dir), removed at its exit


def flag_dir() -> str:
    """A new folder for a pause flag (SESSIOND_TEST_PAUSE=point:FLAG), inside one folder of this test process's,
    removed when the process exits (the daemons holding flags are stopped by then): a test that ends with a
    daemon still arrived at its point leaves nothing behind in /tmp."""
    if not _FLAG_ROOT:
        _FLAG_ROOT.append(tempfile.mkdtemp(prefix="sd-flags-"))
        atexit.register(shutil.rmtree, _FLAG_ROOT[0], True)
    return tempfile.mkdtemp(prefix="f-", dir=_FLAG_ROOT[0])


@pytest.fixture
def home():
    # Short paths under /tmp keep the socket path inside the Unix limit; the long-path fallback has a test.
    d = tempfile.mkdtemp(prefix="sd-")
    path = os.path.join(d, "home")
    yield path
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def daemon(home):
    d = DaemonProc(home).start()
    yield d
    d.stop()


@pytest.fixture
async def devices(tmp_path):
    """Two devices in this process over one store (tests/devices.py), closed however the test ends."""
    from devices import Devices

    pair = Devices(str(tmp_path))
    yield pair
    await pair.close()


def follower_pair(url: str, tmp_path) -> tuple[DaemonProc, DaemonProc, str]:
    """Two daemons on the store at `url`: A makes a session with one message, B imports it read-write and
    follows it. The caller stops both."""
    a = DaemonProc(str(tmp_path / "a"), url).start()
    b = DaemonProc(str(tmp_path / "b"), url).start()
    try:
        with a.client() as ca, b.client() as cb:
            sid = ca.create_session(name="followed", initial_messages=[{"role": "user", "content": "hi"}])["id"]
            cb.import_code(ca.share(sid, write=True)["code"])
    except BaseException:
        a.stop()
        b.stop()
        raise
    return a, b, sid


@pytest.fixture
def portal():
    """The S5 portal stand-in (tests/servers/s5portal.py) on loopback: (its state and faults, its store URL)."""
    from servers.s5portal import Portal, Threaded, make_app

    p = Portal()
    server = Threaded(make_app(p)).start()
    p.authority = f"127.0.0.1:{server.port}"
    yield p, f"s5+http://127.0.0.1:{server.port}"
    server.stop()


@pytest.fixture
def make_daemon():
    made: list[DaemonProc] = []
    dirs: list[str] = []

    def make(store: str | list[str] | None = None, **kw) -> DaemonProc:
        d = tempfile.mkdtemp(prefix="sd-")
        dirs.append(d)
        proc = DaemonProc(os.path.join(d, "home"), store, **kw)
        made.append(proc)
        return proc

    yield make
    for p in made:
        p.stop()
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
async def db(tmp_path):
    """A real Database in tmp_path/db.sqlite, for the in-process tests of the storage and sync layers."""
    from sessiond.storage.database import Database

    d = await Database.open(os.path.join(tmp_path, "db.sqlite"))
    yield d
    await d.close()


@pytest.fixture
def store_dir():
    d = tempfile.mkdtemp(prefix="sd-store-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@contextlib.contextmanager
def appends_meanwhile(daemon: DaemonProc, sid: str):
    """A thread appending to `sid`, one message at a time, until the block ends: yields the list of each
    append's (start, end) monotonic times, filled as they are answered. (An app's pace, an append every 10 ms
    at most: back to back, ~2,000 a second, they cost seconds of CPU to show what a hundred show, an append
    held up by what runs meanwhile.)"""
    spans: list[tuple[float, float]] = []
    stop = threading.Event()

    def appender():
        with daemon.client() as c:
            while not stop.is_set():
                t = time.monotonic()
                c.append(sid, "user", "meanwhile")
                spans.append((t, time.monotonic()))
                stop.wait(max(0.0, t + 0.01 - time.monotonic()))

    th = threading.Thread(target=appender)
    th.start()
    try:
        yield spans
    finally:
        stop.set()
        th.join(timeout=60)


@contextlib.asynccontextmanager
async def events_route(path: str):
    """The daemon's own GET /v1/events route alone, served on the Unix socket `path`: yields its Events
    (publish to the subscribers, close their streams, `_streams` the task serving each)."""
    from aiohttp import web

    from sessiond.daemon.api import make_app
    from sessiond.daemon.events import Events

    class Owner:  # what the events route uses of the daemon
        version = "test"
        events = Events()

    runner = web.AppRunner(make_app(Owner()), handle_signals=False, access_log=None)
    await runner.setup()
    await web.UnixSite(runner, path).start()
    try:
        yield Owner.events
    finally:
        await runner.cleanup()


def run_cli(
    home: str | None,
    *args: str,
    input: str | bytes | None = None,
    env: dict | None = None,
    check: bool = False,
    timeout: float = 120,
) -> subprocess.CompletedProcess:
    """`sessiond *args --home home` (home None: no --home) run to its end (subprocess.TimeoutExpired past
    `timeout` seconds, the process killed), from the fork server where it can be."""
    cmd = list(args)
    if home is not None:
        cmd += ["--home", home]
    e = {**os.environ, **(env or {})}
    data = input.encode() if isinstance(input, str) else input
    proc = popen_cli(
        cmd, env=e, stdin=None if data is None else subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        out, err = proc.communicate(data, timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
    res = subprocess.CompletedProcess(
        [PY, "-m", "sessiond.cli.main", *cmd], proc.returncode, out.decode(), err.decode()
    )
    if check and res.returncode != 0:
        raise AssertionError(f"{args} exited {res.returncode}: {res.stderr}{res.stdout[-4000:]}")
    return res


def killed(procs: list[subprocess.Popen]) -> None:
    """The processes of `procs` still running killed (and reaped): a test's clean-up, however it ended."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def write_config(home: str, **settings) -> None:
    """A daemon home's config.toml holding `settings` (each value written as JSON, which TOML reads for
    numbers, strings and booleans); the home is made if missing."""
    os.makedirs(home, mode=0o700, exist_ok=True)
    with open(os.path.join(home, "config.toml"), "w") as f:
        for k, v in settings.items():
            f.write(f"{k} = {json.dumps(v)}\n")


def config_refused(folder, key: str, bad: str, good: str, says: str):
    """config.toml in `folder` setting `key` to `bad` (TOML text) is refused by Config.load with a HomeError
    matching `says`; set to `good`, it loads: returns that Config."""
    from sessiond.api.locate import HomeError
    from sessiond.daemon.home import Config

    path = os.path.join(str(folder), "config.toml")
    with open(path, "w") as f:
        f.write(f"{key} = {bad}\n")
    with pytest.raises(HomeError, match=says):
        Config.load(str(folder))
    with open(path, "w") as f:
        f.write(f"{key} = {good}\n")
    return Config.load(str(folder))


def started_with(make, **settings) -> DaemonProc:
    """A daemon from `make` (the make_daemon fixture) with `settings` in its config.toml, started."""
    d = make()
    write_config(d.home, **settings)
    return d.start()


def started_with_provider(
    make, base_url: str, *, name: str = "loop", table: dict | None = None, start: bool = True, **settings
) -> DaemonProc:
    """A daemon from `make` (the make_daemon fixture) whose config.toml holds `settings` (openai_listen,
    default_provider, ...) and one model provider, [providers.NAME] with `base_url` and `table`'s other keys
    (api_key_file, timeout, ...); started unless `start` is false."""
    d = make()
    write_config(d.home, **settings)  # the top-level keys first: a key below a table belongs to it
    with open(os.path.join(d.home, "config.toml"), "a") as f:
        f.write(f"[providers.{name}]\n")
        for k, v in {"base_url": base_url, **(table or {})}.items():
            f.write(f"{k} = {json.dumps(v)}\n")
    return d.start() if start else d


@pytest.fixture
def slow_stream(make_daemon):
    """A daemon whose provider (tests/servers/openai_server.py) streams its answer's words 0.3 s apart: an app
    has time to act in the middle of an answer (close it, kill the daemon)."""
    from servers.openai_server import Faults, Provider, serve_threaded

    p, server = serve_threaded(Provider(faults=Faults(delay=0.3)))  # the fault itself: words a while apart
    d = started_with_provider(make_daemon, f"http://127.0.0.1:{server.port}/v1", default_provider="loop")
    yield d
    server.stop()


@pytest.fixture
def echo_daemon(make_daemon):
    """A daemon whose default provider, "loop", is tests/servers/openai_server.py on loopback (its answers echo
    the question; its `faults` and `requests` the test's to set and read): (the daemon, the provider)."""
    from servers.openai_server import Provider, serve_threaded

    p, server = serve_threaded(Provider())
    yield started_with_provider(make_daemon, f"http://127.0.0.1:{server.port}/v1", default_provider="loop"), p
    server.stop()


def openai_app(d: DaemonProc, sid: str | None, **headers: str):
    """An official `openai` client of daemon `d`'s OpenAI endpoint on TCP (openai_listen), with its bearer
    key, naming session `sid` (None: no X-Sessiond-Session, a new session each call) and `headers`, never
    retrying."""
    import openai

    info = cli_json(d.home, "status")["openai"]
    key = open(info["api_key_file"]).read().strip()
    named = {"X-Sessiond-Session": sid} if sid is not None else {}
    return openai.OpenAI(base_url=info["base_url"], api_key=key, max_retries=0, default_headers={**named, **headers})


@pytest.fixture
def served_openai(make_daemon):
    """(daemon, provider): a daemon whose one provider is the tests' loopback one (tests/servers/openai_server.py,
    its requests kept in provider.requests), with the OpenAI-compatible listener on a free loopback port."""
    from servers.openai_server import Provider, serve_threaded

    p, server = serve_threaded(Provider())
    d = started_with_provider(make_daemon, f"http://127.0.0.1:{server.port}/v1", openai_listen="127.0.0.1:0")
    yield d, p
    server.stop()


@pytest.fixture
def asked_paused(make_daemon, tmp_path):
    """(daemon, provider, flag): as served_openai, the daemon held where an OpenAI request has left for the provider
    and its question is not recorded yet (SESSIOND_TEST_PAUSE openai.asked: the flag file appears at each arrival,
    and the request goes on once the test removes it; `arrived(flag)` waits for it)."""
    from servers.openai_server import Provider, serve_threaded

    flag = str(tmp_path / "asked")
    p, server = serve_threaded(Provider())
    try:
        yield openai_paused(make_daemon, server.port, f"openai.asked:{flag}", max_messages_per_chat=4), p, flag
    finally:
        p.resume.set()
        server.stop()


def openai_paused(make_daemon, port: int, pauses: str, **config) -> DaemonProc:
    """A daemon with the OpenAI-compatible listener, whose one provider is the tests' loopback one on `port`, held at
    the test pauses `pauses` (SESSIOND_TEST_PAUSE: POINT:FLAG, comma-separated; `arrived(flag)` waits for one)."""
    return started_with_provider(
        lambda: make_daemon(env={"SESSIOND_TEST_PAUSE": pauses}),
        f"http://127.0.0.1:{port}/v1",
        openai_listen="127.0.0.1:0",
        **config,
    )


def arrived(flag: str) -> None:
    """Wait for a request held at a test pause (its flag file made: asked_paused)."""
    deadline = time.monotonic() + 20
    while not os.path.exists(flag):
        assert time.monotonic() < deadline, "the request never reached the provider"
        time.sleep(0.01)


def cli_json(home: str, *args: str, **kw):
    res = run_cli(home, *args, "--json", check=True, **kw)
    return json.loads(res.stdout)


def imported_back(home: str, sid: str, folder) -> str:
    """Session `sid` exported as JSON (`export --format json`) into `folder` and imported back beside itself
    (`import-file`, the file's session id taken out): the new session's id; an import refused fails the test."""
    path = os.path.join(str(folder), f"{sid}.json")
    run_cli(home, "export", sid, "--format", "json", "-o", path, check=True)
    with open(path) as f:
        data = json.load(f)
    del data["session"]["id"]
    with open(path, "w") as f:
        json.dump(data, f)
    return run_cli(home, "import-file", path, "--format", "json", check=True).stdout.split()[0]


__all__ = [
    "DaemonNotRunning",
    "DaemonProc",
    "cli_json",
    "eventually",
    "imported_back",
    "openai_app",
    "run_cli",
    "started_with",
    "started_with_provider",
    "wait_for",
    "write_config",
]


@pytest.fixture(scope="module")
def api_target():
    """A daemon of its own for a module of API fuzzing, with one session (id "fuzz", one message) for
    generated ids to find now and then. Yields (daemon, its OpenAPI document)."""
    d = tempfile.mkdtemp(prefix="sd-api-")
    proc = DaemonProc(os.path.join(d, "home")).start()
    c = proc.client()
    c.append(c.create_session(id="fuzz", name="target")["id"], "user", "hello")
    yield proc, c.openapi()
    proc.stop()
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def secret_homes():
    """Homes whose logs and files tests/secretcheck.py reads for leaked secrets (see secretcheck.homes)."""
    import secretcheck

    with secretcheck.homes() as make:
        yield make


@pytest.fixture
def invite_relay(tmp_path):
    """A `sessiond serve` relay whose registration is closed (only with an invite): (data folder, host:port)."""
    data = str(tmp_path / "relay-data")
    with relay_served(data) as info:
        yield data, info["url"].split("://", 1)[1]


def rekeys_at_once(sid: str, devices: dict) -> dict:
    """`rekey` of `sid` on every daemon of `devices` (name -> DaemonProc) at the same moment, each in a
    thread: what each answered (a result, or the ApiError it raised)."""
    from sessiond.client import ApiError

    results: dict = {}
    start = threading.Barrier(len(devices))

    def rekey(name, d):
        client = d.client()
        start.wait(timeout=30)
        try:
            results[name] = client.rekey(sid)
        except ApiError as exc:
            results[name] = exc

    threads = [threading.Thread(target=rekey, args=item) for item in devices.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(results) == len(devices), results
    return results
