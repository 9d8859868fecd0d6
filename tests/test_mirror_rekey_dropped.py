"""A rekey on a mirror cut short as it wrote its notice to every store (killed inside that write, each store having
taken it, or between two stores' writes: its record notes the revision it was sent for, `r`, not that it was
published, `p`), and a writer that rekey drops writing a notice of its own over it meanwhile (docs/SECURITY.md, "A
dropped writer and the devices that have not yet pulled"). On a mirror another notice past `r`, or ranked over its own
at `r`, does not tell the author whether its own ever stood in every store (two rekeys at once, each killed between
the stores: the one ranked first is written again a revision on, past the other's `r`, by its author's resume:
sync/mirrorstrict.py), so the author cannot finish; nor may it give its rekey up to a notice by a writer it drops (it
took that notice at its next pull: rekeyed into the dropped writer's generation)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from types import SimpleNamespace

import pytest

from sessiond.daemon.doctor import check_pushes
from sessiond.stores import FileStore
from sessiond.sync import dagcbor
from sessiond.sync.errors import ImportError_
from sessiond.sync.heads import manifest_hash_of
from sessiond.sync.keys import KeyStore
from test_members_mirror_apart_back import _closed, _rekeying_pair, _slot_pk, mirror_side
from test_members_mirror_rekey import _Killed, _killed_between
from test_rekey_forgery import _forge


def _every_store_took_then_killed(first: FileStore, second: FileStore, slot: bytes) -> None:
    """The slot's next write taken by both stores, then the rekey killed (_Killed) before either answer reached it."""
    took = asyncio.Event()

    async def one(entry):
        await FileStore.set_head(first, entry)
        if entry.pk == slot:
            took.set()

    async def other(entry):
        await FileStore.set_head(second, entry)
        if entry.pk == slot:
            await took.wait()
            raise _Killed("every store took the notice; no answer came back")

    first.set_head = one  # type: ignore[method-assign]
    second.set_head = other  # type: ignore[method-assign]


async def _forged(
    tmp_path, name: str, sid: str, author: str, slot: bytes, on: tuple[str, ...], over: bytes | None = None
) -> bytes:
    """Device `name` (its keys) writes the old slot (registry key `slot`) one revision on with a notice of its own
    naming `author`, claimed in its own head, on the store `on[0]`, ranked over `over` (an entry's data), else over
    what the first store holds of that revision if it holds one (as a mirror ranks two: the one every device reads);
    the same entries and objects then on the others of `on`. Returns the forged key."""
    home = tmp_path / "forger"
    home.mkdir()
    os.symlink(tmp_path / f"keys-{name}", home / "keys")
    stores = [FileStore(str(tmp_path / st)) for st in on]
    there, took = await stores[0].get_head(slot), await FileStore(str(tmp_path / "first")).get_head(slot)
    if over is None and took is not None and there is not None and took.revision == there.revision + 1:
        over = took.data
    forged = await _forge(str(tmp_path / on[0]), str(home), sid, author, claim=True, leave_out=author, over=over)
    ks = KeyStore(str(home / "keys"))
    for pk, object_of in ((ks.head_pk(sid), manifest_hash_of), (slot, lambda e: e.data[1:33])):
        entry = await stores[0].get_head(pk)
        assert entry is not None
        for other in stores[1:]:
            await other.put(await stores[0].get(object_of(entry)))
            await other.set_head(entry)
    return forged


def _raced(tmp_path, second: FileStore, slot: bytes, sid: str, author: str, forged: list[bytes]) -> None:
    """The slot's next write reaching `second` just after C's notice did (C's `_forged` there, ranked over it): the
    store refuses it as stale. `forged`: C's key, once written."""

    async def after_c(entry):
        if entry.pk == slot and not forged:
            forged.append(await _forged(tmp_path, "c", sid, author, slot, ("second",), over=entry.data))
        return await FileStore.set_head(second, entry)

    second.set_head = after_c  # type: ignore[method-assign]


async def _c_writes(sid: str, a, b, c, dbc) -> None:
    """C joins A's session `sid` as a writer and pushes (listed in the slot); A and B pull it."""
    await c.import_code((await a.share(sid, write=True, passphrase=None, expires_in=None))["code"], None)
    await dbc.append_messages(sid, [{"role": "user", "content": "c writes"}])
    await c.push(sid)
    await a.pull(sid)
    await b.pull(sid)


@pytest.mark.parametrize(("cut", "b_took"), [("inside", False), ("inside", True), ("between", False), ("raced", False)])
async def test_a_rekey_cut_short_writing_its_notice_to_every_store_does_not_give_itself_up_to_a_writer_it_drops(
    tmp_path, monkeypatch, cut, b_took
):
    """A's rekey keeps B and drops C; A is killed once every store of the mirror took its notice, before any answered
    (`r` noted, no `p`). C, dropped, holds the old slot's key: it writes its own notice (claimed in its head) over A's
    on every store. A restarts: its resume found another notice past `r`, took it for another device's rekey that came
    first and gave its rekey up (claim withdrawn), and its pull took C's notice: rekeyed into the generation of the
    writer it had dropped. It must neither take C's generation nor finish as if its notice stood in the slot (it
    stands in no store): it keeps its record and its claim, each pull refused (`rekey_conflict`) naming the way on, a
    fork shared anew. B, kept, does not take C's notice (A's claim contradicts it). `b_took`: B took A's notice
    before C wrote over it (B on A's key: still not C's). `between`: A killed once the first store took its notice
    and before the second did; C writes its notice on the second at the same revision, ranked over A's (the one every
    device of the mirror reads): A's resume found it at `r`, not past it, and gave its rekey up to it all the same.
    `raced`: A not killed; C's notice reaches the second store just before A's (which it refuses as stale), ranked over
    A's on the first: A's rekey read it the highest, withdrew its claim and gave way (`conflict`), and its pull took
    it; now refused as the resume is, its record kept."""
    sid, (dba, a, a_first, a_second), (dbb, b, _, _) = await _rekeying_pair(tmp_path)
    dbc, c, _, _ = await mirror_side(tmp_path, "c")
    sides = [dba, a, dbb, b, dbc, c]
    try:
        await _c_writes(sid, a, b, c, dbc)
        old, slot = a.ctx.keys.session_key(sid), await _slot_pk(dba, sid)

        refusals: list[object] = []
        raced: list[bytes] = []
        if cut == "inside":
            _every_store_took_then_killed(a_first, a_second, slot)
        elif cut == "between":
            _killed_between(a_first, a_second, slot)
        else:
            _raced(tmp_path, a_second, slot, sid, dbc.device_id, raced)
        try:
            refusals.append(await a.rekey(sid, drop=[dbc.device_id]))
        except (_Killed, ImportError_) as exc:
            assert isinstance(exc, _Killed) != (cut == "raced"), exc
            refusals.append(exc)
        raw = a.ctx.keys.rekey_pending(sid)
        assert raw is not None and isinstance(dagcbor.decode(raw).get("r"), int) and not dagcbor.decode(raw).get("p")
        mine = bytes(dagcbor.decode(raw)["k"])
        if cut != "raced":
            refusals.clear()
            await _closed(dba, a)  # (A killed: its restart below opens the same files)
            sides[:2] = []
            if b_took:
                with contextlib.suppress(ImportError_):  # (the new slot as B reads it is not this test's)
                    await b.pull(sid)
                assert b.ctx.keys.session_key(sid) == mine
            on = ("first", "second") if cut == "inside" else ("second",)
            raced.append(await _forged(tmp_path, "c", sid, dbc.device_id, slot, on))
            dba, a, _, _ = await mirror_side(tmp_path, "a")  # (A's restart)
            sides[:0] = [dba, a]
        forged = raced[0]
        for _ in range(2):  # (A's resume at its pull, then again)
            try:
                refusals.append(await a.pull(sid))
            except ImportError_ as exc:
                refusals.append(exc)
        # main: A gave its rekey up and took C's notice, the generation of the writer it dropped
        assert a.ctx.keys.session_key(sid) != forged
        assert a.ctx.keys.session_key(sid) == old != mine  # (not finished: its notice is in no store)
        assert a.ctx.keys.rekey_pending(sid) == raw  # (its record kept, and its claim with it)
        assert (await dba.sync_state(sid)).get("rekey_claims")
        for exc in refusals:
            said = str(exc)
            assert isinstance(exc, ImportError_) and exc.kind == "rekey_conflict" and exc.fork, exc
            assert dbc.device_id in said and "sessiond fork" in said and "--drop" not in said, said
        with contextlib.suppress(ImportError_):
            await b.pull(sid)
        assert b.ctx.keys.session_key(sid) == (mine if b_took else old) != forged
    finally:
        await _closed(*sides)


async def test_doctor_status_and_sync_say_the_fork_for_a_rekey_kept_unfinished(tmp_path):
    """A's rekey on the mirror, dropping C, refused and kept unfinished, C's notice over its own (the `raced` case
    above): each pull refused `rekey_conflict`, its message naming the way on, a fork shared anew. Doctor advised by the
    failure's kind alone, and for `rekey_conflict` said to import a new share code from a device you trust, which
    cannot help: every code of the session names the same members slot, with C's notice in it. Now doctor's `pull`
    finding says the fork, as `sync --wait` and status (and show: the session's sync state) say it."""
    sid, (dba, a, _, a_second), (dbb, b, _, _) = await _rekeying_pair(tmp_path)
    dbc, c, _, _ = await mirror_side(tmp_path, "c")
    try:
        await _c_writes(sid, a, b, c, dbc)
        _raced(tmp_path, a_second, await _slot_pk(dba, sid), sid, dbc.device_id, [])
        with pytest.raises(ImportError_) as refused:
            await a.rekey(sid, drop=[dbc.device_id])
        assert refused.value.kind == "rekey_conflict", refused.value
        synced = (await a.sync_now(sid, wait=True, timeout=10))["sessions"][sid]  # (`sessiond sync --wait`)
        said = synced["pull_error"]
        assert dbc.device_id in said and f"`sessiond fork {sid} --at LAST`" in said, said
        assert (await a.status(sid))[sid]["pull_error"] == said  # (`sessiond status`, and `show`'s sync state)
        daemon = SimpleNamespace(syncer=a, db=dba, home=SimpleNamespace(path=str(tmp_path / "home-a")))
        pulls = [f for f in await check_pushes(daemon) if f["check"] == "pull"]  # type: ignore[arg-type]
        assert [f["message"] for f in pulls] == [f"session {sid}: cannot pull what other devices wrote: {said}"]
        fix = pulls[0]["fix"]
        assert f"sessiond fork {sid} --at LAST" in fix and "sessiond import" not in fix, fix
    finally:
        await _closed(dba, a, dbb, b, dbc, c)
