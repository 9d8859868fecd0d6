"""kill -9 at random moments of a loop of one-transaction operations on a shared session (appends, a rename,
a compaction and its undo, a chat made and switched to, a checkpoint asked for): after the restarts every
acknowledged message is there once, the name is the last acknowledged one's or one asked after it (answered
or not), every acknowledged checkpoint verifies, verify and doctor are clean, and the other device converges
on the same state. CRASH_KILLS sets how many kills."""

from __future__ import annotations

import os

from conftest import cli_json, run_cli, wait_for
from killing import calls, killed_while, progressing
from sessiond.client import Client
from test_crash_acked import _state

KILLS = int(os.environ.get("CRASH_KILLS", 8))


def test_a_loop_of_operations_killed_at_random_moments_leaves_each_whole_or_absent(make_daemon, store_dir):
    url = f"file://{store_dir}"
    a, b = make_daemon(url).start(), make_daemon(url).start()
    c = a.client()
    sid = c.create_session(name="n-start")["id"]
    main = c.get_session(sid)["current_chat"]
    c.append_many(sid, [{"role": "user", "content": f"pre{i}", "tokens": 10} for i in range(10)])
    b.client().import_code(c.share(sid, write=True)["code"])
    acked: list[str] = [f"pre{i}" for i in range(10)]
    names: list[tuple[str, bool]] = [("n-start", True)]  # each rename asked, and whether it was answered
    proofs: list[dict] = []
    chats: list[tuple[str, bool]] = []
    errors: list[BaseException] = []

    def op(cl: Client, i: int) -> None:
        k = i % 6
        if k == 0:
            cl.append_many(sid, [{"role": "user", "content": f"m{i}.{j}", "tokens": 10} for j in range(3)])
            acked.extend(f"m{i}.{j}" for j in range(3))
        elif k == 1:
            names.append((f"n{i}", False))
            cl.update_session(sid, name=f"n{i}")
            names[-1] = (f"n{i}", True)
        elif k == 2:
            cl.compact(sid, chat=main, target_tokens=30)
        elif k == 3:
            p = cl.checkpoint(sid)
            proofs.append({key: v for key, v in p.items() if key != "made"})
        elif k == 4:
            cl.uncompact(sid, chat=main) if i % 12 == 4 else cl.compact(sid, chat=main, target_tokens=60)
        else:
            chats.append((f"c{i}", False))
            made = cl.create_chat(sid, name=f"c{i}")
            cl.switch_chat(sid, made["id"] if i % 10 else main)
            chats[-1] = (f"c{i}", True)

    def work(cl: Client, i: int) -> None:
        op(cl, i)
        cl.append(sid, "user", f"a{i}")
        acked.append(f"a{i}")

    # (a kill only once the work went on since the last: a loaded machine's restart, ~1 s there, took the whole
    # 0.05-0.4 s before the next kill, which then cut a start, not the work)
    killed_while([lambda stop: calls(a.home, work, stop, errors)], [a], KILLS, between=progressing(acked, errors, 2))
    assert not errors, errors
    assert proofs and len(acked) >= 10 + 2 * KILLS  # two acknowledged a kill at least

    c = a.client()
    got = c.messages(sid, limit=100_000, all_chats=True)["messages"]
    contents = [m["content"] for m in got]
    assert len(contents) == len(set(contents))  # nothing twice
    assert set(acked) <= set(contents)  # nothing acknowledged lost
    last = max(i for i, (_, ok) in enumerate(names) if ok)
    assert c.get_session(sid)["name"] in {n for n, _ in names[last:]}
    listed = {ch["name"] for ch in c.list_chats(sid)["chats"]}
    assert {n for n, ok in chats if ok} <= listed
    for p in proofs:
        assert c.verify_proof(sid, p)["ok"], p
    cli_json(a.home, "sync", "--wait")
    assert cli_json(a.home, "verify")["ok"]
    assert run_cli(a.home, "doctor", "--json").returncode == 0
    want = _state(c, sid)

    def converged() -> bool:
        b.client().sync(sid, wait=True, timeout=10)
        return _state(b.client(), sid) == want

    wait_for(converged, timeout=30, what="the other device converges on the state after the kills")
    for p in proofs:
        assert b.client().verify_proof(sid, p)["ok"], p
    assert cli_json(b.home, "verify")["ok"]
