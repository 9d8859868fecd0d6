"""kill -9 part-way through `share` and `import`: each writes key files, then database rows, then the
session's members slot in the store, and a crash between them must leave nothing that stays half-made.
After the restart the daemon finishes what the crash cut short (this device listed in the members slot),
without the user running anything: verify and doctor are clean, a code made now imports, a rekey keeps
this device, and the devices converge. SESSIOND_CRASH_AT names the point where the daemon dies."""

from __future__ import annotations

import asyncio
import json

import pytest

from conftest import run_cli, wait_for
from sessiond.stores.file import FileStore
from sessiond.sync.members import announce_key
from sessiond.sync.sharecode import decode


def _messages(d, sid: str) -> list[str]:
    return [m["content"] for m in d.client().messages(sid, limit=10_000)["messages"]]


def _killed_at(d, point: str, *args: str, input: str | None = None) -> None:
    """Run `sessiond ARGS` on `d` with the daemon set to die at `point`, then start it again."""
    d.env["SESSIOND_CRASH_AT"] = point
    d.restart()
    res = run_cli(d.home, *args, "--json", input=input)
    assert res.returncode != 0, res.stdout  # the daemon died answering it: not acknowledged
    d.proc.wait(10)
    d.env.pop("SESSIOND_CRASH_AT")
    d.start()


def _clean(d) -> bool:
    """verify and doctor both clean. A verify that finds a problem exits non-zero with its report: that is
    "not yet" to a poll, not an error (cli_json, which checks the exit, failed the poll at its first look
    when it came before the restart's push had listed this device in the members slot)."""
    res = run_cli(d.home, "verify", "--json")
    if not json.loads(res.stdout)["ok"]:
        return False
    assert res.returncode == 0, res.stdout
    return run_cli(d.home, "doctor", "--json").returncode == 0


@pytest.mark.parametrize("point", ["share:secret", "share:remote", "share:member"])
def test_a_share_killed_part_way_is_finished_at_the_next_start(make_daemon, store_dir, point):
    """`share` makes the write secret, then records the session as shared, then writes its members slot:
    killed after the record and before the slot, the session was shared with no slot in the store, and
    verify and doctor said so ("the store has no members entry") until the user ran `sessiond sync`."""
    url = f"file://{store_dir}"
    a, b = make_daemon(url).start(), make_daemon(url).start()
    sid = a.client().create_session(name="to share")["id"]
    a.client().append_many(sid, [{"role": "user", "content": f"m{i}"} for i in range(10)])
    _killed_at(a, point, "share", sid, "--write")
    wait_for(lambda: _clean(a), timeout=20, what="verify and doctor clean after the restart, with no sync asked")
    b.client().import_code(a.client().share(sid, write=True)["code"])
    b.client().append(sid, "assistant", "from B")
    a.client().append(sid, "user", "from A")
    wait_for(lambda: "from B" in _messages(a, sid) and "from A" in _messages(b, sid), timeout=30)
    assert _messages(a, sid) == _messages(b, sid)
    assert _clean(a) and _clean(b)


def test_a_write_import_killed_before_joining_the_members_is_a_member_after_the_restart(make_daemon, store_dir):
    """A write import applies the code's logs, then adds this device to the session's members slot: killed
    between the two, the session was there (access "write", verify and doctor clean) but this device was
    no member, so the owner's next rekey, which keeps exactly the members, left it out without a word, and
    it never saw another message written on the session."""
    url = f"file://{store_dir}"
    a, b = make_daemon(url).start(), make_daemon(url).start()
    sid = a.client().create_session(name="to import")["id"]
    a.client().append_many(sid, [{"role": "user", "content": f"m{i}"} for i in range(10)])
    code = a.client().share(sid, write=True)["code"]
    slot = FileStore(store_dir), b"\xed" + decode(code).announce_pk
    # A's write of the slot, read before B's import: B, started again at once, may list itself before the
    # test looks, and a revision read after that would never be passed
    written = asyncio.run(slot[0].get_head(slot[1])).revision
    _killed_at(b, "import:applied", "import", input=code)
    assert b.client().get_session(sid)["access"] == "write"  # the import's transaction was committed
    assert _messages(b, sid) == [f"m{i}" for i in range(10)]

    def member() -> bool:  # B writes the slot again, listing itself
        return asyncio.run(slot[0].get_head(slot[1])).revision > written

    wait_for(member, timeout=20, what="B adding itself to the members slot after its restart, no command run")
    res = a.client().rekey(sid)
    assert len(res["kept"]) == 1, res  # B kept through the rekey
    a.client().append(sid, "user", "after the rekey")
    wait_for(lambda: "after the rekey" in _messages(b, sid), timeout=30)
    b.client().append(sid, "assistant", "B on the new key")
    wait_for(lambda: "B on the new key" in _messages(a, sid), timeout=30)
    assert _messages(a, sid) == _messages(b, sid)
    assert _clean(a) and _clean(b)


def _announced(d, sid: str) -> int:
    """remotes.announced of `sid` in `d`'s database (read with the daemon stopped)."""
    import sqlite3

    con = sqlite3.connect(f"file:{d.home}/sessions.db?mode=ro", uri=True)
    try:
        return con.execute("SELECT announced FROM remotes WHERE session_id=?", (sid,)).fetchone()[0]
    finally:
        con.close()


def test_a_writer_found_already_listed_in_the_members_slot_is_noted_as_announced(make_daemon, store_dir):
    """A write import on a device the members slot already lists (it had imported the session before,
    deleted it, and imports the code again: its head key is the same) found itself there and wrote
    nothing, but left remotes.announced at 0: every start then resumed a push of the session to list it,
    found it listed again, and noted nothing, start after start. It is noted as announced when found."""
    url = f"file://{store_dir}"
    a, b = make_daemon(url).start(), make_daemon(url).start()
    sid = a.client().create_session(name="shared")["id"]
    a.client().append(sid, "user", "hello")
    code = a.client().share(sid, write=True)["code"]
    b.client().import_code(code)
    b.client().delete_session(sid)
    b.client().import_code(code)  # listed already: nothing to write in the slot
    b.client().sync(sid, wait=True)
    b.stop()
    assert _announced(b, sid) == 1
    b.start()
    b.client().append(sid, "assistant", "from B")
    wait_for(lambda: "from B" in _messages(a, sid), timeout=30)


async def test_verify_tells_a_writer_not_listed_yet_that_its_own_sync_writes_the_slot(devices):
    """A share cut short between its record and its members slot (killed, or the store failing the slot's
    write) left a session this device writes with no slot in the store. Verify's repair sent the user to
    "`sessiond sync` on a device that wrote it": no device had, and this one's sync is what writes it."""
    a, _ = await devices.open()
    db = devices.dba
    sid = (await db.create_session({"name": "cut short"}))["id"]
    await db.append_messages(sid, [{"role": "user", "content": "hello"}])
    await a.push(sid)
    ws = await a.keys.make_write_secret(sid)
    await db.add_remote(sid, None, bytes(announce_key(ws).verify_key))  # as `share` does, then no slot
    (s,) = (await a.verify(sid))["sessions"]
    assert any(p.startswith("members: the store has no members entry") for p in s["problems"]), s
    assert s["repair"] == "`sessiond sync` on this device writes the session's members slot, listing it", s
    await a.push(sid)  # what `sessiond sync` asks for: the push lists this device
    assert (await a.verify(sid))["ok"]
