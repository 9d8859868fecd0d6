"""A device a rekey left out keeps what it wrote after the rekey read its log: held here only (the revocation
says so once, at the pull that learns it), sent with its log once a new code is imported. `rm` (and the
clean-up, and an expiry's delete) of that revoked session deleted those messages silently, though they exist
on no other device. The revocation's word on how far the rekey read this device's log is now kept with the
session: `rm` refuses without --force, naming how many messages are held here only and the ways on, the
clean-up keeps it (`kept`, with why), `show` and the API name the count, and a new code imported clears it.
Two real daemons on one folder store (the fixtures of test_revoked_access.py and test_rm_unpushed.py)."""

from __future__ import annotations

import json
import os
import time

import pytest

from conftest import DaemonProc, cli_json, run_cli, wait_for, write_config
from sessiond.client import ApiError
from test_damaged_log_named import _damage_manifest
from test_revoked_access import contents, shared


def _dropped_after_writing(
    tmp_path, late: int = 2, *, damaged: bool = False, **config
) -> tuple[DaemonProc, DaemonProc, str, list[dict]]:
    """A's session shared with B; A drops B (unshare --device) while B, not knowing, writes `late` messages
    (pushed to its old log, which no device reads now); B's pull then learns it: (a, b, sid, the late ones).
    `damaged`: B's manifest damaged in the store before, so that A cannot freeze B's log. `config`: more of
    B's config; with `idle_timeout`, the session's (A makes it with that one)."""
    store = str(tmp_path / "store")
    url = "file://" + store
    a = DaemonProc(str(tmp_path / "a"), url).start()
    b = DaemonProc(str(tmp_path / "b"), url)
    idle = config.pop("idle_timeout", None)
    write_config(b.home, poll_interval=3600, sync_interval=3600, **config)  # B pulls when asked (`sync`)
    b.start()
    cb = b.client()
    if idle is None:
        sid = shared(a, b)
    else:
        sid = a.client().create_session(name="shared", idle_timeout=idle)["id"]
        cb.import_code(a.client().share(sid, write=True)["code"])
    cb.append(sid, "assistant", "B early")
    cb.sync(wait=True)
    wait_for(lambda: "B early" in contents(a, sid), timeout=15)
    if damaged:
        _damage_manifest(store, b.home, sid)
    cli_json(a.home, "unshare", sid, "--device", cli_json(b.home, "status")["device_id"])
    written = [cb.append(sid, "user", f"late {i}") for i in range(1, late + 1)]
    wait_for(lambda: cb.status()["sync"][sid]["pending"] == 0, timeout=15, what="B's push of them")
    said = run_cli(b.home, "sync", "--wait")
    assert "rekeyed without this device" in said.stdout + said.stderr, said
    assert cb.get_session(sid)["access"] == "revoked"
    return a, b, sid, written


def test_rm_of_a_revoked_session_refuses_to_drop_what_is_held_here_only(tmp_path):
    a, b, sid, late = _dropped_after_writing(tmp_path)
    try:
        cb = b.client()
        # show and the API name them
        got = cb.get_session(sid)
        assert got["held_here"] == {"messages": 2, "changes": 0, "known": True}, got
        shown = run_cli(b.home, "show", sid, check=True).stdout
        assert "held here:" in shown and "2 messages" in shown, shown

        res = run_cli(b.home, "rm", sid)
        assert res.returncode == 1, res.stdout + res.stderr
        said = res.stderr
        assert "2 messages" in said and "held here only" in said, said
        assert "new share code" in said and f"sessiond import --home {b.home}" in said, said
        assert f"sessiond rm --home {b.home} {sid} --force" in said, said
        with pytest.raises(ApiError) as e:
            cb.delete_session(sid)
        assert (e.value.status, e.value.code) == (409, "held_here"), e.value
        assert contents(b, sid)[-2:] == ["late 1", "late 2"]  # nothing changed

        # the clean-up keeps it, saying why (a dry run too)
        would = cb.cleanup(0, dry_run=True)
        assert sid not in [s["id"] for s in would["sessions"]], would
        assert [s["id"] for s in would["kept"]] == [sid] and "held here only" in would["kept"][0]["reason"], would
        done = cb.cleanup(0)
        assert [s["id"] for s in done["kept"]] == [sid] and "held here only" in done["kept"][0]["reason"], done
        assert sid in [s["id"] for s in cb.list_sessions()["sessions"]]

        # kept across a restart, with no pull since
        b.stop()
        b.start()
        cb = b.client()
        assert cb.get_session(sid)["held_here"]["messages"] == 2
        assert run_cli(b.home, "rm", sid).returncode == 1

        # a new code imported sends them, and the session is no longer holding anything only here
        code = run_cli(a.home, "share", sid, "--write", check=True).stdout.strip()
        run_cli(b.home, "import", input=code + "\n", check=True)
        assert "held_here" not in cb.get_session(sid)
        cb.sync(wait=True)
        wait_for(lambda: contents(a, sid)[-2:] == ["late 1", "late 2"], timeout=15)
        out = cli_json(b.home, "rm", sid)  # (its log as the rekey froze it kept in the store: named)
        assert out["deleted"] == sid and "froze" in out["kept_in_store"]["why"], out
    finally:
        a.stop()
        b.stop()


def test_rm_force_gives_them_up_and_a_revoked_session_holding_nothing_here_only_is_deleted(tmp_path):
    a, b, sid, _ = _dropped_after_writing(tmp_path, late=1)
    try:
        cb = b.client()
        out = cli_json(b.home, "rm", sid, "--force")  # (still left out: every candidate kept, named)
        assert out["deleted"] == sid and "cannot read that slot" in out["kept_in_store"]["why"], out
        assert sid not in [s["id"] for s in cb.list_sessions()["sessions"]]

        # dropped with nothing written after the rekey read its log: nothing held here only, deleted as before
        other = shared(a, b)
        cli_json(a.home, "unshare", other, "--device", cli_json(b.home, "status")["device_id"])
        run_cli(b.home, "sync", "--wait")
        got = cb.get_session(other)
        assert got["access"] == "revoked" and "held_here" not in got, got
        assert cli_json(b.home, "rm", other) == {"deleted": other}
    finally:
        a.stop()
        b.stop()


def test_a_revocation_that_does_not_say_how_far_it_read_keeps_every_write_of_this_device(tmp_path):
    """The rekeying device could not freeze B's log (its manifest damaged): the notice names no seq for B, and
    B cannot know which of its writes the kept devices hold. `rm` refuses, saying so, and counts what B wrote."""
    a, b, sid, _ = _dropped_after_writing(tmp_path, late=0, damaged=True)
    try:
        cb = b.client()
        got = cb.get_session(sid)
        assert got["held_here"] == {"messages": 1, "changes": 0, "known": False}, got
        res = run_cli(b.home, "rm", sid)
        assert res.returncode == 1, res.stdout
        assert "does not say how far" in res.stderr and "1 message" in res.stderr, res.stderr
        assert "does not say how far" in run_cli(b.home, "show", sid, check=True).stdout
    finally:
        a.stop()
        b.stop()


def test_doctor_names_a_revoked_session_s_writes_held_here_only_after_a_restart(tmp_path):
    """The pull that learns the revocation says what is held here only (its pull error); a restart forgets
    that, and `doctor` said "every session is pushed" though messages exist here only. It names them now."""
    a, b, sid, _ = _dropped_after_writing(tmp_path, late=1)
    try:
        b.stop()
        b.start()
        res = run_cli(b.home, "doctor", "--no-verify", "--json")
        findings = json.loads(res.stdout)["findings"]
        push = [f for f in findings if f["check"] == "push"]
        held = [f for f in findings if f["check"] == "pull" and sid in f["message"]]
        assert len(held) == 1 and held[0]["level"] == "problem", findings
        assert "1 message" in held[0]["message"] and "held here only" in held[0]["message"], held
        assert held[0]["fix"].startswith("sessiond import") and sid in held[0]["fix"], held
        assert not any(f["message"] == "every session is pushed" for f in push), push
    finally:
        a.stop()
        b.stop()


def test_an_expiry_s_delete_keeps_a_revoked_session_holding_writes_here_only(tmp_path):
    """With delete_expired, a session past its idle timeout is deleted: a revoked one (which cannot be ended:
    its end is refused as revoked) went, with what this device wrote that no other device has. It is kept
    now, and the log says why, once."""
    a, b, sid, _ = _dropped_after_writing(tmp_path, idle_timeout=5, cleanup_interval=0)
    try:
        last = b.client().get_session(sid)["last_activity"]
        b.stop()
        write_config(b.home, poll_interval=3600, sync_interval=3600, cleanup_interval=0.3, delete_expired=True)
        wait_for(lambda: time.time() > last + 5.5, timeout=30, what="the session's idle timeout")
        b.start()
        log_path = os.path.join(b.home, "logs", "sessiond.log")

        def kept() -> bool:
            with open(log_path) as f:
                return "an expired session is kept" in f.read()

        wait_for(kept, timeout=15, what="the clean-up's run")
        assert sid in [s["id"] for s in b.client().list_sessions()["sessions"]]
        with open(log_path) as f:
            said = f.read()
        assert said.count("an expired session is kept") == 1 and "held here only" in said, said[-2000:]
    finally:
        a.stop()
        b.stop()


async def test_sessions_revoked_before_the_migration_are_taken_as_not_knowing_how_far(tmp_path):
    """A database whose sessions were marked revoked before the revocation's seq was kept: each such session
    is taken as one whose rekey did not say how far it read this device's log (nothing is known to be safe)."""
    from oldcode import old_storage
    from sessiond.storage.database import Database

    path = str(tmp_path / "db.sqlite")
    old = await old_storage().Database.open(path, upto=18)  # (the code of schema 19, before migration 19)
    try:
        gone = (await old.create_session({"name": "revoked"}))["id"]
        kept = (await old.create_session({"name": "written"}))["id"]
        await old.append_messages(gone, [{"role": "user", "content": "mine"}])
        async with old.c.transaction() as tx:  # as mark_revoked did before the migration
            await tx.execute("UPDATE sessions SET access='revoked' WHERE id=?", (gone,))
    finally:
        await old.close()
    db = await Database.open(path)
    try:
        held = await db.held_here(gone)  # (its creation counted too: this device wrote it)
        assert held == {"messages": 1, "changes": 1, "known": False}, held
        assert await db.held_here(kept) is None
        assert json.dumps(await db.get_session(gone))  # (unchanged otherwise)
    finally:
        await db.close()


@pytest.mark.parametrize("then", ["revoked", "let back in"])
def test_gc_after_rm_leaves_this_devices_log_as_a_rekey_froze_it(tmp_path, then):
    """Met running 0.29.0 beside this one: R (0.29.0) dropped D (this version) while D wrote; D's `rm --force` of
    the revoked session and `gc` freed D's manifest as the rekey froze it (its head had moved on: a candidate),
    which the members slot of the devices R kept pins for good, and every import of the session failed after
    that ('object ... is missing from the store'), which no writer on 0.29.0 mends. Here too: A drops B while B
    writes; B deletes the session, revoked or let back in by a new code since, and runs gc. The frozen manifest
    stays (a deleted session's candidates go uncollected when a members slot may pin its log: this device's
    log frozen by a rekey), and an import holds what B wrote before the drop."""
    import asyncio

    from sessiond.stores.file import FileStore
    from test_frozen_lost import _frozen_in_slot

    a, b, sid, _late = _dropped_after_writing(tmp_path)
    n = DaemonProc(str(tmp_path / "n"), "file://" + str(tmp_path / "store"))
    store = str(tmp_path / "store")
    try:
        (frozen,) = _frozen_in_slot(store, a.home, sid)
        assert frozen["d"] == cli_json(b.home, "status")["device_id"]
        if then == "let back in":
            code = run_cli(a.home, "share", sid, "--write", check=True).stdout.strip()
            run_cli(b.home, "import", input=code + "\n", check=True)
            b.client().sync(wait=True)
        run_cli(b.home, "rm", sid, "--force", check=True)
        run_cli(b.home, "gc", "--grace", "0")
        # (read before A's audit could put a lost one back under another hash)
        assert asyncio.run(FileStore(store, create=False).has(bytes(frozen["h"]))), "the frozen manifest was freed"
        n.start()
        n.client().import_code(a.client().share(sid)["code"])  # main: the frozen log's object missing
        assert "B early" in contents(n, sid)
    finally:
        n.stop()
        a.stop()
        b.stop()


def test_gc_on_a_device_a_rekey_left_out_keeps_what_may_be_frozen_and_says_why(tmp_path):
    """Met running an older sessiond beside this one, and so on this one alone: a device a rekey dropped cannot
    read the heads of the writers that kept the session (sealed under the new key), so gc kept its candidates,
    rightly (the members slot it cannot read pins its own log as the rekey froze it: 'B early'), but said it as a
    failure, 'its heads could not be read: chunk 0 fails authentication (wrong key, or the object was altered)',
    and exited 1 at every run for as long as the session is kept, as it may be for good (readable, exportable).
    Now it says why they stay and what lets them go, and that is no failure (exit 0)."""
    a, b, sid, _late = _dropped_after_writing(tmp_path)
    n = DaemonProc(str(tmp_path / "n"), "file://" + str(tmp_path / "store"))
    try:
        res = run_cli(b.home, "gc", "--grace", "0")
        said = res.stdout + res.stderr
        assert res.returncode == 0, said  # main: 1
        assert "authentication" not in said and "altered" not in said, said
        assert f"{sid}: kept its" in said and "left out of a rekey" in said, said
        assert "new share code" in said, said
        got = cli_json(b.home, "gc", "--grace", "0")
        assert got["objects"] == 0 and got["kept"] >= 1, got
        assert not any(st.get("errors") for st in got["stores"]), got
        (store,) = got["stores"]
        assert [h.split(":")[0] for h in store["held"]] == [sid], got
        # what the new generation's members slot pins of B's log is still there: an import now holds it
        n.start()
        n.client().import_code(a.client().share(sid)["code"])
        assert "B early" in contents(n, sid)
    finally:
        n.stop()
        a.stop()
        b.stop()


def _candidates(home: str, sid: str) -> set[bytes]:
    """The gc candidates `home`'s daemon noted for `sid` (table `released`), read beside it."""
    import sqlite3

    conn = sqlite3.connect(f"file:{os.path.join(home, 'sessions.db')}?mode=ro", uri=True)
    try:
        return {bytes(r[0]) for r in conn.execute("SELECT hash FROM released WHERE session_id=?", (sid,))}
    finally:
        conn.close()


def test_rm_of_a_session_let_back_in_keeps_only_what_its_frozen_log_needs(tmp_path):
    """A delete of a session whose members slot may pin this device's log as a rekey froze it forgot every gc
    candidate of the session (kept in the store for good), not only what that log needs, and said nothing. A device
    dropped and let back in reads the slot: its delete now keeps the frozen log's objects alone (rm names how many
    and why), gc frees the rest as usual, and a fresh import still reads all."""
    import asyncio

    from sessiond.stores.file import FileStore
    from test_frozen_lost import _frozen_in_slot

    a, b, sid, _late = _dropped_after_writing(tmp_path)
    n = DaemonProc(str(tmp_path / "n"), "file://" + str(tmp_path / "store"))
    store = FileStore(str(tmp_path / "store"), create=False)
    try:
        (frozen,) = _frozen_in_slot(str(tmp_path / "store"), a.home, sid)
        code = run_cli(a.home, "share", sid, "--write", check=True).stdout.strip()
        run_cli(b.home, "import", input=code + "\n", check=True)
        cb = b.client()
        for i in range(3):  # (each push moves B's head on: the manifests it left are candidates)
            cb.append(sid, "user", f"back {i}")
            cb.sync(wait=True)
        before = _candidates(b.home, sid)
        assert bytes(frozen["h"]) in before and len(before) > 2, before
        said = cli_json(b.home, "rm", sid, "--force")
        gc = cli_json(b.home, "gc", "--grace", "0")
        left = {h for h in before if asyncio.run(store.has(h))}
        # main: gc's answer named nothing of them (only rm's answer and the log did)
        (kept,) = gc["kept_in_store"]
        assert kept["session"] == sid and kept["objects"] == len(left) and "froze" in kept["why"], gc
        assert kept["store"] == "file://" + str(tmp_path / "store"), kept
        text = run_cli(b.home, "gc", "--grace", "0", check=True).stdout
        assert f"{sid}: {len(left)} object(s)" in text and "for good" in text and "froze" in text, text
        assert bytes(frozen["h"]) in left, "the frozen manifest was freed"
        assert left < before, "every candidate of the deleted session was kept in the store"  # main: all kept
        assert said["kept_in_store"]["objects"] == len(left), said
        assert "froze" in said["kept_in_store"]["why"], said
        n.start()
        n.client().import_code(a.client().share(sid)["code"])
        assert "B early" in contents(n, sid) and "back 2" in contents(n, sid)
    finally:
        n.stop()
        a.stop()
        b.stop()


def test_rm_of_a_session_let_back_in_with_its_store_down_keeps_every_candidate(tmp_path):
    """The slot cannot be read at the delete (its store gone): which objects the frozen log needs is not known,
    so every candidate of the session stays in the store for good, as before, and rm says why."""
    import asyncio

    from sessiond.stores.file import FileStore

    a, b, sid, _late = _dropped_after_writing(tmp_path)
    store, aside = tmp_path / "store", tmp_path / "store.aside"
    try:
        code = run_cli(a.home, "share", sid, "--write", check=True).stdout.strip()
        run_cli(b.home, "import", input=code + "\n", check=True)
        cb = b.client()
        for i in range(2):
            cb.append(sid, "user", f"back {i}")
            cb.sync(wait=True)
        before = _candidates(b.home, sid)
        a.stop()  # (A's pulls would find its store gone too)
        os.rename(store, aside)
        try:
            said = cli_json(b.home, "rm", sid, "--force")
        finally:
            os.rename(aside, store)
        assert said["kept_in_store"]["objects"] == len(before), said
        assert "could not be read" in said["kept_in_store"]["why"], said
        run_cli(b.home, "gc", "--grace", "0", check=True)
        fs = FileStore(str(store), create=False)
        assert all(asyncio.run(fs.has(h)) for h in before), "a candidate was freed though the slot was not read"
    finally:
        a.stop()
        b.stop()
