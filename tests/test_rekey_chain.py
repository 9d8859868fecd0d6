"""A device away while a session was rekeyed many times over: the rekeying device's log has moved on to the
last rekey's key, so a device taking the first notice follows the chain of slots after it to find that key
(sync/rekeyproof.py). Was: the chain was followed 8 slots at most, and a device away through 9 rekeys or more
took the author's log, sealed under a key past the 8th, for a second device's rekey and refused every notice
for good ("two devices claim to have rekeyed it"): found by tests/test_crash_rekey_loop.py, whose writer rekeys
in a loop while the other is killed."""

from __future__ import annotations

import pytest

from conftest import wait_for
from sessiond.sync import rekeyproof
from sessiond.sync.errors import ImportError_
from sessiond.sync.manifest import CLAIMS_KEPT

REKEYS = 12  # past the 8 of before, well inside rekeyproof.CHAIN_MAX


def _contents(d, sid: str) -> list[str]:
    return [m["content"] for m in d.client().messages(sid, limit=1000)["messages"]]


def test_a_device_away_through_many_rekeys_takes_them_all_and_converges(make_daemon, store_dir):
    assert REKEYS <= 12  # (rekeyproof.CHAIN_MAX: see the test below)
    url = f"file://{store_dir}"
    a, b = make_daemon(url).start(), make_daemon(url).start()
    sid = a.client().create_session(name="rekeyed often")["id"]
    a.client().append(sid, "user", "first")
    b.client().import_code(a.client().share(sid, write=True)["code"])
    b.stop()  # B is away through every rekey
    for i in range(REKEYS):
        a.client().rekey(sid)
        a.client().append(sid, "user", f"after rekey {i}")
    assert a.client().sync(sid, wait=True, timeout=30)["complete"]
    b.start()
    b.client().append(sid, "user", "from b")

    def converged() -> bool:
        for d in (b, a):
            d.client().sync(sid, wait=True, timeout=10)
        return _contents(a, sid) == _contents(b, sid) and "from b" in _contents(a, sid)

    wait_for(converged, timeout=60, interval=0.5, what="B takes every rekey and the devices converge")
    assert [f"after rekey {i}" for i in range(REKEYS)] == [t for t in _contents(b, sid) if t.startswith("after rekey")]
    status = b.client().status()["sync"][sid]
    assert not status.get("pull_error"), status
    keys = []
    for d in (a, b):
        with open(f"{d.home}/keys/sessions/{sid}.key", "rb") as f:
            keys.append(f.read())
    assert keys[0] == keys[1]  # one key: the last rekey's


async def _away_through(devices, rekeys: int, *, gc: bool = False) -> tuple[str, str]:
    """B away while A rekeys the shared session `rekeys` times (a message after each), then B's pull refused:
    (the session, what the refusal said). Checks B keeps what it had, and that a new share code imported catches
    it up. `gc`: A's gc frees what its log let go (its older manifests) before B comes back."""
    a, b = await devices.open()
    await a.start()
    sid = await devices.shared("rekeyed often", write=True)
    for i in range(rekeys):
        await a.rekey(sid)
        await devices.dba.append_messages(sid, [{"role": "user", "content": f"after rekey {i}"}])
    assert (await a.sync_now(sid, wait=True, timeout=30))["complete"]
    if gc:
        assert (await a.gc(grace=0, dry_run=False))["objects"] > 0
    before = [m["content"] for m in await devices.dbb.list_messages(sid, limit=100)]
    with pytest.raises(ImportError_) as err:
        await b.pull(sid)
    assert err.value.kind == "rekey_unconfirmed", str(err.value)
    assert [m["content"] for m in await devices.dbb.list_messages(sid, limit=100)] == before
    code = (await a.share(sid, write=True, passphrase=None, expires_in=None))["code"]
    await b.import_code(code, None)
    await b.pull(sid)
    want = [m["content"] for m in await devices.dba.list_messages(sid, limit=100)]
    assert [m["content"] for m in await devices.dbb.list_messages(sid, limit=100)] == want
    assert f"after rekey {rekeys - 1}" in want
    return sid, str(err.value)


async def test_a_device_away_through_more_rekeys_than_it_follows_is_told_to_import_a_new_code(devices, monkeypatch):
    """Past rekeyproof.CHAIN_MAX rekeys (3 here) the device cannot check the first notice: it says so and what to
    do (was: "two devices claim to have rekeyed it", which sent the user after a second device that did not
    exist), keeps what it has, and a new share code imported catches it up."""
    monkeypatch.setattr(rekeyproof, "CHAIN_MAX", 3)
    _, said = await _away_through(devices, 5)
    assert "more than 3 times" in said and "share code" in said, said
    assert "two devices" not in said


async def test_a_device_away_through_more_rekeys_than_its_author_claims_takes_them_while_its_manifests_last(devices):
    """An author's log keeps the claims of its last CLAIMS_KEPT rekeys only (sync/manifest.py); its older manifests,
    which claimed the first ones, stay in the store until its gc frees them (a day after, by default). A device away
    through more rekeys than that by one device, back before the gc, reads the first notice's claim there and takes
    every rekey (was: told to import a new share code)."""
    a, b = await devices.open()
    await a.start()
    sid = await devices.shared("rekeyed often", write=True)
    for i in range(CLAIMS_KEPT + 2):
        await a.rekey(sid)
        await devices.dba.append_messages(sid, [{"role": "user", "content": f"after rekey {i}"}])
    assert (await a.sync_now(sid, wait=True, timeout=30))["complete"]
    await b.pull(sid)
    want = [m["content"] for m in await devices.dba.list_messages(sid, limit=100)]
    assert [m["content"] for m in await devices.dbb.list_messages(sid, limit=100)] == want
    assert f"after rekey {CLAIMS_KEPT + 1}" in want
    assert b.ctx.keys.session_key(sid) == a.ctx.keys.session_key(sid)


async def test_a_device_away_through_more_rekeys_than_its_author_claims_is_told_to_import_a_new_code(devices):
    """An author's log keeps the claims of its last CLAIMS_KEPT rekeys only (sync/manifest.py): a device away
    through more rekeys by one device, its older manifests freed by its gc, cannot check the first notice. Was: told
    the notice was "forged by a writer" and to go on in a new session (`sessiond fork`), for a rekey every other
    device took; now told what happened and to import a new share code, which catches it up."""
    _, said = await _away_through(devices, CLAIMS_KEPT + 2, gc=True)
    assert f"more than {CLAIMS_KEPT} times" in said and "new share code" in said, said
    assert "forged" not in said and "fork" not in said, said
