"""Progress on long work (issue 18): under a terminal, `verify`, `import` and `sync --wait` draw a bar
on standard error from the daemon's `progress` events; with a pipe nothing is drawn; --json output
stays valid JSON."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess

import pytest

from conftest import PY, DaemonProc, run_cli
from sessiond.storage.database import Database
from sessiond.stores import FileStore
from sessiond.sync.engine import Syncer


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    d = DaemonProc(str(tmp_path_factory.mktemp("prog") / "home")).start()
    c = d.client()
    sid = c.create_session(name="big")["id"]
    c.append_many(sid, [{"role": "user", "content": f"message {i} " + "x" * 200} for i in range(3000)])
    assert c.sync(sid, wait=True, timeout=30)["complete"]
    yield d, sid
    d.stop()


def under_terminal(home: str, *args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    """Run the CLI with standard error on a pseudo-terminal and standard output on a pipe."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [PY, "-m", "sessiond.cli.main", *args, "--home", home],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=slave,
        env={**os.environ, "TERM": "xterm-256color", "COLUMNS": "100"},
    )
    os.close(slave)
    out, _ = proc.communicate(stdin, timeout=60)
    err = b""
    while True:
        try:
            chunk = os.read(master, 1 << 16)
        except OSError:  # EIO: the terminal's other end is closed and drained
            break
        if not chunk:
            break
        err += chunk
    os.close(master)
    return proc.returncode, out.decode(), err.decode(errors="replace")


BAR = "━"  # rich's bar


def test_verify_draws_a_bar_on_a_terminal_and_json_stays_clean(big):
    d, sid = big
    code, out, err = under_terminal(d.home, "verify", sid, "--json")
    assert code == 0, err
    assert json.loads(out)["ok"]  # standard output: the JSON alone
    assert BAR in err and f"verify {sid}" in err
    assert re.search(r"\b(\d{4})/\1\b", re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", err))  # ends complete: N/N


def test_no_bar_through_a_pipe(big):
    d, sid = big
    res = run_cli(d.home, "verify", sid)
    assert res.returncode == 0 and res.stderr == "" and BAR not in res.stdout
    res = run_cli(d.home, "sync", sid, "--wait", "--json")
    assert res.returncode == 0 and res.stderr == "" and json.loads(res.stdout)["complete"]


def test_import_draws_a_bar(big, make_daemon):
    d, sid = big
    code_text = d.client().share(sid)["code"]
    other = make_daemon(os.path.join(d.home, "store")).start()
    code, out, err = under_terminal(other.home, "import", stdin=code_text.encode())
    assert code == 0, err
    assert out.strip() == sid and BAR in err and f"import {sid}" in err


async def test_a_first_push_of_a_large_session_reports_progress(tmp_path):
    """The push's own progress (a long run written by the worker threads), as the daemon publishes it
    for `sync --wait`: forward only, ending at the total."""
    db = await Database.open(str(tmp_path / "a.db"))
    events: list[dict] = []
    a = Syncer(db, FileStore(str(tmp_path / "store")), str(tmp_path / "keys"), push_delay=0, on_event=events.append)
    try:
        sid = (await db.create_session({}))["id"]
        await db.append_messages(sid, [{"role": "user", "content": f"{i} " + "y" * 300} for i in range(5000)])
        await a.push(sid)
        done = [e["done"] for e in events if e["type"] == "progress" and e["task"] == "push" and e["session"] == sid]
        total = await db.last_seq(sid)
        assert done and done == sorted(done) and done[-1] == total, done
        assert {e["total"] for e in events if e["type"] == "progress"} == {total}
    finally:
        await a.stop()
        await db.close()


def test_import_file_draws_a_bar(big, tmp_path):
    d, _ = big
    path = tmp_path / "long.json"  # an OpenAI messages file long enough to go in as several appends
    path.write_text(json.dumps({"messages": [{"role": "user", "content": f"line {i}"} for i in range(12000)]}))
    code, out, err = under_terminal(d.home, "import-file", str(path), "--json")
    assert code == 0, err
    assert json.loads(out)["sessions"][0]["message_count"] == 12000
    assert BAR in err and "import-file" in err
    assert "12000/12000" in re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", err)


def test_export_reads_in_pages_keeps_the_order_and_draws_a_bar(big):
    d, _ = big
    c = d.client()
    sid = c.create_session(name="two chats")["id"]
    c.create_chat(sid, id="b", name="b")
    for k in range(6):  # 12,000 messages, the two chats interleaved in the session's order
        c.append_many(sid, [{"role": "user", "content": f"{k} main {i}"} for i in range(1000)], chat="main")
        c.append_many(sid, [{"role": "user", "content": f"{k} b {i}"} for i in range(1000)], chat="b")
    code, out, err = under_terminal(d.home, "export", sid)
    assert code == 0, err
    msgs = json.loads(out)["messages"]
    assert [m["content"] for m in msgs] == [
        f"{k} {chat} {i}" for k in range(6) for chat in ("main", "b") for i in range(1000)
    ]  # the session's order across chats, as one read gave it
    assert BAR in err and f"export {sid}" in err
    assert "12000/12000" in re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", err)
    code, out, err = under_terminal(d.home, "export", sid, "--format", "openai", "--chat", "b")
    assert code == 0, err
    assert [m["content"] for m in json.loads(out)["messages"]] == [f"{k} b {i}" for k in range(6) for i in range(1000)]
