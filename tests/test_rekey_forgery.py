"""A dropped writer forging a rekey notice (docs/SECURITY.md, "A dropped writer"): the notice sits in
the old members slot, which every writer of the old generation can sign, so a writer that a rekey
dropped can overwrite it with its own, boxed to the devices kept. A kept device that was away through
the rekey must not take it: the notice's author has to claim it in its own head's manifest, and no
other member may have gone on under other keys (sync/rekeyproof.py). Real daemons, one file:// store;
the forger is the dropped device's own keys used directly on the store, as a modified sessiond would."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import shlex
import time

import pytest
from blake3 import blake3
from nacl.public import SealedBox
from nacl.signing import VerifyKey

from conftest import cli_json, flag_dir, rekeys_at_once, run_cli, wait_for, write_config
from sessiond.client import ApiError
from sessiond.stores.cid import CIDV1_RAW_BLAKE3, digest
from sessiond.stores.file import FileStore
from sessiond.stores.registry import RegistryEntry
from sessiond.sync import dagcbor
from sessiond.sync.crypto import manifest_key, members_key, open_unpadded, seal
from sessiond.sync.heads import head_data, manifest_hash_of, open_manifest
from sessiond.sync.keys import KeyStore
from sessiond.sync.manifest import encode_manifest, parse_manifest
from sessiond.sync.members import announce_key
from sessiond.sync.membersobject import SALT_LEN, T_MEMBERS, seal_small


def _key(d, sid):
    with open(os.path.join(d.home, "keys", "sessions", sid + ".key"), "rb") as f:
        return f.read()


def _messages(d, sid):
    return [m["content"] for m in d.client().messages(sid, limit=10_000)["messages"]]


def _device(d):
    return d.client().status()["device_id"]


async def _forge(
    store_dir: str,
    forger_home: str,
    sid: str,
    author: str,
    claim: bool,
    leave_out: str | None = None,
    later: dict | None = None,
    over: bytes | None = None,
) -> bytes:
    """Overwrite the old members slot with a notice naming keys the forger chose, boxed to every member
    (but device `leave_out`: then the slot may hold no notice yet, the forger's own "rekey" dropping that
    device); with `claim`, the forger's own head claims it first (as a real rekey's author does). `later`:
    fields a later sessiond adds, {"notice": {...}, "slot": {...}, "member": {...}} (each member entry's), in
    the notice the forger's own rekey writes (the slot may then hold no notice yet). `over`: the data of an entry of
    the revision written, on another store of a mirror, that the slot's entry is to rank over (the mirror reads the
    higher of two). Returns the forged session key."""
    own, later = later is not None, later or {}
    ks = KeyStore(os.path.join(forger_home, "keys"))
    old_key, old_write = ks.session_key(sid), ks.write_secret(sid)
    assert old_key is not None and old_write is not None
    store = FileStore(store_dir, create=False)
    slot_key = announce_key(old_write)
    old_announce = bytes(slot_key.verify_key)
    entry = await store.get_head(b"\xed" + old_announce)
    assert entry is not None
    h, salt = entry.data[1:33], entry.data[33:]
    slot = dagcbor.decode(open_unpadded(await store.get(h), members_key(old_key, salt)))
    assert "rekey" in slot or leave_out or own  # the real rekey's notice, which the forger replaces
    new_key, new_write = os.urandom(32), os.urandom(32)
    new_announce = bytes(announce_key(new_write).verify_key)
    secret = dagcbor.encode({"a": new_announce, "k": new_key, "w": new_write})
    boxes = [
        {"k": m["k"], "x": SealedBox(VerifyKey(m["k"][1:]).to_curve25519_public_key()).encrypt(secret)}
        for m in slot["m"]
        if m["d"] != leave_out
    ]
    notice = {"a": new_announce, "b": boxes, "d": author, "t": int(time.time()), **later.get("notice", {})}
    if claim:  # the forger's own manifest, one revision on, claiming the forged notice
        pk = ks.head_pk(sid)
        head = await store.get_head(pk)
        assert head is not None
        mhash = manifest_hash_of(head)
        man = parse_manifest(
            open_manifest(await store.get(mhash), mhash, old_key, pk, head.revision),
            sid=sid,
            head_pk=pk,
            rev=head.revision,
        )
        rev = head.revision + 1
        c = {"a": new_announce, "h": blake3(dagcbor.encode(notice)).digest(), "o": old_announce}  # FORMATS.md §6
        plain = encode_manifest(
            sid, man.device, rev, pk, man.last_seq, man.lamport, man.levels, CIDV1_RAW_BLAKE3 + mhash, [c]
        )
        ct, _ = seal(plain, manifest_key(old_key, pk, rev), pad=False)
        await store.set_head(RegistryEntry.create(ks.head_key(sid), rev, head_data(await store.put(ct))))
    members = [{**m, **later.get("member", {})} for m in slot["m"]]
    plain = dagcbor.encode({"m": members, "rekey": notice, "s": sid, "v": 1, "ty": T_MEMBERS, **later.get("slot", {})})
    while True:  # (sealed again until it ranks over `over`: a new salt, a new object)
        salt = os.urandom(SALT_LEN)
        sealed = seal_small(plain, members_key(old_key, salt))
        if over is None or b"\x1e" + digest(sealed) + salt > over:
            break
    h = await store.put(sealed)
    await store.set_head(RegistryEntry.create(slot_key, entry.revision + 1, b"\x1e" + h + salt))
    return new_key


def _three_writers(make_daemon, store_dir, d_settings: dict | None = None):
    """Writers R, K and D of one session; D's config.toml holds `d_settings`."""
    url = "file://" + store_dir
    r, k, d = (make_daemon(url) for _ in range(3))
    if d_settings:
        write_config(d.home, **d_settings)
    for dev in (r, k, d):
        dev.start()
    sid = r.client().create_session(name="kept secret")["id"]
    r.client().append(sid, "user", "before the rekey")
    code = r.client().share(sid, write=True)["code"]
    for dev, text in ((k, "K joins"), (d, "D joins")):
        dev.client().import_code(code)
        dev.client().append(sid, "assistant", text)  # a push makes it a member (a writer)
        dev.client().sync(wait=True)
    r.client().sync(wait=True)
    for dev in (r, k, d):
        wait_for(lambda dev=dev: {"K joins", "D joins"} <= set(_messages(dev, sid)), timeout=20)
    return r, k, d, sid


def _let_back_in(r, d, sid) -> None:
    """R drops writer D by a rekey, then lets it back in with a new code; D writes "D let back in", which R holds."""
    r.client().rekey(sid, drop=[_device(d)])
    d.client().sync(sid, wait=True, timeout=10)
    assert d.client().get_session(sid)["access"] == "revoked"
    d.client().import_code(r.client().share(sid, write=True)["code"])
    d.client().append(sid, "assistant", "D let back in")
    d.client().sync(sid, wait=True, timeout=10)
    wait_for(lambda: r.client().sync(sid, wait=True, timeout=10) and "D let back in" in _messages(r, sid), timeout=30)


@pytest.mark.parametrize("author", ["forger", "rekeyer"])
def test_a_kept_device_away_through_a_rekey_refuses_a_dropped_writers_forged_notice(make_daemon, store_dir, author):
    r, k, d, sid = _three_writers(make_daemon, store_dir)
    ids = {"rekeyer": _device(r), "forger": _device(d)}
    old = _key(k, sid)
    k.stop()  # K is away through the rekey
    res = r.client().rekey(sid, drop=[ids["forger"]])
    assert res["dropped"] == [ids["forger"]]
    r.client().append(sid, "user", "after the rekey")
    r.client().sync(wait=True)
    d.stop()
    # D, dropped, overwrites the notice: naming itself (and claiming it in its own head), or naming R
    forged = asyncio.run(_forge(store_dir, d.home, sid, author=ids[author], claim=author == "forger"))
    k.start()
    st = k.client().sync(sid, wait=True, timeout=10)
    err = st["sessions"][sid].get("pull_error") or ""
    assert "rekey" in err and "claim" in err, st
    assert _key(k, sid) == old != forged  # K took neither key: it did not switch to the forger's
    assert "after the rekey" not in _messages(k, sid)
    # and it says so again at every pull, without switching, and so does verify
    st = k.client().sync(sid, wait=True, timeout=10)
    assert "rekey" in (st["sessions"][sid].get("pull_error") or "")
    res = run_cli(k.home, "verify", sid, "--json")
    assert res.returncode != 0, res
    report = json.loads(res.stdout)
    assert not report["ok"] and any("rekey refused" in p for p in report["sessions"][0]["problems"]), report
    assert _key(k, sid) == old


@pytest.mark.parametrize("author", ["a writer that made no rekey", "no member"])
def test_a_notice_leaving_a_device_out_that_its_author_does_not_claim_does_not_revoke_it(
    make_daemon, store_dir, author
):
    """Writer D (no rekey made: D still writes the session) writes a notice into the members slot with a box
    for every member but K, naming as its author R, which made no rekey, or no member at all. K was marked
    revoked by any notice without a box for it, though nothing confirmed that a device of the session had
    rekeyed: now it checks that the author the notice names claims it in its own head (as it does for a
    notice with its box), refuses it (said at every pull, and by `verify`), and keeps writing."""
    r, k, d, sid = _three_writers(make_daemon, store_dir)
    old, d_id = _key(k, sid), _device(d)
    d.stop()
    named = _device(r) if author.startswith("a writer") else "not-a-device-of-the-session"
    asyncio.run(_forge(store_dir, d.home, sid, author=named, claim=False, leave_out=_device(k)))
    for _ in range(2):  # at every pull
        st = k.client().sync(sid, wait=True, timeout=10)
        err = st["sessions"][sid].get("pull_error") or ""
        assert "rekey" in err and "leaves this device out" in err, st
        assert k.client().get_session(sid)["access"] == "write"
    res = run_cli(k.home, "verify", sid, "--json")
    report = json.loads(res.stdout)
    assert res.returncode != 0 and any("rekey refused" in p for p in report["sessions"][0]["problems"]), report
    assert cli_json(k.home, "show", sid)["access"] == "write"
    assert _key(k, sid) == old
    k.client().append(sid, "assistant", "K still writes")  # not refused as revoked
    # R took the forged notice (which has its box) neither: its author does not claim it
    st = r.client().sync(sid, wait=True, timeout=10)
    assert "rekey" in (st["sessions"][sid].get("pull_error") or ""), st
    assert _key(r, sid) == old
    # and the notice stays in the slot (docs/SECURITY.md): R cannot rekey past it, a new code of it is refused
    # (each saying so, and naming the way on, a new session: test_rekey_jam.py)
    with pytest.raises(ApiError) as e:
        r.client().rekey(sid, drop=[d_id])
    assert e.value.code == "rekey_unconfirmed" and "sessiond fork" in e.value.message, e.value.message
    n = make_daemon("file://" + store_dir).start()
    with pytest.raises(ApiError) as e:
        n.client().import_code(r.client().share(sid, write=True)["code"])
    assert e.value.code == "rekey_unconfirmed", (e.value.code, e.value.message)


def test_a_writer_that_claims_a_notice_leaving_a_device_out_has_rekeyed_without_it(make_daemon, store_dir):
    """What no device can tell from a real rekey (docs/SECURITY.md, "A writer and the rekey"): a writer that
    holds the write secret writes a notice leaving K out and claims it in its own head, as `sessiond rekey
    --drop K` on it would. K takes itself for revoked, its refusal naming that writer; R, boxed, takes it."""
    r, k, d, sid = _three_writers(make_daemon, store_dir)
    d_id = _device(d)
    d.stop()
    forged = asyncio.run(_forge(store_dir, d.home, sid, author=d_id, claim=True, leave_out=_device(k)))
    st = k.client().sync(sid, wait=True, timeout=10)
    err = st["sessions"][sid].get("pull_error") or ""
    assert "rekeyed without this device" in err and f"by device {d_id}" in err, st
    assert k.client().get_session(sid)["access"] == "revoked"

    def r_took_it():
        r.client().sync(sid, wait=True, timeout=10)
        return _key(r, sid) == forged

    wait_for(r_took_it, timeout=20, interval=0.3)


def test_a_dropped_writer_can_make_a_kept_device_away_through_the_rekey_take_itself_for_revoked(make_daemon, store_dir):
    """What a device cannot tell apart without the new key (docs/SECURITY.md, "A writer and the rekey"): R
    drops D while K is away; D writes over R's notice one with no box for K, naming R. R's head has gone
    on under the new key, which K is not given, so K takes itself for revoked, naming R; a new code from R
    makes it a writer again."""
    r, k, d, sid = _three_writers(make_daemon, store_dir)
    r_id, d_id, k_id = _device(r), _device(d), _device(k)
    k.stop()
    r.client().rekey(sid, drop=[d_id])
    r.client().append(sid, "user", "after the rekey")
    r.client().sync(wait=True)
    d.stop()
    asyncio.run(_forge(store_dir, d.home, sid, author=r_id, claim=False, leave_out=k_id))
    k.start()
    st = k.client().sync(sid, wait=True, timeout=10)
    err = st["sessions"][sid].get("pull_error") or ""
    assert "rekeyed without this device" in err and f"by device {r_id}" in err, st
    assert k.client().get_session(sid)["access"] == "revoked"
    k.client().import_code(r.client().share(sid, write=True)["code"])
    assert k.client().get_session(sid)["access"] == "write"
    wait_for(lambda: "after the rekey" in _messages(k, sid), timeout=20)


def test_a_device_revoked_by_a_notice_then_boxed_by_the_one_that_replaces_it_writes_again(make_daemon, store_dir):
    """K takes itself for revoked from a notice leaving it out (writer D's, claimed: a rekey by D); D then
    writes over it a notice that boxes the new key to K too, and claims that one instead. K, which can read
    the new key and is in the new slot, takes it: its access is `write` again, not left `revoked`."""
    r, k, d, sid = _three_writers(make_daemon, store_dir)
    d_id = _device(d)
    r.stop()  # R takes neither notice: its head stays under the old key, claiming nothing
    d.stop()
    asyncio.run(_forge(store_dir, d.home, sid, author=d_id, claim=True, leave_out=_device(k)))
    st = k.client().sync(sid, wait=True, timeout=10)
    assert "rekeyed without this device" in (st["sessions"][sid].get("pull_error") or ""), st
    assert k.client().get_session(sid)["access"] == "revoked"
    forged = asyncio.run(_forge(store_dir, d.home, sid, author=d_id, claim=True))

    def took_it():
        k.client().sync(sid, wait=True, timeout=10)
        return _key(k, sid) == forged

    wait_for(took_it, timeout=20, interval=0.3)
    assert k.client().get_session(sid)["access"] == "write"
    assert cli_json(k.home, "show", sid)["access"] == "write"
    k.client().append(sid, "assistant", "K writes again")
    st = k.client().sync(sid, wait=True, timeout=10)
    assert not st["sessions"][sid].get("pull_error"), st


def test_a_device_away_through_two_rekeys_takes_both(make_daemon, store_dir):
    r, k, d, sid = _three_writers(make_daemon, store_dir)
    k.stop()
    r.client().rekey(sid, drop=[_device(d)])
    r.client().append(sid, "user", "after the first rekey")
    r.client().rekey(sid)
    r.client().append(sid, "user", "after the second rekey")
    r.client().sync(wait=True)
    k.start()
    wait_for(lambda: "after the second rekey" in _messages(k, sid), timeout=30)
    assert _key(k, sid) == _key(r, sid)
    k.client().append(sid, "assistant", "K is back")
    wait_for(lambda: "K is back" in _messages(r, sid), timeout=20)
    for dev in (r, k):
        st = dev.client().sync(sid, wait=True, timeout=10)
        assert not st["sessions"][sid].get("pull_error"), st
        assert cli_json(dev.home, "verify")["ok"], dev.home


def test_a_writer_that_never_wrote_can_rekey_and_the_others_take_it(make_daemon, store_dir):
    """The claim needs a head: a device with nothing of its own in the log pushes a manifest of no
    operations to carry it."""
    url = "file://" + store_dir
    r, w = make_daemon(url).start(), make_daemon(url).start()
    sid = r.client().create_session(name="quiet writer")["id"]
    r.client().append(sid, "user", "hello")
    w.client().import_code(r.client().share(sid, write=True)["code"])  # a read-write import joins at once
    res = w.client().rekey(sid)
    assert res["kept"] == [_device(r)]
    wait_for(lambda: _key(r, sid) == _key(w, sid), timeout=20)
    r.client().append(sid, "user", "under the new key")
    wait_for(lambda: "under the new key" in _messages(w, sid), timeout=20)
    for dev in (r, w):
        st = dev.client().sync(sid, wait=True, timeout=10)
        assert not st["sessions"][sid].get("pull_error"), st
    # a device new to the session reads every member's log with the new key alone: the rekeying
    # device's head, which it made only for its claim, went over to the new key too
    n = make_daemon(url).start()
    n.client().import_code(w.client().share(sid)["code"])
    assert _messages(n, sid) == _messages(r, sid)


def test_a_third_device_takes_the_winner_of_two_concurrent_rekeys(make_daemon, store_dir):
    """The loser of the race for the slot claimed its notice before publishing it: it takes the claim
    back, so the devices taking the winner's notice do not see two rekeys for long."""
    r, k, d, sid = _three_writers(make_daemon, store_dir)
    results = rekeys_at_once(sid, {"r": r, "d": d})
    assert any(isinstance(x, dict) for x in results.values()), results

    def settled():
        for dev in (r, k, d):
            dev.client().sync(sid, wait=True, timeout=10)
        return len({_key(dev, sid) for dev in (r, k, d)}) == 1

    wait_for(settled, timeout=40, interval=0.3)
    k.client().append(sid, "assistant", "K after")
    wait_for(lambda: all("K after" in _messages(dev, sid) for dev in (r, d)), timeout=20)
    for dev in (r, k, d):
        st = dev.client().sync(sid, wait=True, timeout=10)
        assert not st["sessions"][sid].get("pull_error"), st


def test_a_device_kept_by_one_rekey_and_dropped_by_the_next_is_told_it_was_left_out(make_daemon, store_dir):
    r, k, d, sid = _three_writers(make_daemon, store_dir)
    old = _key(k, sid)
    k_id = _device(k)
    k.stop()
    r.client().rekey(sid, drop=[_device(d)])
    r.client().rekey(sid, drop=[k_id])
    r.client().append(sid, "user", "after both rekeys")
    r.client().sync(wait=True)
    k.start()
    st = k.client().sync(sid, wait=True, timeout=10)
    assert "without this device" in (st["sessions"][sid].get("pull_error") or ""), st
    assert "after both rekeys" not in _messages(k, sid)
    assert _key(k, sid) == old


def test_a_restored_device_key_goes_on_claiming_its_rekey(make_daemon, store_dir):
    """The rekeying device's claim is carried in every manifest it pushes; a device restored from its 24
    words into a fresh home reads the claim back from its own manifest at import (sync/importer.py), so
    its next push still claims the notice, and a device that was away through the rekey takes it."""
    r, k, d, sid = _three_writers(make_daemon, store_dir)
    k_id = _device(k)
    k.stop()  # K is away through the rekey and the restore
    r.client().rekey(sid, drop=[_device(d)])
    r.client().append(sid, "user", "after the rekey")
    code = r.client().share(sid, write=True)["code"]
    r.client().sync(wait=True)
    words = run_cli(r.home, "key", "export", check=True).stdout
    r.stop()
    restored = make_daemon("file://" + store_dir)
    assert run_cli(restored.home, "key", "import", input=words).returncode == 0
    restored.start()
    # K's log is still under the old key: the import takes the rest, and says whose messages are to come
    res = restored.client().import_code(code)
    assert res["waiting_for"] == [k_id], res
    have = _messages(restored, sid)
    # D, dropped, is not followed; its log as it stood at the rekey is, frozen in the new slot
    assert "after the rekey" in have and "D joins" in have and "K joins" not in have
    report = cli_json(restored.home, "verify", sid)
    assert report["ok"] and k_id in report["sessions"][0]["waiting"][0], report
    # and the daemon's status says so too, for as long as it lasts
    assert cli_json(restored.home, "status")["sync"][sid]["waiting_for"] == [k_id]
    text = run_cli(restored.home, "status", check=True).stdout
    assert "1 session(s) wait for a device away through a rekey" in text and k_id in text, text
    # the command its hint quotes runs as printed, on this home (cli/output.for_home)
    assert f"`sessiond rekey --home {shlex.quote(restored.home)} {sid} --drop DEVICE`" in text, text
    restored.client().append(sid, "user", "from the restored device")  # a new head of R's log
    restored.client().sync(wait=True)
    st = restored.client().sync(sid, wait=True, timeout=10)
    assert not st["sessions"][sid].get("pull_error"), st
    k.start()
    wait_for(lambda: "from the restored device" in _messages(k, sid), timeout=30)
    assert _key(k, sid) == _key(restored, sid)
    st = k.client().sync(sid, wait=True, timeout=10)
    assert not st["sessions"][sid].get("pull_error"), st
    # K went over to the new key, pushing its log under it: the restored device gets what K wrote
    wait_for(lambda: "K joins" in _messages(restored, sid), timeout=30)
    assert _messages(restored, sid) == _messages(k, sid)
    report = cli_json(restored.home, "verify", sid)
    assert report["ok"] and not report["sessions"][0].get("waiting"), report
    assert "waiting_for" not in cli_json(restored.home, "status")["sync"][sid]


def test_what_a_dropped_writer_writes_afterwards_reaches_no_one(make_daemon, store_dir):
    """A dropped writer keeps the old key and its own head; the new members slot must not list it, or
    the kept devices (which hold the old key for the history) would go on following what it writes.
    D here is a writer that has not pulled since the rekey (its follower asleep), as a modified client
    would be: sessiond itself refuses writes once a pull has told it (test_revoked_access.py)."""
    asleep = {"poll_interval": 3600, "sync_interval": 3600}  # D pulls only when asked (`sync`)
    r, k, d, sid = _three_writers(make_daemon, store_dir, d_settings=asleep)
    r.client().rekey(sid, drop=[_device(d)])
    r.client().append(sid, "user", "after the rekey")
    wait_for(lambda: "after the rekey" in _messages(k, sid), timeout=30)
    d.client().append(sid, "assistant", "D after being dropped")  # pushed under the old key, to D's head
    wait_for(lambda: d.client().get_session(sid)["sync"]["pending"] == 0, timeout=30)  # pushed, not pulled
    k.client().append(sid, "assistant", "K after the rekey")
    for dev in (r, k):
        wait_for(lambda dev=dev: "K after the rekey" in _messages(dev, sid), timeout=30)
        dev.client().sync(sid, wait=True, timeout=10)
        assert "D after being dropped" not in _messages(dev, sid)
    # and a device new to the session reads D's log only as it stood at the rekey
    n = make_daemon("file://" + store_dir).start()
    res = n.client().import_code(r.client().share(sid)["code"])
    assert not res.get("waiting_for"), res
    assert _messages(n, sid) == _messages(r, sid)
    assert "D joins" in _messages(n, sid) and "D after being dropped" not in _messages(n, sid)
    # D, once it pulls, knows it was left out: it refuses what it writes from then on
    d.client().sync(sid, wait=True, timeout=10)
    with pytest.raises(ApiError) as e:
        d.client().append(sid, "assistant", "D once told")
    assert (e.value.status, e.value.code) == (409, "revoked")


def test_checkpoints_over_a_dropped_writers_messages_after_the_rekey(make_daemon, store_dir):
    """A device that joins after the rekey reads the dropped writer's log as it stood at the rekey (frozen
    in the new slot), so the checkpoints over it hold, the dropped writer's own too. And a checkpoint the
    dropped writer signed while it was one still verifies on the devices that hold it, though they no
    longer follow it."""
    r, k, d, sid = _three_writers(make_daemon, store_dir)
    cp_d = d.client().checkpoint(sid)
    d.client().sync(sid, wait=True, timeout=10)
    wait_for(lambda: any(c["device"] == _device(d) for c in r.client().checkpoints(sid)["checkpoints"]), timeout=20)
    cp_r = r.client().checkpoint(sid)  # over R's, K's and D's messages
    r.client().rekey(sid, drop=[_device(d)])
    r.client().append(sid, "user", "after the rekey")
    r.client().sync(wait=True)
    assert r.client().verify_proof(sid, cp_d)["ok"]
    n = make_daemon("file://" + store_dir).start()
    n.client().import_code(r.client().share(sid)["code"])
    # K's log reaches N once K has taken the rekey (until then N names K in waiting_for): K may not have yet
    wait_for(lambda: _messages(n, sid) == _messages(r, sid), timeout=30)
    assert "D joins" in _messages(n, sid)
    assert n.client().checkpoints(sid) == r.client().checkpoints(sid)
    assert n.client().verify_proof(sid, cp_r)["ok"] and n.client().verify_proof(sid, cp_d)["ok"]


def test_every_device_ends_with_the_dropped_writers_log_as_the_rekey_froze_it(make_daemon, store_dir):
    """What the dropped writer pushed just before the rekey, which a kept device away meanwhile never
    pulled from its head, reaches that device from the frozen log: every device, and one that imports
    later, holds the same messages. D's follower is asleep (it pulls when asked): D writes after the rekey as a
    writer that has not pulled since would (a pull of its own first would take the notice and refuse the append)."""
    asleep = {"poll_interval": 3600, "sync_interval": 3600}
    r, k, d, sid = _three_writers(make_daemon, store_dir, d_settings=asleep)
    k.stop()
    d.client().append(sid, "assistant", "D just before the drop")
    # pushed, not pulled (`sync` would wake D's follower too, whose round may come after the rekey)
    wait_for(lambda: d.client().get_session(sid)["sync"]["pending"] == 0, timeout=30)
    r.client().rekey(sid, drop=[_device(d)])
    d.client().append(sid, "assistant", "D after the drop")
    d.client().sync(sid, wait=True, timeout=10)
    r.client().append(sid, "user", "after the rekey")
    r.client().sync(wait=True)
    k.start()
    wait_for(lambda: {"after the rekey", "D just before the drop"} <= set(_messages(k, sid)), timeout=30)
    wait_for(lambda: "D just before the drop" in _messages(r, sid), timeout=30)
    n = make_daemon("file://" + store_dir).start()
    n.client().import_code(r.client().share(sid)["code"])
    for dev in (r, k):
        dev.client().sync(sid, wait=True, timeout=10)
    assert _messages(k, sid) == _messages(r, sid) == _messages(n, sid)
    assert "D after the drop" not in _messages(n, sid)


def test_a_kept_writer_that_never_comes_back_is_dropped_and_its_messages_reach_a_late_import(make_daemon, store_dir):
    """What `sessiond status` advises for a device waited for: a writer that still has the old key drops it
    by a rekey, which freezes its log as it stood, so a writer that imported meanwhile (and any device later)
    gets its messages and waits no more."""
    r, k, d, sid = _three_writers(make_daemon, store_dir)
    k_id = _device(k)
    k.stop()  # away through the rekey, and never back
    r.client().rekey(sid, drop=[_device(d)])
    n = make_daemon("file://" + store_dir).start()
    assert n.client().import_code(r.client().share(sid, write=True)["code"])["waiting_for"] == [k_id]
    assert "K joins" not in _messages(n, sid)
    text = run_cli(n.home, "status", check=True).stdout
    assert f"`sessiond rekey --home {shlex.quote(n.home)} {sid} --drop DEVICE`" in text, text
    r.client().rekey(sid, drop=[k_id])

    def n_took_it():
        n.client().sync(sid, wait=True, timeout=10)
        return "K joins" in _messages(n, sid)

    wait_for(n_took_it, timeout=30, interval=0.3)
    wait_for(lambda: "waiting_for" not in cli_json(n.home, "status")["sync"][sid], timeout=30)
    late = make_daemon("file://" + store_dir).start()
    res = late.client().import_code(r.client().share(sid)["code"])
    assert not res.get("waiting_for"), res
    assert _messages(late, sid) == _messages(n, sid) == _messages(r, sid)


def test_a_rekey_on_a_device_a_rekey_left_out_says_it_was_left_out(make_daemon, store_dir):
    """K, away while R rekeyed without it, runs `rekey` before any pull: the slot holds R's notice, which
    leaves K out and which R claims. The refusal says that K was rekeyed out, by R, and K is revoked (as a
    pull makes it); before, it said that K takes the new key at its next pull, which it never does."""
    r, k, d, sid = _three_writers(make_daemon, store_dir)
    r_id, k_id = _device(r), _device(k)
    k.stop()
    write_config(k.home, sync_interval=3600, poll_interval=3600)  # no pull of its own before its rekey
    r.client().rekey(sid, drop=[k_id])
    r.client().append(sid, "user", "after the rekey")
    r.client().sync(wait=True)
    k.start()
    res = run_cli(k.home, "rekey", sid, "--json")
    assert res.returncode != 0
    assert json.loads(res.stdout)["error"]["code"] == "revoked", res.stdout
    assert "rekeyed without this device" in res.stderr and f"by device {r_id}" in res.stderr, res.stderr
    assert "takes that key at its next pull" not in res.stderr, res.stderr
    assert k.client().get_session(sid)["access"] == "revoked"


def test_a_writer_dropped_let_back_in_and_dropped_again_keeps_what_it_wrote_while_let_back_in(make_daemon, store_dir):
    """A rekey carries on the frozen logs of the rekeys before it, and one frozen once stayed as it was: a
    writer dropped, let back in with a new code (its log under the new key, what it wrote since going with
    it) and dropped again had its log frozen anew, but the first freeze was kept, so what it wrote while it
    was a writer again never reached a device that imported the session later. Its revocation said the
    rekey did not say how far it read its log (the notice named no seq for it, as frozen before). The newer
    freeze of a head is the one kept now, and the notice names how far it reaches."""
    r, k, d, sid = _three_writers(make_daemon, store_dir)
    _let_back_in(r, d, sid)
    r.client().rekey(sid, drop=[_device(d)])
    st = d.client().sync(sid, wait=True, timeout=10)
    said = st["sessions"][sid].get("pull_error") or ""
    assert "rekeyed without this device" in said and "does not say how far" not in said, said
    assert "held here only" not in said, said  # everything it wrote was pushed before the rekey read its log
    n = make_daemon("file://" + store_dir).start()
    n.client().import_code(r.client().share(sid)["code"])
    assert "D let back in" in _messages(n, sid)


def test_a_device_kept_by_one_rekey_and_dropped_by_the_next_names_what_it_wrote_past_its_frozen_log(
    make_daemon, store_dir
):
    """A writer that learns it was left out by a rekey after one that kept it (it had not taken the first:
    rekeyproof.check_notice) is revoked as one left out by the first is, and what it wrote after the second
    rekey read its log reached no one as well; its revocation said nothing of it (only a notice leaving it
    out at once was asked how far it carried its log over). It names them now, from the later notice's s."""
    asleep = {"poll_interval": 3600, "sync_interval": 3600}  # K pulls only when asked (`sync`)
    r, k, d, sid = _three_writers(make_daemon, store_dir)
    write_config(k.home, **asleep)
    k.stop()
    k.start()
    r.client().rekey(sid, drop=[_device(d)])
    r.client().rekey(sid, drop=[_device(k)])
    late = k.client().append(sid, "assistant", "K after both rekeys")  # pushed under the old key, not pulled
    wait_for(lambda: k.client().get_session(sid)["sync"]["pending"] == 0, timeout=30)
    st = k.client().sync(sid, wait=True, timeout=10)
    said = st["sessions"][sid].get("pull_error") or ""
    assert "without this device" in said, st
    assert late["id"] in said and "held here only" in said, said
    assert k.client().get_session(sid)["access"] == "revoked"


def test_a_kept_writer_taking_the_notice_first_does_not_leave_the_new_slot_an_older_freeze(make_daemon, store_dir):
    """A kept writer that took a rekey's notice before the rekeying device wrote the new generation's members
    slot wrote that slot itself, with the frozen logs it knew: a dropped writer let back in and dropped again
    had there its first freeze. The rekeying device then found the slot holding a frozen log of every head it
    froze and did not write it (ensure_member compared head keys, not revisions), so a device importing the
    session later never got what the writer wrote while let back in (CI met it when K's pull came first)."""
    r, k, d, sid = _three_writers(make_daemon, store_dir)
    _let_back_in(r, d, sid)
    k.client().sync(sid, wait=True, timeout=10)  # K holds the first freeze, and knows D's newer log too
    r.stop()
    flag = os.path.join(flag_dir(), "published")
    r.env["SESSIOND_TEST_PAUSE"] = f"rekey.published:{flag}"
    r.start()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        rekeyed = pool.submit(r.client().rekey, sid, drop=[_device(d)])
        wait_for(lambda: os.path.exists(flag), timeout=20)  # the notice published, the new slot not written
        k.client().sync(sid, wait=True, timeout=10)  # K takes the notice first: it writes the new slot
        os.remove(flag)
        assert rekeyed.result(timeout=30)["dropped"] == [_device(d)]
    n = make_daemon("file://" + store_dir).start()
    n.client().import_code(r.client().share(sid)["code"])
    assert "D let back in" in _messages(n, sid)
