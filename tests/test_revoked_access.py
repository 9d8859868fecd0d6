"""A writer device dropped by `unshare --device` (a rekey without it) learns it at its next pull: the
session's `access` says `revoked` (show, ls, the API), kept across a restart, and a write to it, which
could reach no one, is refused with a 409 saying why and what to do; what it holds stays readable and
exportable, and a new code imported over it makes it a writer again. Two real daemons, one folder store."""

from __future__ import annotations

import json

import pytest

from conftest import DaemonProc, cli_json, run_cli, wait_for, write_config
from sessiond.client import ApiError
from test_damaged_log_named import _damage_manifest


def contents(d: DaemonProc, sid: str) -> list[str]:
    return [m["content"] for m in d.client().messages(sid, limit=1000)["messages"]]


def shared(a: DaemonProc, b: DaemonProc) -> str:
    """A session A made, with one message, shared read-write with B, which imported it: its id."""
    sid = cli_json(a.home, "new", "--name", "shared")["id"]
    a.client().append(sid, "user", "before")
    code = run_cli(a.home, "share", sid, "--write", check=True).stdout.strip()
    run_cli(b.home, "import", input=code + "\n", check=True)
    return sid


def refused(call) -> ApiError:
    with pytest.raises(ApiError) as e:
        call()
    return e.value


def test_a_device_dropped_by_unshare_shows_revoked_and_refuses_writes(tmp_path):
    url = "file://" + str(tmp_path / "store")
    a = DaemonProc(str(tmp_path / "a"), url).start()
    b = DaemonProc(str(tmp_path / "b"), url).start()
    try:
        cb = b.client()
        sid = shared(a, b)
        cb.append(sid, "assistant", "B was here")
        cb.sync(wait=True)
        wait_for(lambda: "B was here" in contents(a, sid), timeout=15)
        assert cli_json(b.home, "show", sid)["access"] == "write"

        b_id = cli_json(b.home, "status")["device_id"]
        cli_json(a.home, "unshare", sid, "--device", b_id)
        synced = run_cli(b.home, "sync", "--wait")
        assert "rekeyed without this device" in synced.stdout + synced.stderr

        # the session says so, in every view of it
        assert cli_json(b.home, "show", sid)["access"] == "revoked"
        assert "revoked" in run_cli(b.home, "show", sid, check=True).stdout
        listed = {s["id"]: s for s in cli_json(b.home, "ls")["sessions"]}
        assert listed[sid]["access"] == "revoked"
        assert "revoked" in run_cli(b.home, "ls", check=True).stdout
        assert cb.get_session(sid)["access"] == "revoked"

        # a write is refused, saying why and what to do, and nothing is added
        held = contents(b, sid)
        add = run_cli(b.home, "add", sid, "--role", "user", "x")
        assert add.returncode != 0, add.stdout
        assert "rekeyed without this device" in add.stderr and "sessiond import" in add.stderr, add.stderr
        for write in (
            lambda: cb.append(sid, "user", "lost"),
            lambda: cb.update_session(sid, name="renamed"),
            lambda: cb.create_chat(sid, name="side"),
            lambda: cb.pause(sid),
            lambda: cb.end(sid),
            lambda: cb.share(sid),
        ):
            err = refused(write)
            assert (err.status, err.code) == (409, "revoked"), (err.status, err.code, err.message)
            assert "new share code" in err.message and "sessiond import" in err.message, err.message
        assert contents(b, sid) == held
        # what it holds stays readable and exportable
        exported = json.loads(run_cli(b.home, "export", sid, "--format", "json", check=True).stdout)
        assert "B was here" in json.dumps(exported)

        # kept across a restart: read from the database, with no pull since (B's follower asleep)
        b.stop()
        write_config(b.home, poll_interval=3600, sync_interval=3600)
        b.start()
        cb = b.client()
        assert cb.get_session(sid)["access"] == "revoked"
        assert refused(lambda: cb.append(sid, "user", "lost")).code == "revoked"

        # a new code, imported over the copy here, makes it a writer again
        code = run_cli(a.home, "share", sid, "--write", check=True).stdout.strip()
        run_cli(b.home, "import", input=code + "\n", check=True)
        assert cb.get_session(sid)["access"] == "write"
        cb.append(sid, "user", "back again")
        cb.sync(wait=True)
        wait_for(lambda: "back again" in contents(a, sid), timeout=15)
    finally:
        a.stop()
        b.stop()


def test_the_revoked_refusal_s_command_for_another_device_is_not_given_this_home(tmp_path):
    """The refusal names a command for a device that kept the session (`sessiond share ID --write`): the CLI
    added this home's --home to it ("... --home /this/home ... there"), which points at the device that
    cannot do it; only the `sessiond import` for here gets it."""
    from sessiond.cli.output import for_home
    from sessiond.storage.errors import revoked

    home = str(tmp_path / "b")
    text = for_home(str(revoked("s1")), home)
    assert "`sessiond share s1 --write`" in text, text
    assert f"`sessiond import --home {home}`" in text, text


def test_what_a_dropped_device_wrote_after_the_rekey_read_its_log_is_named_not_lost_silently(tmp_path):
    """Messages a dropped device's API took after the rekeying device read (froze) its log, before its pull
    learnt of the rekey: its pushes went on to its old log, which no device reads any more. It said nothing of
    them (`sync --wait`: "everything is pushed"; the revocation: "it keeps what it has"), so its user took
    them for shared. The rekey's notice names how far it froze each dropped writer's log now, and the dropped
    device's revocation names what it wrote past that: held here only, sent with its log once a new code is
    imported, which the test sees happen."""
    url = "file://" + str(tmp_path / "store")
    a = DaemonProc(str(tmp_path / "a"), url).start()
    b = DaemonProc(str(tmp_path / "b"), url)
    write_config(b.home, poll_interval=3600, sync_interval=3600)  # B pulls when asked (`sync`)
    b.start()
    try:
        ca, cb = a.client(), b.client()
        sid = shared(a, b)
        early = cb.append(sid, "assistant", "B early")
        cb.sync(wait=True)
        wait_for(lambda: "B early" in contents(a, sid), timeout=15)

        cli_json(a.home, "unshare", sid, "--device", cli_json(b.home, "status")["device_id"])
        late = [cb.append(sid, "user", f"late {i}") for i in (1, 2)]  # taken: B does not know yet
        wait_for(lambda: cb.status()["sync"][sid]["pending"] == 0, timeout=15, what="B's push of them")
        synced = run_cli(b.home, "sync", "--wait")
        said = synced.stdout + synced.stderr
        assert "rekeyed without this device" in said, said
        assert "2 messages" in said and all(m["id"] in said for m in late), said
        assert early["id"] not in said, said  # the rekey carried that one over
        assert "held here only" in said and "new share code" in said, said
        pull_error = cb.status()["sync"][sid]["pull_error"]
        assert all(m["id"] in pull_error for m in late), pull_error
        assert contents(b, sid)[-2:] == ["late 1", "late 2"]  # held here
        ca.sync(wait=True)
        assert "late 1" not in contents(a, sid)

        # as said: a new code imported over the copy sends them with its log
        code = run_cli(a.home, "share", sid, "--write", check=True).stdout.strip()
        run_cli(b.home, "import", input=code + "\n", check=True)
        cb.sync(wait=True)
        wait_for(lambda: contents(a, sid)[-2:] == ["late 1", "late 2"], timeout=15)
    finally:
        a.stop()
        b.stop()


def test_a_dropped_device_whose_log_could_not_be_frozen_claims_none_of_its_writes_held_here_only(tmp_path):
    """The rekeying device could not freeze the dropped device's log (its manifest damaged in the store): the
    notice's `s` named 0 for it, as for a device that had pushed nothing, and the dropped device then said
    that every message it ever wrote was held there only, though the kept device had pulled the earlier ones.
    A writer whose log was not frozen is left out of `s` now: the dropped device says what it says for a
    notice that names no seq for it (that it does not know how far the rekey read), and names none of what
    the kept device holds."""
    store = str(tmp_path / "store")
    a = DaemonProc(str(tmp_path / "a"), "file://" + store).start()
    b = DaemonProc(str(tmp_path / "b"), "file://" + store)
    write_config(b.home, poll_interval=3600, sync_interval=3600)  # B pulls when asked (`sync`)
    b.start()
    try:
        cb = b.client()
        sid = shared(a, b)
        early = cb.append(sid, "assistant", "B early")
        cb.sync(wait=True)
        wait_for(lambda: "B early" in contents(a, sid), timeout=15)
        _damage_manifest(store, b.home, sid)

        cli_json(a.home, "unshare", sid, "--device", cli_json(b.home, "status")["device_id"])
        synced = run_cli(b.home, "sync", "--wait")
        said = synced.stdout + synced.stderr
        assert "rekeyed without this device" in said, said
        assert early["id"] not in said and "1 message" not in said, said  # A holds it: not "held here only"
        assert "does not say how far" in said and "held here only" in said, said
        assert "B early" in contents(a, sid)
    finally:
        a.stop()
        b.stop()


async def test_what_the_revocation_says_of_this_device_s_writes_by_what_the_notice_names(db):
    """The revocation's words on what this device wrote past its log's frozen end (rekeyconfirm.py `_left_here`), on
    a real database: the notice's `s` names how far the rekey carried this device's log over; a notice of
    sessiond before it names nothing, and what this device wrote is then said to be held here as a
    possibility, as by a notice naming other devices only; nothing written past it, nothing said."""
    import types

    from sessiond.sync.rekeyconfirm import NoticeCheck

    me, other = b"\x01" * 33, b"\x02" * 33
    sid = (await db.create_session({"name": "s"}))["id"]
    ids = [(await db.append_messages(sid, [{"role": "user", "content": f"m{i}"}]))[0]["id"] for i in range(7)]
    seq = await db.last_seq(sid)
    left = NoticeCheck(types.SimpleNamespace(db=db), None)._left_here  # type: ignore[arg-type]

    assert await left(sid, {"s": [{"k": me, "s": seq}]}, me) == ""
    said = await left(sid, {"s": [{"k": other, "s": 0}, {"k": me, "s": seq - 2}]}, me)
    assert "2 messages" in said and f"({ids[5]}, {ids[6]})" in said and "held here only" in said, said
    said = await left(sid, {"s": [{"k": me, "s": 0}]}, me)  # nothing carried over: the first 5 named, and more
    assert "messages" in said and ids[4] in said and ids[5] not in said and ", ...)" in said, said
    for notice in ({}, {"s": [{"k": other, "s": 3}]}, {"s": [{"k": me, "s": "3"}]}):
        said = await left(sid, notice, me)
        assert "does not say how far" in said and "held here only" in said, (notice, said)


async def test_a_notice_naming_a_seq_no_log_can_reach_is_said_as_not_knowing_how_far(db):
    """A notice's `s` is its author's word, read by a device that cannot check it (the frozen log it names is
    in the new members slot, sealed under the key this device is not given). One past what SQLite's integers
    hold (DAG-CBOR's go to 2**64 - 1) made the revocation's count raise OverflowError: the pull failed with
    that, every time, and the session was never marked revoked (its writes taken, reaching no one). Now
    such an `s` is taken as none given; one past this device's log but within range names nothing."""
    import types

    from sessiond.sync.rekeyconfirm import NoticeCheck

    me = b"\x01" * 33
    sid = (await db.create_session({"name": "s"}))["id"]
    await db.append_messages(sid, [{"role": "user", "content": "m"}])
    left = NoticeCheck(types.SimpleNamespace(db=db), None)._left_here  # type: ignore[arg-type]
    for huge in (1 << 63, (1 << 64) - 1):
        said = await left(sid, {"s": [{"k": me, "s": huge}]}, me)
        assert "does not say how far" in said and "held here only" in said, (huge, said)
    assert await left(sid, {"s": [{"k": me, "s": (1 << 63) - 1}]}, me) == ""


async def test_the_revocation_counts_this_device_s_other_changes_past_its_log_s_end_apart_from_its_messages(db):
    """A message is a row of its own, not an operation: what this device wrote past the notice's `s` was
    counted as its operations less its messages, so two messages and a chat made after it said "2 messages"
    and nothing of the chat (the chat's one operation, less two), and one message with three other changes
    said two of them. Each is counted as what it is now."""
    import types

    from sessiond.sync.rekeyconfirm import NoticeCheck

    me = b"\x01" * 33
    sid = (await db.create_session({"name": "s"}))["id"]
    await db.append_messages(sid, [{"role": "user", "content": "carried over"}])
    seq = await db.last_seq(sid)
    left = NoticeCheck(types.SimpleNamespace(db=db), None)._left_here  # type: ignore[arg-type]
    await db.append_messages(sid, [{"role": "user", "content": "late 1"}, {"role": "user", "content": "late 2"}])
    await db.create_chat(sid, {"id": "side", "name": "side"})
    assert await db.written_after(sid, seq) == ([f"{db.device_id}-{seq + 1}", f"{db.device_id}-{seq + 2}"], 2, 1)
    said = await left(sid, {"s": [{"k": me, "s": seq}]}, me)
    assert "2 messages" in said and "and 1 other change " in said and "are held here only" in said, said


async def test_a_revocation_read_again_carried_further_raises_what_it_keeps_and_never_lowers_it(db):
    """A kept writer's entry in the old slot can say, after this device took itself for revoked, that its log
    was carried further than the notice said (sync/rekeycarried.py): the seq kept with the mark is raised, and
    what is held here only counted past it; a read saying less (or nothing) changes nothing, and a mark whose
    notice named no seq keeps counting everything."""
    sid = (await db.create_session({"name": "s"}))["id"]
    seqs = []
    for i in range(4):
        await db.append_messages(sid, [{"role": "user", "content": f"m{i}"}])
        seqs.append(await db.last_seq(sid))
    assert await db.mark_revoked(sid, seqs[0])
    assert (await db.held_here(sid))["messages"] == 3
    assert not await db.mark_revoked(sid, seqs[2])  # revoked already: carried further
    assert (await db.held_here(sid))["messages"] == 1
    for less in (seqs[1], None):
        await db.mark_revoked(sid, less)
        assert (await db.held_here(sid))["messages"] == 1
    await db.mark_revoked(sid, seqs[3])
    assert await db.held_here(sid) is None
    other = (await db.create_session({"name": "t"}))["id"]
    await db.append_messages(other, [{"role": "user", "content": "m"}])
    assert await db.mark_revoked(other, None)
    await db.mark_revoked(other, 5)
    held = await db.held_here(other)
    assert held is not None and held["messages"] == 1 and not held["known"], held
