"""Crash test: appends and sync from several clients while daemons are killed with SIGKILL at random
moments; afterwards every acknowledged message is present exactly once on every device, and verify
passes. CRASH_KILLS sets how many kills (CI: 20; `make test-long`: 200)."""

from __future__ import annotations

import os

from conftest import cli_json, wait_for
from killing import calls, killed_while

KILLS = int(os.environ.get("CRASH_KILLS", 20))  # make test; make test-long: 200


def test_kill_9_during_appends_pushes_and_pulls(make_daemon, store_dir):
    url = "file://" + store_dir
    a, b = make_daemon(url).start(), make_daemon(url).start()
    sid = a.client().create_session(name="crash")["id"]
    b.client().import_code(a.client().share(sid, write=True)["code"])
    acked: dict[str, list[str]] = {"a": [], "b": []}
    errors: list[BaseException] = []

    def appender(name: str, d):
        def append(c, i: int) -> None:
            text = f"{name}-{i}"
            if i % 7 == 0:
                c.append_many(sid, [{"role": "user", "content": f"{text}.{k}"} for k in range(5)])
                acked[name].extend(f"{text}.{k}" for k in range(5))
            else:
                c.append(sid, "user", text)
                acked[name].append(text)

        return lambda stop: calls(d.home, append, stop, errors)

    killed_while([appender("a", a), appender("b", b)], [a, b], KILLS, hi=0.5)
    assert not errors, errors
    everything = sorted(acked["a"] + acked["b"])
    assert len(everything) > KILLS  # the clients did get work done between kills

    last: dict = {}

    def everything_on(d) -> list[str]:
        out, after = [], None
        with d.client() as c:
            while True:
                page = c.messages(sid, limit=100_000, after=after)
                out += [m["content"] for m in page["messages"]]
                after = page["next"]
                if not after:
                    return out

    def converged() -> bool:
        for name, d in (("a", a), ("b", b)):
            last[name + "_sync"] = d.client().sync(wait=True, timeout=10)
        logs = [everything_on(d) for d in (a, b)]
        last["missing_a"] = sorted(set(everything) - set(logs[0]))[:10]
        last["missing_b"] = sorted(set(everything) - set(logs[1]))[:10]
        last["only_a"] = sorted(set(logs[0]) - set(logs[1]))[:10]
        last["only_b"] = sorted(set(logs[1]) - set(logs[0]))[:10]
        return logs[0] == logs[1] and set(everything) <= set(logs[0])

    try:
        wait_for(converged, timeout=60, interval=0.5)
    except AssertionError:
        raise AssertionError(f"did not converge: {last}") from None
    contents = everything_on(a)
    assert len(contents) == len(set(contents))  # nothing twice
    assert set(everything) <= set(contents)  # every acknowledged message, on both devices
    for d in (a, b):
        rep = cli_json(d.home, "verify")
        assert rep["ok"], rep
