"""kill -9 at random moments while pushes, `gc --grace 0` and `rm` run together (gc frees what no head names,
while pushes put pages and let old manifests and merged pages go): after the restarts nothing a head names
was freed, so every acknowledged message is there on this device, on a follower, and on a device importing
each session afresh (which reads every page from the store), after one more gc too; verify and doctor are
clean. CRASH_KILLS sets how many kills."""

from __future__ import annotations

import os

from conftest import cli_json, run_cli, wait_for
from killing import calls, killed_while

KILLS = int(os.environ.get("CRASH_KILLS", 8))


def _contents(d, sid: str) -> list[str]:
    return [m["content"] for m in d.client().messages(sid, limit=100_000)["messages"]]


def test_pushes_gc_and_rm_killed_at_random_moments_free_nothing_a_head_names(make_daemon, store_dir):
    url = f"file://{store_dir}"
    a, b = make_daemon(url).start(), make_daemon(url).start()
    ca = a.client()
    sids = [ca.create_session(name=f"s{n}")["id"] for n in range(3)]
    codes = {}
    for sid in sids:
        ca.append(sid, "user", f"{sid}-first")
        codes[sid] = ca.share(sid)["code"]
        b.client().import_code(codes[sid])
    acked: dict[str, list[str]] = {sid: [f"{sid}-first"] for sid in sids}
    errors: list[BaseException] = []

    def append(c, i: int) -> None:
        sid = sids[i % len(sids)]
        texts = [f"{sid}-{i}.{j} " + "x" * 200 for j in range(1 + i % 5)]
        c.append_many(sid, [{"role": "user", "content": t} for t in texts])
        acked[sid].extend(texts)
        if i % 3 == 0:
            c.sync(sid, wait=True, timeout=10)

    def collect(c, i: int) -> None:
        c.gc(grace=0)
        if i % 2 == 0:  # a session made, pushed and removed: its objects are gc's too
            gone = c.create_session(name=f"gone{i}")["id"]
            c.append(gone, "user", "short-lived")
            c.sync(gone, wait=True, timeout=10)
            c.delete_session(gone)

    killed_while(
        [lambda stop, w=w: calls(a.home, w, stop, errors, timeout=20) for w in (append, collect)],
        [a],
        KILLS,
        lo=0.1,
        hi=0.5,
    )
    assert not errors, errors

    mine = {sid: _contents(a, sid) for sid in sids}
    for sid in sids:
        assert len(mine[sid]) == len(set(mine[sid])) and set(acked[sid]) <= set(mine[sid]), sid
    assert cli_json(a.home, "sync", "--wait")
    cli_json(a.home, "gc", "--grace", "0")  # and once more, all quiet
    assert cli_json(a.home, "verify")["ok"]
    assert run_cli(a.home, "doctor", "--json").returncode == 0

    def followed() -> bool:
        b.client().sync(wait=True, timeout=10)
        return all(_contents(b, sid) == mine[sid] for sid in sids)

    wait_for(followed, timeout=30, what="the follower has every session whole")
    assert cli_json(b.home, "verify")["ok"]
    c = make_daemon(url).start()  # every page read from the store
    for sid in sids:
        c.client().import_code(codes[sid])
        assert _contents(c, sid) == mine[sid], sid
