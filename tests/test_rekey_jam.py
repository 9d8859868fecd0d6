"""A rekey notice no device takes (a writer wrote it naming another member as its author, whose head does
not claim it: docs/SECURITY.md, "A writer and the rekey") stays in the members slot: no device pulls past
it, none can rekey past it, and no share code of the slot imports, a new one neither. Each place that
says so names the way on that works, a new session (`sessiond fork`, then a share code of the fork), and
why; before, they said to ask for a new share code, which names the same slot and cannot help. Real
daemons and the real CLI, one file:// store; the forger is writer D's own keys used on the store."""

from __future__ import annotations

import asyncio
import json
import re

import pytest

from conftest import cli_json, run_cli
from test_rekey_forgery import _device, _forge, _messages, _three_writers


def names_the_fork(text: str, sid: str) -> bool:
    """Whether `text` names the fork of `sid` and sharing it (the CLI gives the commands it quotes --home)."""
    home = r"(--home \S+ )?"
    return bool(re.search(rf"sessiond fork {home}{sid} --at", text) and re.search(rf"sessiond share {home}NEW", text))


@pytest.mark.parametrize("author", ["a writer that made no rekey", "no member"])
def test_every_message_of_a_notice_no_device_takes_names_the_fork_as_the_way_on(make_daemon, store_dir, author):
    r, k, d, sid = _three_writers(make_daemon, store_dir)
    d_id = _device(d)
    d.stop()
    # D writes a notice leaving K out, naming R as its author (R made no rekey, so its head claims nothing),
    # or naming no device of the session
    named = _device(r) if author.startswith("a writer") else "not-a-device-of-the-session"
    why = "does not claim it" if author.startswith("a writer") else "device of the session as its author"
    asyncio.run(_forge(store_dir, d.home, sid, author=named, claim=False, leave_out=_device(k)))
    for dev in (k, r):  # left out (K) and boxed (R): the pull's error, in `sync --wait` and `status`
        res = run_cli(dev.home, "sync", "--wait", sid, "--json")
        err = json.loads(res.stdout)["sessions"][sid]["pull_error"]
        assert why in err and names_the_fork(err, sid), err
        assert "new share code" not in err.replace("a new share code of", ""), err
        assert cli_json(dev.home, "status")["sync"][sid]["pull_error"] == err
        # doctor: the finding's fix is the fork (once a look again shows the notice stays)
        report = json.loads(run_cli(dev.home, "doctor", "--json").stdout)
        found = [f for f in report["findings"] if f["check"] == "pull" and sid in f["message"]]
        assert found and names_the_fork(found[0]["fix"], sid), report
        assert "import a new share code" not in found[0]["fix"], found
    # R cannot rekey past it: the refusal says why (no device's head claims the notice) and the way on
    res = run_cli(r.home, "rekey", sid, "--drop", d_id)
    assert res.returncode != 0
    assert why in res.stderr and names_the_fork(res.stderr, sid), res.stderr
    assert "takes that key at its next pull" not in res.stderr, res.stderr
    # a new device given a code of the session: refused, saying why, and that a new code cannot help
    n = make_daemon("file://" + store_dir).start()
    code = cli_json(r.home, "share", sid, "--write")["code"]
    res = run_cli(n.home, "import", "--json", input=code)
    assert res.returncode != 0
    assert why in res.stderr and names_the_fork(res.stderr, sid), res.stderr
    assert "ask for a new code" not in res.stderr, res.stderr
    assert json.loads(res.stdout)["error"]["code"] == "rekey_unconfirmed", res.stdout
    # and the way on works: R forks the session at its last message and shares the fork, which imports
    last = r.client().messages(sid, limit=10_000)["messages"][-1]["id"]
    fork = cli_json(r.home, "fork", sid, "--at", last)["id"]
    code = cli_json(r.home, "share", fork, "--write")["code"]
    assert cli_json(n.home, "import", input=code)["session"] == fork
    assert {"before the rekey", "K joins", "D joins"} <= set(_messages(n, fork))


def test_a_notice_naming_no_author_may_be_an_older_sessionds_rekey_and_says_both_ways(make_daemon, store_dir):
    """A notice with no author at all, as sessiond before claims wrote them: a real rekey by an older
    sessiond (a new code from a device that took it then imports), or a writer's (then only the fork helps):
    the pull's error names both."""
    r, k, d, sid = _three_writers(make_daemon, store_dir)
    d.stop()
    asyncio.run(_forge(store_dir, d.home, sid, author=None, claim=False, leave_out=_device(k)))
    for dev, who in ((k, "the rekey kept"), (r, "took it")):
        res = run_cli(dev.home, "sync", "--wait", sid, "--json")
        err = json.loads(res.stdout)["sessions"][sid]["pull_error"]
        assert "older sessiond" in err and f"new share code from a device that {who}" in err, err
        assert names_the_fork(err, sid), err


def test_a_code_of_a_slot_whose_notice_names_no_author_says_a_new_code_may_import(make_daemon, store_dir):
    """A code of a slot holding a notice with no author (an older sessiond's rekey, or a writer's): the import's
    refusal names both ways, as the pull's does; before, it said that no share code gets past it, though a
    new code from a device that took an older sessiond's rekey names the new slot and imports."""
    r, k, d, sid = _three_writers(make_daemon, store_dir)
    d.stop()
    asyncio.run(_forge(store_dir, d.home, sid, author=None, claim=False, leave_out=_device(k)))
    n = make_daemon("file://" + store_dir).start()
    code = cli_json(r.home, "share", sid, "--write")["code"]
    res = run_cli(n.home, "import", "--json", input=code)
    assert res.returncode != 0
    assert json.loads(res.stdout)["error"]["code"] == "rekey_unconfirmed", res.stdout
    assert "older sessiond" in res.stderr and "new share code from a device that" in res.stderr, res.stderr
    assert "no share code of it gets past" not in res.stderr, res.stderr
    assert names_the_fork(res.stderr, sid), res.stderr
