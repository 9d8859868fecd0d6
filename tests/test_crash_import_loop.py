"""kill -9 at random moments of a device importing share codes again and again (each session removed here now
and then and imported once more, its own messages with it): a session the kill cut short is here whole or
not at all, never half (checked after every restart), an import asked again (or the restart) brings it whole,
every acknowledged message of this device's is there after its re-import, and the sessions converge on both
devices, verify and doctor clean; a device importing each code afresh gets it whole. CRASH_KILLS sets how
many kills."""

from __future__ import annotations

import os
import time

from conftest import wait_for
from killing import calls, converge, killed_while
from sessiond.client import ApiError, Client

KILLS = int(os.environ.get("CRASH_KILLS", 8))
N = 3


def _here(d, sids: list[str]) -> dict[str, list[str]]:
    """Each of `sids` the daemon `d` lists: its messages' contents, in its order."""
    out = {}
    with Client(d.home) as c:
        listed = {s["id"] for s in c.list_sessions(limit=1000)["sessions"]}
        for sid in sids:
            if sid in listed:
                try:
                    out[sid] = [m["content"] for m in c.messages(sid, limit=100_000)["messages"]]
                except ApiError as exc:  # removed meanwhile (the worker's `rm`)
                    if exc.status != 404:
                        raise
    return out


def test_imports_killed_at_random_moments_leave_each_session_whole_or_absent(make_daemon, store_dir):
    url = f"file://{store_dir}"
    a, b = make_daemon(url).start(), make_daemon(url).start()
    ca = a.client()
    sids, codes, pre = [], {}, {}
    for n in range(N):
        sid = ca.create_session(name=f"imported{n}")["id"]
        for k in range(4):  # several pushes: pages of its log
            ca.append_many(sid, [{"role": "user", "content": f"{n}.{k}.{j} " + "x" * 300} for j in range(40)])
            ca.sync(sid, wait=True)
        ca.checkpoint(sid)
        sids.append(sid)
        codes[sid] = ca.share(sid, write=True)["code"]
        pre[sid] = [m["content"] for m in ca.messages(sid, limit=100_000)["messages"]]
    acked: dict[str, list[str]] = {sid: list(pre[sid]) for sid in sids}
    errors: list[BaseException] = []
    halves: list = []
    imports = [0, 0]  # asked, answered

    def work(c: Client, i: int) -> None:
        sid = sids[i % N]
        if i % 2 == 0:  # removed here, every message of this device's pushed first
            try:
                c.delete_session(sid)
            except ApiError as exc:
                if exc.status != 404:
                    raise
            imports[0] += 1
            c.import_code(codes[sid])
            imports[1] += 1
        elif i % 4 == 1 or sid not in {s["id"] for s in c.list_sessions(limit=1000)["sessions"]}:
            imports[0] += 1
            c.import_code(codes[sid])  # asked again (else the restart alone finishes one the kill cut short)
            imports[1] += 1
        c.append(sid, "user", f"b{i}")
        acked[sid].append(f"b{i}")

    since_kill = [0]

    def whole_or_absent(k: int, rnd) -> None:
        """After each restart (and the first time, before any kill): each session here holds all A wrote,
        in A's order. Then the next kill once an import was answered since the last, at a random moment
        after it: on a loaded machine an import outlasted every 0.05-0.4 s between a restart and the next
        kill (a red run: 323 imports asked, 1 answered), so the loop only ever cut the first of them."""
        whole_here(k)
        wait_for(lambda: errors or imports[1] > since_kill[0], timeout=60, what="an import answered")
        since_kill[0] = imports[1]
        time.sleep(rnd.uniform(0, 0.3))  # the scenario: a kill at a random moment of the work after it

    def whole_here(k: int) -> None:
        try:
            here = _here(b, sids)
        except (OSError, ApiError) as exc:  # the daemon just started: a call refused is not a half session
            return halves.append(("unreadable", repr(exc))) if isinstance(exc, ApiError) else None
        for sid, log in here.items():
            if [m for m in log if not m.startswith("b")] != pre[sid]:
                halves.append((k, sid, len(log), len(pre[sid])))

    killed_while([lambda stop: calls(b.home, work, stop, errors, timeout=30)], [b], KILLS, between=whole_or_absent)
    assert not errors, errors
    assert not halves, halves
    assert imports[1] >= N, imports

    for sid in sids:  # asked again: whole
        b.client().import_code(codes[sid])
        converge([a, b], sid, acked[sid])
    c = make_daemon(url).start()
    for sid in sids:
        c.client().import_code(codes[sid])
        wait_for(lambda sid=sid: _here(c, [sid]) == _here(a, [sid]), timeout=30, what="a fresh import whole")
