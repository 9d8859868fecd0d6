"""kill -9 at random moments of a loop of operations that write more than one transaction, or files beside
the database: share codes imported (read-only and read-write), a fork of each, a clone, an `rm`. After the
restarts each session is whole or absent (an import's messages all there or none, a fork's history to its
message), what was acknowledged is there (what `rm` answered is gone, its key files too), no key file is
left of a session not here, a code whose import was cut short imports when run again, verify and doctor are
clean, and what this device writes to an imported session reaches the other. CRASH_KILLS sets the kills."""

from __future__ import annotations

import os

from conftest import cli_json, run_cli, wait_for
from killing import calls, killed_while
from sessiond.client import Client
from test_import import _absent

KILLS = int(os.environ.get("CRASH_KILLS", 8))
SESSIONS = 8


def _contents(c, sid: str) -> list[str]:
    return [m["content"] for m in c.messages(sid, limit=100_000, all_chats=True)["messages"]]


def _here(c, sid: str) -> bool:
    return not _absent(c, sid)


def _key_sessions(home: str) -> set[str]:
    folder = os.path.join(home, "keys", "sessions")
    return (
        {f.rsplit(".", 1)[0] for f in os.listdir(folder) if not f.startswith(".")} if os.path.isdir(folder) else set()
    )


def test_imports_forks_clones_and_rm_killed_at_random_moments_leave_each_session_whole_or_absent(
    make_daemon, store_dir
):
    url = f"file://{store_dir}"
    a, b = make_daemon(url).start(), make_daemon(url).start()
    ca = a.client()
    sources: dict[str, list[str]] = {}
    codes: dict[str, str] = {}
    for n in range(SESSIONS):
        sid = ca.create_session(name=f"s{n}")["id"]
        ca.append_many(sid, [{"role": "user", "content": f"{n}.{i}"} for i in range(50 + 300 * (n % 3))])
        sources[sid] = _contents(ca, sid)
        codes[sid] = ca.share(sid, write=n % 2 == 0)["code"]
    assert ca.sync(wait=True, timeout=30)["complete"]

    ops: dict[str, list[tuple[str, bool]]] = {sid: [] for sid in sources}  # per session: import/rm, answered
    copies: dict[str, tuple[str, bool]] = {}  # a fork's or clone's id: its source, answered
    errors: list[BaseException] = []

    def step(c: Client, sid: str, r: int) -> None:
        last = ops[sid][-1] if ops[sid] else None
        if last != ("import", True):  # not here, or maybe (what was asked last was not answered): import it
            ops[sid].append(("import", False))
            c.import_code(codes[sid])
            ops[sid][-1] = ("import", True)
            return
        for kind, new in (("fork", f"f{r}-{sid}"), ("clone", f"c{r}-{sid}")):
            copies[new] = (sid, False)
            if kind == "fork":
                c.fork(sid, c.messages(sid, limit=20)["messages"][9]["id"], new_id=new)
            else:
                c.clone(sid, new_id=new)
            copies[new] = (sid, True)
        if list(sources).index(sid) % 3 != 2:
            ops[sid].append(("rm", False))
            c.delete_session(sid)
            ops[sid][-1] = ("rm", True)

    order = list(sources)

    def work(c: Client, i: int) -> None:  # round after round, each session in turn
        step(c, order[(i - 1) % len(order)], (i - 1) // len(order) + 1)

    killed_while([lambda stop: calls(b.home, work, stop, errors, timeout=20)], [b], KILLS)
    assert not errors, errors

    c = b.client()
    for sid, want in sources.items():
        if _here(c, sid):
            assert _contents(c, sid) == want, sid  # whole
        if ops[sid] and ops[sid][-1][1]:  # the last asked was answered: it stands
            assert _here(c, sid) == (ops[sid][-1][0] == "import"), (sid, ops[sid])
    for new, (src, answered) in copies.items():
        if answered or _here(c, new):
            want = sources[src][:10] if new.startswith("f") else []
            assert _contents(c, new) == want, new
    here = {s["id"] for s in c.list_sessions(limit=1000)["sessions"]}
    assert _key_sessions(b.home) <= here  # no key of a session not here

    for sid in sources:  # what the kills cut short (or `rm` removed) imports again, whole
        if not _here(c, sid):
            c.import_code(codes[sid])
        assert _contents(c, sid) == sources[sid]
    wait_for(
        lambda: run_cli(b.home, "sync", "--wait").returncode == 0 and cli_json(b.home, "verify")["ok"],
        timeout=30,
        what="verify clean",
    )
    assert run_cli(b.home, "doctor", "--json").returncode == 0
    writable = [s for n, s in enumerate(sources) if n % 2 == 0]
    for sid in writable:
        c.append(sid, "user", f"from b {sid}")

    def reached() -> bool:
        ca.sync(wait=True, timeout=10)
        return all(_contents(ca, sid)[-1] == f"from b {sid}" for sid in writable)

    wait_for(reached, timeout=30, what="b's writes reach a")
