"""The crash tests' loop: work running in threads against daemons killed (SIGKILL) at random moments and
started again. CRASH_SEED picks the moments."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import threading
import time
from collections.abc import Callable

import pytest

from conftest import cli_json, popen_cli, run_cli, wait_for
from sessiond.client import ApiError, Client, ClientError

# the long versions of the kill loops (more kills, rounds of their own seeds), run only with CRASH_LONG=1
LONG = bool(os.environ.get("CRASH_LONG"))


def kills(short: int, long: int) -> int:
    """How many kills a loop makes: CRASH_KILLS, else `short` (the default run's), or `long` with CRASH_LONG=1."""
    return int(os.environ.get("CRASH_KILLS", long if LONG else short))


def seeded_rounds(long: int):
    """A loop test parametrized by `seed`: one round (CRASH_SEED, 1 unless set), or `long` with CRASH_LONG=1, each
    the next seed; the test passes its seed on with `monkeypatch.setenv("CRASH_SEED", str(seed))`."""
    first = int(os.environ.get("CRASH_SEED", "1"))
    return pytest.mark.parametrize("seed", [first + r for r in range(long if LONG else 1)])


def calls(home: str, work: Callable[[Client, int], None], stop: threading.Event, errors: list, timeout: float = 10):
    """`work(client, i)` for i = 1, 2, ... on a new client of the daemon of `home` each, until `stop`: a call
    the daemon's kill broke (ClientError, OSError) was not acknowledged, and the loop goes on; an ApiError,
    a real answer of a live daemon, is noted in `errors` and ends it."""
    i = 0
    while not stop.is_set():
        i += 1
        try:
            with Client(home, timeout=timeout) as c:
                work(c, i)
        except ApiError as exc:
            errors.append(exc)
            return
        except (ClientError, OSError):
            time.sleep(0.02)  # the daemon is down or was killed mid-request


def killed_while(
    workers: list[Callable[[threading.Event], None]],
    victims: list,
    kills: int,
    *,
    lo: float = 0.05,
    hi: float = 0.4,
    between: Callable[[int, random.Random], None] | None = None,
) -> None:
    """Run each of `workers(stop)` in a thread while one of `victims` (DaemonProcs) is killed and started again
    `kills` times, `lo` to `hi` seconds apart (`between(k, rnd)` called before each kill); then stop them and
    wait for them to end."""
    stop = threading.Event()
    threads = [threading.Thread(target=w, args=(stop,), daemon=True) for w in workers]
    for t in threads:
        t.start()
    rnd = random.Random(int(os.environ.get("CRASH_SEED", "1")))
    try:
        for k in range(kills):
            time.sleep(rnd.uniform(lo, hi))  # the scenario: a kill at a random moment of the work
            if between is not None:
                between(k, rnd)
            victim = rnd.choice(victims)
            victim.kill()
            victim.start()
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a worker did not end"


def contents(d, sid: str) -> list[str]:
    """The contents of `sid`'s messages on the daemon `d`, in its order."""
    with Client(d.home) as c:
        return [m["content"] for m in c.messages(sid, limit=100_000)["messages"]]


def clean(d, said: dict | None = None) -> bool:
    """`sync --wait`, `verify` and `doctor` of the daemon `d` all exit 0; `said`, if given, keeps the last output of
    the first that did not (for the failure's message: which check, and what it found)."""
    for argv in (["sync", "--wait"], ["verify", "--json"], ["doctor", "--json"]):
        res = run_cli(d.home, *argv)
        if res.returncode != 0:
            if said is not None:
                said[d.home] = f"{' '.join(argv)} exit {res.returncode}: {res.stdout[-1500:]} {res.stderr[-500:]}"
            return False
    return True


def converge(devices: list, sid: str, acked, timeout: float = 40) -> list[str]:
    """Sync `devices` until each holds `sid`'s same messages in the same order, `acked` among them once: that
    log. Failing, it names what was missing or apart, and each device's last pull error (by its place: a, b, ...)."""
    last: dict = {}

    def converged() -> bool:
        logs, said = [], []
        for d in devices:
            with Client(d.home) as c:
                c.sync(sid, wait=True, timeout=10)
                said.append(c.get_session(sid)["sync"].get("pull_error"))
            logs.append(contents(d, sid))
        # (why a device stays apart is often what its last pull said: a rekey's limit, a log damaged)
        last["pull_errors"] = {n: e for n, e in zip("abcdefgh", said) if e}
        last["missing"] = sorted(set(acked) - set(logs[0]))[:10]
        last["apart"] = [sorted(set(logs[0]) ^ set(other))[:10] for other in logs[1:]]
        return all(other == logs[0] for other in logs[1:]) and set(acked) <= set(logs[0])

    try:
        wait_for(converged, timeout=timeout, interval=0.5)
    except AssertionError:
        raise AssertionError(f"did not converge: {last}") from None
    log = contents(devices[0], sid)
    assert len(log) == len(set(log)), "a message twice"
    said: dict = {}
    for d in devices:
        try:
            wait_for(lambda d=d: clean(d, said), timeout=30, what="verify and doctor clean")
        except AssertionError:
            raise AssertionError(f"verify and doctor not clean within 30 s: {said.get(d.home)}") from None
    return log


def session_key(d, sid: str) -> bytes:
    """The key of `sid` the daemon `d` holds (its key file)."""
    with open(os.path.join(d.home, "keys", "sessions", f"{sid}.key"), "rb") as f:
        return f.read()


# rekeys one device answers in a loop (rekeying): under the 16 claims its log keeps (sync/manifest.py CLAIMS_KEPT), past
# which a device that has not pulled through that many rekeys by it is told to import a new share code, keeping what it
# has (a product limit: tests/test_rekey_chain.py). Unbounded, a loaded machine let the other device, killed or slowed
# (by its own gc loop too), fall that far behind: it ended lacking the rekeying device's later messages for good
REKEYS = 12


def rekeying(sid: str, rekeyed: list[int], most: int = REKEYS) -> Callable[[Client, int], None]:
    """A `work` for `calls`: `sid` rekeyed, each answered noted in `rekeyed`, `most` times at most (then the loop
    goes on idle while the others append, collect and kill)."""

    def rekey(c: Client, i: int) -> None:
        if len(rekeyed) >= most:
            time.sleep(0.05)  # (enough rekeys: a pause, not a wait for anything)
            return
        c.rekey(sid)
        rekeyed.append(i)

    return rekey


def progressing(
    acked: list, errors: list, each: int = 1, then: Callable[[int, random.Random], None] | None = None
) -> Callable[[int, random.Random], None]:
    """A `between` for killed_while: before each kill, wait (60 s at most) until `each` more of `acked` were
    acknowledged since the last kill (or a worker ended on an error, noted in `errors`), then `then(k, rnd)` if
    given. The kills come as the work goes on, however slow the machine (a restart there outlasts the 0.05-0.4 s
    between kills, which then cut starts, not the work), so a test may ask for `each` acknowledged a kill: a floor
    a slow machine reaches, later, while work that stops for good fails here (`the work going on`)."""
    since = [len(acked)]

    def between(k: int, rnd: random.Random) -> None:
        wait_for(lambda: errors or len(acked) >= since[0] + each, timeout=60, what="the work going on")
        since[0] = len(acked)
        if then is not None:
            then(k, rnd)

    return between


def waiting_for(done: Callable[[], bool], what: str, at: int) -> Callable[[int, random.Random], None]:
    """A `between` for killed_while: before kill `at`, wait (30 s at most) until `done()`, so that the kills
    after it come once the work it names was answered at least once, however slow the machine."""

    def between(k: int, rnd: random.Random) -> None:
        if k == at:
            wait_for(done, timeout=30, what=what)

    return between


def shared_writers(make_daemon, store, name: str, pre: list[dict] | None = None, **spec) -> tuple:
    """A and B started on `store` (a URL, or a list: a mirror), A's session `name` (made with `spec`) holding
    one message, "first" (or the messages `pre`), shared read-write with B: (a, b, its id)."""
    a, b = make_daemon(store).start(), make_daemon(store).start()
    sid = a.client().create_session(name=name, **spec)["id"]
    a.client().append_many(sid, pre or [{"role": "user", "content": "first"}])
    b.client().import_code(a.client().share(sid, write=True)["code"])
    return a, b, sid


def each_writing(devices: dict, work: Callable[[str], Callable[[Client, int], None]], errors: list, kills: int) -> None:
    """killed_while with `work(name)`'s calls on each of `devices` (name -> DaemonProc), any of them the victim."""
    workers = [lambda stop, d=d, n=n: calls(d.home, work(n), stop, errors, timeout=20) for n, d in devices.items()]
    killed_while(workers, list(devices.values()), kills)


def agreeing(devices: list, sid: str, view: Callable, what: str) -> None:
    """Sync `devices` until `view(d, sid)` is the same on each (30 s at most)."""

    def same() -> bool:
        for d in devices:
            with Client(d.home) as c:
                c.sync(sid, wait=True, timeout=10)
        return all(view(d, sid) == view(devices[0], sid) for d in devices[1:])

    wait_for(same, timeout=30, what=what)


def appender(d, sid: str, name: str, acked: list, errors: list) -> Callable[[threading.Event], None]:
    """A worker for killed_while: `name`1, `name`2, ... appended to `sid` on the daemon `d`, each acknowledged
    one noted in `acked`."""

    def append(c: Client, i: int) -> None:
        c.append(sid, "user", f"{name}{i}")
        acked.append(f"{name}{i}")

    return lambda stop: calls(d.home, append, stop, errors, timeout=20)


def writer_until_revoked(
    d, sid: str, name: str, written: list, errors: list, revoked: threading.Event
) -> Callable[[threading.Event], None]:
    """A worker for killed_while, of a daemon `d` that is not killed: `name`1, `name`2, ... appended to `sid` (each
    acknowledged one noted in `written`, a push asked every fourth) until the daemon refuses one as revoked (then
    `revoked` set); another ApiError is noted in `errors` and ends it."""

    def work(stop: threading.Event) -> None:
        i = 0
        with Client(d.home, timeout=20) as cl:
            while not stop.is_set() and not revoked.is_set():
                i += 1
                try:
                    cl.append(sid, "user", f"{name}{i}")
                    written.append(f"{name}{i}")
                    if i % 4 == 0:
                        cl.sync(sid)
                except ApiError as exc:
                    if exc.code == "revoked":
                        revoked.set()
                    else:
                        errors.append(exc)
                        return

    return work


def three_writers(make_daemon, url: str) -> tuple:
    """A, B and C started on the store at `url`, A's session "dropped" holding one message, "first", shared
    read-write with B and C: (a, b, c, its id, C's device id)."""
    a, b, c = (make_daemon(url).start() for _ in range(3))
    sid = a.client().create_session(name="dropped")["id"]
    a.client().append(sid, "user", "first")
    for d in (b, c):
        d.client().import_code(a.client().share(sid, write=True)["code"])
    return a, b, c, sid, cli_json(c.home, "status")["device_id"]


def dropped_writer_told(c, sid: str, written: list[str], log: list[str]) -> None:
    """The dropped writer `c` learns it was revoked; of what it `written`, each in the kept devices' `log` once,
    and what is not there held on `c` alone, which it says (`show`'s `held_here`)."""

    def told() -> bool:
        c.client().sync(sid, wait=True, timeout=10)
        return c.client().get_session(sid)["access"] == "revoked"

    wait_for(told, timeout=30, what="C told it was revoked")
    held = c.client().get_session(sid).get("held_here")
    lost = [m for m in written if m not in log]
    assert all(log.count(m) == 1 for m in written if m in log)
    if lost:  # what the drop did not carry over stays on C, and C says so
        assert held is not None, lost
        assert held["messages"] >= len(lost), (held, lost)
    assert set(written) <= set(contents(c, sid))


def keep_homes(store_dir: str, *devices) -> None:
    """With KEEP_HOMES=DIR in the environment, the devices' homes (their logs, databases, keys) and the store are
    copied there, for a failing run read afterwards (the fixtures delete them)."""
    keep = os.environ.get("KEEP_HOMES")
    if not keep:
        return
    for n, d in zip("abc", devices):
        dest = os.path.join(keep, n)
        shutil.copytree(os.path.dirname(d.home), dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.sock"))
    shutil.copytree(store_dir, os.path.join(keep, "store"), dirs_exist_ok=True)


class RelayProc:
    """A `sessiond serve` relay (open registration) on a held loopback port, its data in `data`: a victim for
    killed_while, as a DaemonProc is (kill: SIGKILL, a host going down; start: again on the same port, where
    the devices' accounts are)."""

    def __init__(self, data: str, port: int):
        self.data, self.port = data, port
        self.url = f"s5+http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> RelayProc:
        argv = ["serve", "--listen", f"127.0.0.1:{self.port}", "--data", self.data, "--json", "--open-registration"]
        self.proc = popen_cli(argv, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        line = self.proc.stdout.readline() if self.proc.stdout else b""
        if not line:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError("sessiond serve did not start")
        assert json.loads(line)["url"] == self.url, line
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc is not None and self.proc.stdout:
            self.proc.stdout.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)
        if self.proc is not None and self.proc.stdout:
            self.proc.stdout.close()
