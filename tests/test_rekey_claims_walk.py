"""A device away through more than CLAIMS_KEPT rekeys by one device reads that device's older manifests for the claim
of the first notice (sync/rekeywalk.py `claimed_before`). An older manifest holds every claim its author made, the
ones it took back too: a rekey that gave up, or lost the slot to another device's notice, withdraws its claim
(sync/rekey.py `_withdraw`), and one that started over claims its new notice in place of the first. A notice so
taken back may still be in a store (one store of a mirror took it as the others refused it as stale; a store host
keeps the revision of the slot that held it and serves it again). The walk took the first claim matching: such a
notice was taken, its key one no other device holds, a generation no device writes (this device's writes lost to
the others, theirs to it). A claim found down the chain counts only if it left the log by its cap (the oldest, the
manifest after it full) and no later manifest claims another notice of that slot."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os

import pytest
from nacl.public import SealedBox
from nacl.signing import VerifyKey

from devices import count_gets
from sessiond.daemon.doctor_fixes import pull_fix
from sessiond.stores.registry import RegistryEntry
from sessiond.sync import dagcbor, rekeywalk
from sessiond.sync.crypto import members_key
from sessiond.sync.errors import ImportError_
from sessiond.sync.manifest import CLAIMS_KEPT
from sessiond.sync.members import announce_key
from sessiond.sync.membersobject import SALT_LEN, members_object, seal_small
from sessiond.sync.rekeyproof import notice_hash
from test_progress import BAR, under_terminal

# A, the notice's author, pulls only when a test asks. Its own pull takes the notice it is the author of in the slot,
# and walks its own log for its claim, in this process's walk memory (rekeywalk._CUT, keyed by store, session, author,
# claim and keys, not by the device walking: one device a process), which B's walk in the same process shares. A's
# poll, its cut behind B's, moved B's walk back: after B's restart, B went on from where A's walk was (20 manifests
# back), and test_a_walk_cut_short_goes_on_after_a_restart_where_it_stopped counted more pulls than its bound; before
# the restart, B's row kept where A's walk was, and test_a_real_daemon_restarted_goes_on_with_the_walk's daemon went on
# at a manifest freed since (refused). Both seen under load only, as A's polls came between B's pulls.
AUTHOR_QUIET = {"interval": 3600.0, "poll_interval": 3600.0}


async def _claims_pushed(devices, sid: str, claims: list[dict]) -> None:
    """A's manifest pushed with `claims`, as its rekeyer pushes it (sync/rekey.py `_claim`, `_withdraw`)."""
    await devices.dba.save_sync_state(sid, rekey_claims=dagcbor.encode(claims) if claims else None)
    await devices.a.pusher.push(sid, force=True)


async def _abandoned_notice(devices, sid: str) -> tuple[dict, bytes]:
    """A notice of A's rekey of the current slot, boxed to A and B: (it, the new key it gives)."""
    a, b = devices.a, devices.b
    key, write = os.urandom(32), os.urandom(32)
    new_announce = bytes(announce_key(write).verify_key)
    secret = dagcbor.encode({"a": new_announce, "k": key, "w": write})
    pks = [a.ctx.keys.head_pk(sid), b.ctx.keys.head_pk(sid)]
    boxes = [{"k": pk, "x": SealedBox(VerifyKey(pk[1:]).to_curve25519_public_key()).encrypt(secret)} for pk in pks]
    return {"a": new_announce, "b": boxes, "d": devices.a.ctx.db.device_id, "t": 1}, key


async def _slot_served_with(devices, sid: str, notice: dict) -> None:
    """The current members slot one revision on, its writers as they are, holding `notice`: the revision A's
    abandoned attempt put (signed with the write secret every writer holds), which the store serves."""
    a = devices.a
    store = await a.ctx.store_for(sid)
    old_key, old_write = a.ctx.keys.session_key(sid), a.ctx.keys.write_secret(sid)
    slot_key = announce_key(old_write)
    entry = await store.get_head(b"\xed" + bytes(slot_key.verify_key))
    assert entry is not None
    members = [
        {"head_pk": a.ctx.keys.head_pk(sid), "device_id": a.ctx.db.device_id},
        {"head_pk": devices.b.ctx.keys.head_pk(sid), "device_id": devices.b.ctx.db.device_id},
    ]
    obj = {**members_object(sid, members), "rekey": notice}
    salt = os.urandom(SALT_LEN)
    h = await store.put(seal_small(dagcbor.encode(obj), members_key(old_key, salt)))
    await store.set_head(RegistryEntry.create(slot_key, entry.revision + 1, b"\x1e" + h + salt))


async def _taken(devices, b, sid: str, notice: dict, new_key: bytes) -> None:
    """The slot served holding `notice`, and B's pull takes it (its key `new_key`)."""
    await _slot_served_with(devices, sid, notice)
    try:
        await b.pull(sid)
    except ImportError_ as exc:  # (the new slot is never written here: what B says of that is not this test's)
        assert exc.kind != "rekey_unconfirmed", exc
    assert b.ctx.keys.session_key(sid) == new_key


async def never_claimed(devices, name: str, later: int) -> tuple:
    """A's session `name`, shared with B (B pulled it); `later` claims of A's rekeys of other slots, one push each,
    and the slot served holding a notice of A's none of them claims. (a, b, sid, A's claims as they are)."""
    a, b = await devices.open(a=AUTHOR_QUIET)
    await a.start()
    sid = await devices.shared(name, write=True)
    await b.pull(sid)
    claims: list[dict] = []
    for _ in range(later):
        claims = [*claims, {"a": os.urandom(32), "h": os.urandom(32), "o": os.urandom(32)}][-CLAIMS_KEPT:]
        await _claims_pushed(devices, sid, claims)
    notice, _ = await _abandoned_notice(devices, sid)
    await _slot_served_with(devices, sid, notice)
    return a, b, sid, claims


async def _aged_out(devices, name: str, later: int) -> tuple:
    """A's session `name`, shared with B (B pulled it); A's claim of a notice of the current slot, then `later` claims
    of other rekeys, one push each. (a, b, sid, the notice, the key it gives, A's claims as they are)."""
    a, b = await devices.open(a=AUTHOR_QUIET)
    await a.start()
    sid = await devices.shared(name, write=True)
    await b.pull(sid)
    old_announce = bytes(announce_key(a.ctx.keys.write_secret(sid)).verify_key)
    notice, new_key = await _abandoned_notice(devices, sid)
    claims = [{"a": notice["a"], "h": notice_hash(notice), "o": old_announce}]
    await _claims_pushed(devices, sid, claims)
    for _ in range(later):
        claims = [*claims, {"a": os.urandom(32), "h": os.urandom(32), "o": os.urandom(32)}][-CLAIMS_KEPT:]
        await _claims_pushed(devices, sid, claims)
    return a, b, sid, notice, new_key, claims


@pytest.mark.parametrize("then", ["withdrawn", "claimed_again"])
async def test_a_claim_its_author_took_back_is_not_found_in_its_older_manifests(devices, then):
    """A claims a notice of the current slot and takes the claim back (`withdrawn`; or claims another notice of the
    slot in its place, a rekey that started over: `claimed_again`), then claims CLAIMS_KEPT rekeys of other slots;
    the store serves B the slot holding the notice taken back. B refuses it, and keeps its key."""
    a, b = await devices.open(a=AUTHOR_QUIET)
    await a.start()
    sid = await devices.shared("taken back", write=True)
    await b.pull(sid)
    key = b.ctx.keys.session_key(sid)
    old_announce = bytes(announce_key(a.ctx.keys.write_secret(sid)).verify_key)
    notice, abandoned_key = await _abandoned_notice(devices, sid)
    claim = {"a": notice["a"], "h": notice_hash(notice), "o": old_announce}
    await _claims_pushed(devices, sid, [claim])
    if then == "withdrawn":
        await _claims_pushed(devices, sid, [])
    else:
        again, _ = await _abandoned_notice(devices, sid)
        await _claims_pushed(devices, sid, [{"a": again["a"], "h": notice_hash(again), "o": old_announce}])
    others = [{"a": os.urandom(32), "h": os.urandom(32), "o": os.urandom(32)} for _ in range(CLAIMS_KEPT)]
    for i in range(1, CLAIMS_KEPT + 1):  # its later rekeys' claims, one push each
        await _claims_pushed(devices, sid, others[:i])
    await _slot_served_with(devices, sid, notice)

    with pytest.raises(ImportError_) as err:
        await b.pull(sid)
    assert err.value.kind == "rekey_unconfirmed", err.value
    assert b.ctx.keys.session_key(sid) == key != abandoned_key


async def test_a_claim_that_left_its_authors_log_by_the_cap_is_found_in_its_older_manifests(devices):
    """The same notice, its claim never taken back: pushed out of A's log by CLAIMS_KEPT later ones. B takes it."""
    _a, b, sid, notice, new_key, _claims = await _aged_out(devices, "aged out", CLAIMS_KEPT)
    await _taken(devices, b, sid, notice, new_key)


async def test_a_notice_refused_after_the_walk_is_not_walked_again_while_its_authors_head_stands(devices, monkeypatch):
    """The walk reads up to CLAIMS_WALK manifests, while the store holds them (a store the author's gc never runs
    on, or one keeping what it was told to delete, holds them all): a notice it refused was walked again at every
    pull, up to a thousand reads a pull. The chain from one head does not change: the walk's result is kept for
    that head, and a pull while it stands reads the head's manifest only."""
    # (whole in one pull, however loaded the machine: a walk cut at WALK_SECONDS goes on at the next pull, which
    # this test would count as the result not kept; the bound has its own test below)
    monkeypatch.setattr(rekeywalk, "WALK_SECONDS", 600.0)
    _a, b, sid, _claims = await never_claimed(devices, "walked", CLAIMS_KEPT + 24)
    gets = count_gets(await b.ctx.store_for(sid))
    with pytest.raises(ImportError_) as err:
        await b.pull(sid)
    assert err.value.kind == "rekey_unconfirmed", err.value
    walked = len(gets)
    assert walked > CLAIMS_KEPT + 24, walked  # (the walk, down to A's first manifest)
    gets.clear()
    with pytest.raises(ImportError_) as err:
        await b.pull(sid)
    assert err.value.kind == "rekey_unconfirmed", err.value
    assert len(gets) < CLAIMS_KEPT, (len(gets), walked)


async def test_the_walk_is_bounded_per_pull_and_goes_on_at_the_next_one(devices, monkeypatch):
    """The walk read up to CLAIMS_WALK manifests in one pull: a chain of a thousand on a store answering in 50 ms took
    53 s (0.5 s on a folder store), the pull stuck so long. Now a pull walks for WALK_SECONDS at most (here none: one
    manifest a pull past the head's), and the next pull goes on where it stopped, the notice refused meanwhile as not
    checked yet; a new head of the author's (a push meanwhile) is walked down to where the walk began, then goes on."""
    monkeypatch.setattr(rekeywalk, "WALK_SECONDS", 0.0)
    out = 30  # (the manifests since the claim left A's log: the walk reads them all before it)
    _a, b, sid, notice, new_key, claims = await _aged_out(devices, "walked in steps", CLAIMS_KEPT + out)
    await _slot_served_with(devices, sid, notice)
    gets = count_gets(await b.ctx.store_for(sid))
    reads: list[int] = []
    for pull in range(out + 20):
        gets.clear()
        try:
            await b.pull(sid)
        except ImportError_ as exc:
            if b.ctx.keys.session_key(sid) != new_key:
                assert exc.kind == "rekey_unconfirmed" and "next pull" in str(exc), exc
        reads.append(len(gets))
        if b.ctx.keys.session_key(sid) == new_key:
            break
        if pull == 4:  # A pushes again (its claims as they are): the walk goes on, not from the start
            await _claims_pushed(devices, sid, claims)
    # main: the first pull walked the whole chain (`out` manifests and more), and took the notice
    assert reads[0] < 10, reads
    assert b.ctx.keys.session_key(sid) == new_key, reads
    assert len(reads) <= out + 6, reads  # (one manifest a pull, nothing walked twice but the heads)


async def test_an_imports_walk_is_not_cut_short(devices, monkeypatch):
    """An import's check of a notice (rekeyproof.refused_code) has no next pull to go on: its walk is read whole."""
    monkeypatch.setattr(rekeywalk, "WALK_SECONDS", 0.0)
    a, _b, sid, notice, _key, _claims = await _aged_out(devices, "walked whole", CLAIMS_KEPT + 4)
    old_announce = bytes(announce_key(a.ctx.keys.write_secret(sid)).verify_key)
    claim = {"a": notice["a"], "h": notice_hash(notice), "o": old_announce}
    store, pk, keys = await a.ctx.store_for(sid), a.ctx.keys.head_pk(sid), a.ctx.keys.session_keys(sid)
    args = (store, sid, pk, a.ctx.db.device_id, keys, claim, 10.0)
    assert await rekeywalk.claimed_before(*args) is None  # (a pull's: cut short)
    assert await rekeywalk.claimed_before(*args, bounded=False) is True


async def test_the_walk_goes_on_while_its_author_pushes_before_every_pull(devices, monkeypatch):
    """The walk went on at each pull from the author's new head down to where the last one began, then on past where
    it stopped; the time spent on the manifests since counted against the pull's WALK_SECONDS. An author pushing as
    much before every pull as a pull reads in that time (here: one manifest, none read past the head) had the walk
    read nothing past where it stopped, pull after pull: the notice was never checked, never taken. Each pull now
    reads at least one manifest past where the last stopped."""
    monkeypatch.setattr(rekeywalk, "WALK_SECONDS", 0.0)
    out = 10
    _a, b, sid, notice, new_key, claims = await _aged_out(devices, "author busy", CLAIMS_KEPT + out)
    await _slot_served_with(devices, sid, notice)
    for _pull in range(2 * (CLAIMS_KEPT + out)):
        await _claims_pushed(devices, sid, claims)  # (A pushes before every pull)
        try:
            await b.pull(sid)
        except ImportError_ as exc:
            assert exc.kind == "rekey_unconfirmed", exc
        if b.ctx.keys.session_key(sid) == new_key:
            break
    # main: never taken
    assert b.ctx.keys.session_key(sid) == new_key


async def test_doctor_tells_a_walk_under_way_from_a_notice_no_device_takes(devices, monkeypatch):
    """A pull's walk cut short refuses the notice as `rekey_unconfirmed`, as a notice its author never claimed is:
    doctor's fix for it was that one's, a new session by `sessiond fork` if it stays so, for a state each pull ends by
    itself. It says the walk goes on at each pull, and once the walk is done, the fix is the kind's again."""
    monkeypatch.setattr(rekeywalk, "WALK_SECONDS", 0.0)
    _a, b, sid, notice, new_key, _claims = await _aged_out(devices, "walk told", CLAIMS_KEPT + 3)
    await _slot_served_with(devices, sid, notice)
    with pytest.raises(ImportError_) as err:
        await b.pull(sid)
    assert err.value.kind == "rekey_unconfirmed", err.value
    fix = pull_fix("rekey_unconfirmed", sid)
    # main: the fork of a notice no device takes
    assert "fork" not in fix and "each pull goes on" in fix, fix
    for _ in range(40):
        with contextlib.suppress(ImportError_):
            await b.pull(sid)
        if b.ctx.keys.session_key(sid) == new_key:
            break
    assert b.ctx.keys.session_key(sid) == new_key
    assert not rekeywalk.under_way(sid)
    assert "fork" in pull_fix("rekey_unconfirmed", sid)


async def test_an_imports_walk_reports_its_progress(devices, monkeypatch):
    """An import's walk reads up to CLAIMS_WALK manifests (~50 s on a store answering in 50 ms) with nothing said:
    `sessiond import` sat silent. It reports each manifest read and its end (the daemon's `claims` progress event,
    which the CLI's import draws as a bar)."""
    monkeypatch.setattr(rekeywalk, "WALK_SECONDS", 0.0)
    a, _b, sid, notice, _key, _claims = await _aged_out(devices, "walk shown", CLAIMS_KEPT + 4)
    old_announce = bytes(announce_key(a.ctx.keys.write_secret(sid)).verify_key)
    claim = {"a": notice["a"], "h": notice_hash(notice), "o": old_announce}
    store, pk, keys = await a.ctx.store_for(sid), a.ctx.keys.head_pk(sid), a.ctx.keys.session_keys(sid)
    seen: list[tuple[int, int]] = []
    args = (store, sid, pk, a.ctx.db.device_id, keys, claim, 10.0)
    assert await rekeywalk.claimed_before(*args, bounded=False, progress=lambda d, t: seen.append((d, t))) is True
    done = [d for d, _t in seen]
    # main: no progress at all
    assert len(done) >= 5 and done == sorted(done), seen
    assert {t for _d, t in seen} == {rekeywalk.CLAIMS_WALK} and done[-1] == rekeywalk.CLAIMS_WALK, seen


async def test_an_import_refused_by_a_notice_publishes_the_walks_progress(devices, monkeypatch):
    """The import's check of a notice (rekeyproof.refused_code) publishes the walk as `claims` progress events of the
    session, ending complete."""
    a, b, sid, notice, _key, _claims = await _aged_out(devices, "walk published", CLAIMS_KEPT + 4)
    code = (await a.share(sid, write=False, passphrase=None, expires_in=None))["code"]
    await a.stop()  # (A's polls meanwhile would take its notice up again: its claim back in its current manifest)
    await _slot_served_with(devices, sid, notice)
    events: list[dict] = []
    monkeypatch.setattr(b.ctx, "on_event", events.append)
    with pytest.raises(ImportError_):
        await b.import_code(code, None)
    walked = [(e["done"], e["total"]) for e in events if e["type"] == "progress" and e["task"] == "claims"]
    # main: none
    assert walked and walked[-1] == (rekeywalk.CLAIMS_WALK, rekeywalk.CLAIMS_WALK), events
    assert {e["session"] for e in events if e["type"] == "progress" and e["task"] == "claims"} == {sid}


async def test_the_clis_import_draws_the_walk_and_json_stays_clean(devices, make_daemon):
    """`sessiond import` of a code whose slot holds such a notice: the walk drawn as a bar on a terminal (standard
    error), standard output with --json the answer alone."""
    a, _b, sid, notice, _key, _claims = await _aged_out(devices, "walk drawn", CLAIMS_KEPT + 4)
    code = (await a.share(sid, write=False, passphrase=None, expires_in=None))["code"]
    await a.stop()  # (A's polls meanwhile would take its notice up again: its claim back in its current manifest)
    await _slot_served_with(devices, sid, notice)
    other = make_daemon(devices.store_path).start()
    status, out, err = await asyncio.to_thread(under_terminal, other.home, "import", "--json", stdin=code.encode())
    assert status != 0, (out, err)  # (refused: the notice is one no device takes, or the code revoked)
    assert json.loads(out)["error"]["code"], out  # standard output: the JSON alone
    # main: no bar at all, the walk silent
    assert BAR in err and f"import: reading older manifests of {sid}" in err, err


async def test_a_walk_left_behind_by_another_notice_in_the_slot_does_not_say_wait(devices, monkeypatch):
    """A walk cut short stays kept (in memory and in the database) once the slot holds another notice, whose own walk
    ends refusing it: `rekeywalk.under_way(sid)` was true for any cut walk of the session, so doctor said to wait
    for a walk that never goes on, not the fork a notice no device takes calls for, and the walk's row stayed in
    claims_walks for as long as the session. under_way names only the walk of the notice the last check was of, and
    a walk left behind is dropped, in memory and in the database."""
    monkeypatch.setattr(rekeywalk, "WALK_SECONDS", 0.0)
    _a, b, sid, first, _key, _claims = await _aged_out(devices, "walk left", CLAIMS_KEPT + 3)
    await _slot_served_with(devices, sid, first)
    with pytest.raises(ImportError_) as err:
        await b.pull(sid)
    assert err.value.kind == "rekey_unconfirmed" and rekeywalk.under_way(sid), err.value
    walks = devices.dbb.syncstate.claims_walks.c.committed
    [(first_walk,)] = await walks.fetchall("SELECT walk FROM claims_walks WHERE session_id=?", (sid,))
    other, _ = await _abandoned_notice(devices, sid)  # (a notice of the slot its author never claimed)
    await _slot_served_with(devices, sid, other)
    for _ in range(40):
        with pytest.raises(ImportError_) as err:
            await b.pull(sid)
        assert err.value.kind == "rekey_unconfirmed", err.value
        if "none of its older manifests" in str(err.value):  # (its walk done: refused for good)
            break
    assert "none of its older manifests" in str(err.value), err.value
    # main: the first notice's walk, cut short, still counted as under way: "sessiond sync --wait" for it
    assert not rekeywalk.under_way(sid)
    assert "fork" in pull_fix("rekey_unconfirmed", sid)
    rows = [r[0] for r in await walks.fetchall("SELECT walk FROM claims_walks WHERE session_id=?", (sid,))]
    # main: the first notice's walk, kept for good (the other's, done, is kept: where it ended)
    assert first_walk not in rows and len(rows) == 1, rows


async def test_a_walk_left_behind_as_the_keys_switch_is_dropped_from_the_database(devices, monkeypatch):
    """A walk cut short, then the slot holds another notice its author claims in its current manifest (no walk): the
    device takes it and switches keys. The first notice's walk, of a generation the session left, stayed in
    claims_walks for as long as the session: dropped as the keys switch."""
    monkeypatch.setattr(rekeywalk, "WALK_SECONDS", 0.0)
    _a, b, sid, first, _key, claims = await _aged_out(devices, "walk switched", CLAIMS_KEPT + 3)
    await _slot_served_with(devices, sid, first)
    with pytest.raises(ImportError_):
        await b.pull(sid)
    walks = devices.dbb.syncstate.claims_walks.c.committed
    assert await walks.fetchall("SELECT walk FROM claims_walks WHERE session_id=?", (sid,))  # (the walk kept)
    old_announce = bytes(announce_key(devices.a.ctx.keys.write_secret(sid)).verify_key)
    taken, new_key = await _abandoned_notice(devices, sid)
    mine = {"a": taken["a"], "h": notice_hash(taken), "o": old_announce}
    await _claims_pushed(devices, sid, [*claims, mine][-CLAIMS_KEPT:])
    await _taken(devices, b, sid, taken, new_key)
    assert not rekeywalk.under_way(sid)
    # main: the first notice's walk kept for good
    assert await walks.fetchall("SELECT walk FROM claims_walks WHERE session_id=?", (sid,)) == []
