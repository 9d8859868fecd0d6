"""kill -9 of either device at random moments while A forks and clones a shared session again and again and
B appends to it: each fork or clone A answered is listed whole (a fork holds the history to its message, a
clone the settings and no message), one the kill cut short is whole or absent (never listed but empty,
or missing its messages), nothing else appears, and the shared session converges on both devices with every
acknowledged message once; verify and doctor are clean on both. CRASH_KILLS sets how many kills."""

from __future__ import annotations

import os

from killing import calls, contents, converge, killed_while
from sessiond.client import Client

KILLS = int(os.environ.get("CRASH_KILLS", 7))
PRE = 10


def test_forks_and_clones_of_a_shared_session_killed_at_random_moments_are_whole_or_absent(make_daemon, store_dir):
    url = f"file://{store_dir}"
    a, b = make_daemon(url).start(), make_daemon(url).start()
    ca = a.client()
    sid = ca.create_session(name="forked")["id"]
    ca.append_many(sid, [{"role": "user", "content": f"pre{i}"} for i in range(PRE)])
    pre = ca.messages(sid, limit=PRE)["messages"]
    b.client().import_code(ca.share(sid, write=True)["code"])
    acked: list[str] = [m["content"] for m in pre]
    copies: dict[str, tuple[int | None, bool]] = {}  # id: the pre message it forks at (None: a clone), answered
    errors: list[BaseException] = []

    def append(c: Client, i: int) -> None:
        c.append(sid, "user", f"b{i}")
        acked.append(f"b{i}")

    def copy(c: Client, i: int) -> None:
        at = None if i % 2 else i % PRE
        new = f"{'c' if at is None else 'f'}{i}-{sid}"
        copies[new] = (at, False)
        if at is None:
            c.clone(sid, new_id=new)
        else:
            c.fork(sid, pre[at]["id"], new_id=new)
        copies[new] = (at, True)
        c.append(sid, "user", f"a{i}")
        acked.append(f"a{i}")

    killed_while(
        [lambda stop: calls(b.home, append, stop, errors, timeout=20), lambda stop: calls(a.home, copy, stop, errors)],
        [a, b],
        KILLS,
    )
    assert not errors, errors
    assert copies

    converge([a, b], sid, acked)
    here = {s["id"] for s in a.client().list_sessions(limit=1000)["sessions"]}
    assert here - {sid} <= set(copies), here - {sid} - set(copies)  # nothing else appeared
    for new, (at, answered) in copies.items():
        if not answered and new not in here:
            continue  # cut short before it was made: absent
        assert new in here, new
        got = contents(a, new)
        if at is not None:
            assert got == [m["content"] for m in pre[: at + 1]], (new, got)
        else:  # the settings, no conversation (README, `sessiond clone`)
            assert got == [] and a.client().get_session(new)["name"] == "forked", (new, got)
