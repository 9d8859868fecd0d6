"""Races and crashes between devices of one shared session that lost or hid what a writer wrote: each shown
with real daemons over one file:// store, the order of the devices' steps held by pause points
(storage/testhooks.py) where it matters."""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import threading
from collections.abc import Callable, Iterator

import pytest

from conftest import flag_dir, wait_for, write_config
from test_members_lost import slot_file
from test_mirror import Relay
from test_rekey_forgery import _device, _let_back_in, _messages, _three_writers


def test_gc_on_a_writer_let_back_in_keeps_the_log_a_rekey_froze_of_it(make_daemon, store_dir):
    """A writer dropped by a rekey and let back in with a new code pushes its log again under the new key:
    the manifest the rekey froze (pinned in the new members slot's frozen logs) is one its head left, a gc
    candidate of its own. Its gc read every current head and not the frozen logs, and freed it: every
    later import of the session failed on the frozen log (the log damaged), and what the writer wrote
    before the drop was out of reach."""
    r, k, d, sid = _three_writers(make_daemon, store_dir)
    d.client().append(sid, "assistant", "D before the drop")
    d.client().sync(sid, wait=True, timeout=10)
    _let_back_in(r, d, sid)
    # K takes the rekey (its log under the new key, as an import reads it): until it does, an import holds K's
    # messages back by design (a writer away through a rekey: they come once it takes it), which failed the
    # comparison below now and then under load, when K's own pull came after the import
    wait_for(lambda: k.client().sync(sid, wait=True, timeout=10) and not _waiting_for(r, sid), timeout=30)
    d.client().gc(grace=0)
    n = make_daemon("file://" + store_dir).start()
    n.client().import_code(r.client().share(sid)["code"])
    assert "D before the drop" in _messages(n, sid)
    assert _messages(n, sid) == _messages(r, sid)


def _waiting_for(d, sid: str) -> list:
    """The writers daemon `d` waits for through a rekey in session `sid` (sync status's waiting_for)."""
    return d.client().sync(sid, wait=True, timeout=10)["sessions"][sid].get("waiting_for") or []


def _held(d, point: str):
    """Restart daemon `d` to hold at pause point `point`; the flag file that holds it (removed: let go)."""
    return _hold(d, point)[0]


def _hold(d, *points: str) -> list[str]:
    """Restart daemon `d` to hold at each of `points`; the flag files that hold them (each removed: let go)."""
    d.stop()
    base = flag_dir()
    flags = [os.path.join(base, point) for point in points]
    d.env["SESSIOND_TEST_PAUSE"] = ",".join(f"{point}:{flag}" for point, flag in zip(points, flags))
    d.start()
    return flags


def _arrivals(flag: str) -> int:
    """How many times a daemon arrived at the pause point of `flag` since it was last removed (a line each)."""
    try:
        with open(flag) as f:
            return len(f.readlines())
    except FileNotFoundError:
        return 0


def _let_the_pulls_apply(d, fetched: str, applied: str) -> None:
    """Let go the pulls of `d` held at pull.fetched (_hold(d, "pull.fetched", "pull.applied")); once each is
    past its apply (at pull.applied), restart `d` without the holds."""
    n = _arrivals(fetched)
    os.remove(fetched)
    wait_for(lambda: _arrivals(applied) >= n, timeout=30)
    d.stop()
    del d.env["SESSIOND_TEST_PAUSE"]
    d.start()


def _rekey_held_while(r, d, sid: str, point: str, puller) -> None:
    """R's rekey dropping D, held at `point` while D writes and `puller` pulls what it wrote; then let go."""

    def meanwhile() -> None:
        _written_and_pulled(d, sid, "D while R rekeys", puller)

    _rekey_held_doing(r, d, sid, point, meanwhile)


def _rekey_held_doing(r, d, sid: str, point: str, meanwhile: Callable[[], None]) -> None:
    """R's rekey dropping D, held at `point` while `meanwhile` runs; then let go."""
    flag = _held(r, point)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        rekeyed = pool.submit(r.client().rekey, sid, drop=[_device(d)])
        wait_for(lambda: os.path.exists(flag), timeout=20)
        meanwhile()
        os.remove(flag)
        assert rekeyed.result(timeout=30)["dropped"] == [_device(d)]


def _written_and_pulled(d, sid: str, text: str, *pullers) -> None:
    """D writes `text` and pushes it; each of `pullers` pulls until it holds it."""
    d.client().append(sid, "assistant", text)
    d.client().sync(sid, wait=True, timeout=10)
    for puller in pullers:
        wait_for(
            lambda puller=puller: puller.client().sync(sid, wait=True, timeout=10) and text in _messages(puller, sid),
            timeout=30,
        )


def _every_device_alike(make_daemon, store_dir: str, r, k, sid: str) -> None:
    """R writes after its rekey; once K has it, K, R and a device importing the session now hold the same."""
    r.client().append(sid, "user", "after the rekey")
    r.client().sync(sid, wait=True, timeout=10)
    wait_for(lambda: k.client().sync(sid, wait=True, timeout=10) and "after the rekey" in _messages(k, sid), timeout=30)
    r.client().sync(sid, wait=True, timeout=10)
    n = make_daemon("file://" + store_dir).start()
    n.client().import_code(r.client().share(sid)["code"])
    assert _messages(k, sid) == _messages(r, sid) == _messages(n, sid)


def test_a_kept_writer_that_pulled_the_dropped_writer_while_the_rekey_froze_it_holds_what_every_device_holds(
    make_daemon, store_dir
):
    """R froze D's log, then published its notice (its claim pushed in between); K pulled meanwhile, the slot
    holding no notice yet, and took from D's head what D wrote after the freeze. K then took the notice: it
    kept those messages, which no other device got (nor any import later: the new generation reads D's log as
    frozen), so K's conversation was not the others'."""
    r, k, d, sid = _three_writers(make_daemon, store_dir)
    _rekey_held_while(r, d, sid, "rekey.notice_put", k)  # D frozen, the notice not published: K pulls D
    _every_device_alike(make_daemon, store_dir, r, k, sid)


def test_a_kept_writer_s_freeze_of_the_dropped_writer_reaches_the_slot_of_a_rekey_published_before_it_took_the_drop(
    make_daemon, store_dir
):
    """K pulled what D wrote after R's rekey froze D's log (the notice not out yet); before K took that notice, R
    rekeyed again, its new slot written from R's (no freeze of K's in it). K, taking the drop, froze D's log as
    it read it, for the drop's new slot, which held R's next notice by then: written over, that notice would be
    lost, so nothing was written, nor noted, and K went on to the next generation without its freeze. K kept
    what D wrote past R's freeze, which R never got (seen in the crash loop: A and B apart by C's messages)."""
    r, k, d, sid = _three_writers(make_daemon, store_dir)
    write_config(k.home, poll_interval=3600, sync_interval=3600)  # K pulls only when asked (`sync`)
    k.restart()
    _rekey_held_while(r, d, sid, "rekey.notice_put", k)  # D frozen, the notice not published: K pulls D
    r.stop()
    del r.env["SESSIOND_TEST_PAUSE"]
    r.start()
    r.client().rekey(sid)  # before K took the drop
    wait_for(lambda: k.client().sync(sid, wait=True, timeout=10) and not _waiting_for(r, sid), timeout=60)
    _every_device_alike(make_daemon, store_dir, r, k, sid)


def _store(d, url: str) -> dict:
    """Daemon `d`'s status of store `url` of its mirror."""
    return next(s for s in d.client().status()["stores"] if s["url"] == url)


@pytest.mark.parametrize("b_order", ["same", "reversed"])
def test_two_joins_written_to_the_stores_of_a_mirror_apart_both_reach_every_device(
    make_daemon, store_dir, tmp_path, b_order
):
    """Writers of one mirror (a relay and a folder): C's import read the members slot and was held before its
    write; B joined while the relay was down (its write taken by the folder, queued for the relay); then C
    wrote the same revision, taken by the relay, refused as stale by the folder, and C, reading the slot
    again, found in the relay its own write and itself listed. B's queued write was then refused by the
    relay as stale and dropped. The two stores held two slots of one revision, each listing one of them,
    and a device reading the relay's never followed B: what B wrote never reached it. A device that finds
    itself no longer listed in the slot it announced itself in writes itself back, and every device of a
    mirror takes the same one of two entries of a revision."""
    relay = Relay(str(tmp_path / "relay")).start()  # (stopped and started on one port)
    try:
        _two_joins(make_daemon, "file://" + store_dir, relay, b_order)
    finally:
        relay.close()


def _two_joins(make_daemon, folder: str, relay: Relay, b_order: str) -> None:
    stores = [relay.url, folder]
    a, c = make_daemon(stores), make_daemon(stores)
    b = make_daemon(stores if b_order == "same" else stores[::-1])
    a.start()
    sid = a.client().create_session(name="mirrored")["id"]
    a.client().append(sid, "user", "from A")
    code = a.client().share(sid, write=True)["code"]
    a.client().sync(sid, wait=True, timeout=10)
    flag = os.path.join(flag_dir(), "put")
    c.env["SESSIOND_TEST_PAUSE"] = f"members.put:{flag}"
    c.start()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        imported = pool.submit(c.client().import_code, code)
        wait_for(lambda: os.path.exists(flag), timeout=20)  # C read the slot, its write held
        relay.stop()
        b.start()
        b.client().import_code(code)  # its members write: the folder's, queued for the relay
        b.client().append(sid, "user", "from B")
        b.client().sync(sid, timeout=10)
        b.stop()  # (its outbox kept for the relay, sent at its next start)
        relay.start()
        wait_for(lambda: _store(c, relay.url)["reachable"] is True, timeout=30)  # C's mirror has it back
        os.remove(flag)
        # the write refused as stale by the folder: read again, and held again if it writes again
        while not imported.done():
            wait_for(lambda: imported.done() or os.path.exists(flag), timeout=30)
            if os.path.exists(flag):
                os.remove(flag)
        imported.result()
    with _letting_go(flag):  # C's later slot writes (a pull merging the stores' two slots) pass the hold
        _every_join_reaches_every_device(a, b, c, sid, relay)


def _every_join_reaches_every_device(a, b, c, sid: str, relay: Relay) -> None:
    c.client().append(sid, "user", "from C")
    b.start()
    wait_for(lambda: _store(b, relay.url)["pending"] == 0, timeout=30, what="B's queued slot write sent to the relay")
    wanted = {"from A", "from B", "from C"}
    lacking: dict[str, list[str]] = {}

    def everywhere() -> bool:
        for name, d in (("A", a), ("B", b), ("C", c)):
            d.client().sync(sid, wait=True, timeout=10)
            lacking[name] = sorted(wanted - set(_messages(d, sid)))
        return not any(lacking.values())

    try:
        wait_for(everywhere, timeout=40, interval=0.5)
    except AssertionError:
        raise AssertionError(f"every join's message on every device not met within 40 s: lacking {lacking}") from None
    assert _messages(a, sid) == _messages(b, sid) == _messages(c, sid)


@contextlib.contextmanager
def _letting_go(flag: str) -> Iterator[None]:
    """Every arrival of a daemon at the pause point of `flag` let go while the block runs: a hold the test no
    longer releases by hand would hold that daemon's work there for good (its pulls then end in none of the
    syncs' timeouts)."""
    done = threading.Event()

    def release() -> None:
        while not done.wait(0.02):  # (polls for the daemon's arrival, as the hook polls for the removal)
            with contextlib.suppress(FileNotFoundError):
                os.remove(flag)

    releaser = threading.Thread(target=release, daemon=True)
    releaser.start()
    try:
        yield
    finally:
        done.set()
        releaser.join()


def test_a_rekey_whose_notice_one_store_of_a_mirror_took_and_another_refused_finishes(make_daemon, store_dir, tmp_path):
    """R's rekey read the members slot, then B joined while the relay was down for it (its write taken by the
    folder); R's notice was taken by the relay and refused as stale by the folder, and R, reading the slot
    again, found a notice there: its own, which it took for another device's. It withdrew its claim and gave
    up, and the notice stayed in the slot with no device claiming it: no device took it, every pull of the
    session failed from then on, and nothing written reached another device. A rekey that finds its own
    notice published finishes."""
    relay = Relay(str(tmp_path / "relay")).start()
    try:
        stores = [relay.url, "file://" + store_dir]
        r, k, b = make_daemon(stores), make_daemon(stores), make_daemon(stores)
        k.start()
        flag = _held(r, "rekey.notice_put")
        sid = r.client().create_session(name="mirrored")["id"]
        r.client().append(sid, "user", "from R")
        code = r.client().share(sid, write=True)["code"]
        k.client().import_code(code)
        k.client().append(sid, "user", "K joins")
        k.client().sync(sid, wait=True, timeout=10)
        wait_for(lambda: r.client().sync(sid, wait=True, timeout=10) and "K joins" in _messages(r, sid), timeout=30)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            rekeyed = pool.submit(r.client().rekey, sid)
            wait_for(lambda: os.path.exists(flag), timeout=20)  # R read the slot and claimed its notice
            relay.stop()
            b.start()
            b.client().import_code(code)  # its members write: the folder's, queued for the relay
            b.stop()
            relay.start()
            wait_for(lambda: _store(r, relay.url)["reachable"] is True, timeout=30)
            os.remove(flag)
            while not rekeyed.done():  # (a second attempt is held there too)
                wait_for(lambda: rekeyed.done() or os.path.exists(flag), timeout=30)
                if os.path.exists(flag):
                    os.remove(flag)
            rekeyed.result()
        r.client().append(sid, "user", "R after the rekey")
        wait_for(
            lambda: k.client().sync(sid, wait=True, timeout=10) and "R after the rekey" in _messages(k, sid), timeout=30
        )
    finally:
        relay.close()


def test_a_slot_written_again_keeps_the_later_freeze_of_a_writer_dropped_twice(make_daemon, store_dir):
    """A writer dropped, let back in with a new code and dropped again has its log frozen anew, and the new
    slot carries that later freeze. The devices noted the frozen logs they read or wrote in their database
    only when their number changed (Members.keep_frozen), so they kept the first freeze: a slot the store lost
    was written again from it, and a device importing the session afterwards never got what the writer wrote
    while it was let back in."""
    r, k, d, sid = _three_writers(make_daemon, store_dir)
    _let_back_in(r, d, sid)
    r.client().rekey(sid, drop=[_device(d)])
    wait_for(lambda: k.client().sync(sid, wait=True, timeout=10) and k.client().get_session(sid), timeout=30)
    for dev in (k, d):
        dev.stop()
    r.restart()  # (nothing of the slot in its memory: what it writes again is what its database noted)
    os.remove(slot_file(store_dir, r, sid))  # the store lost the slot
    assert r.client().sync(sid, wait=True, timeout=30)["complete"]
    n = make_daemon("file://" + store_dir).start()
    n.client().import_code(r.client().share(sid)["code"])
    assert "D let back in" in _messages(n, sid)
    assert _messages(n, sid) == _messages(r, sid)


def test_a_dropped_writer_that_deleted_the_session_and_is_let_back_in_reaches_the_others(make_daemon, store_dir):
    """A writer dropped by a rekey, its copy deleted, imports a new write code: its log is in the slot only as
    the rekey froze it (no longer a member), and the import took it back only from a member's head. Its own
    frozen log left out, it numbered what it wrote next from 1 again, under the numbers the others hold from
    the frozen log, which dropped it as repeats: what it wrote after it was let back in reached no one."""
    r, k, d, sid = _three_writers(make_daemon, store_dir)
    d.client().append(sid, "assistant", "D before the drop")
    d.client().sync(sid, wait=True, timeout=10)
    r.client().rekey(sid, drop=[_device(d)])
    d.client().sync(sid, wait=True, timeout=10)
    d.client().delete_session(sid)
    d.client().import_code(r.client().share(sid, write=True)["code"])
    d.client().append(sid, "assistant", "D back")
    d.client().sync(sid, wait=True, timeout=10)
    wait_for(lambda: r.client().sync(sid, wait=True, timeout=10) and "D back" in _messages(r, sid), timeout=30)
    wait_for(lambda: k.client().sync(sid, wait=True, timeout=10) and "D back" in _messages(k, sid), timeout=30)
    wait_for(lambda: d.client().sync(sid, wait=True, timeout=10) and "K joins" in _messages(d, sid), timeout=30)
    assert _messages(r, sid) == _messages(d, sid) == _messages(k, sid)


def test_a_rekeying_device_s_pull_that_read_the_dropped_writer_before_the_freeze_was_recorded_applies_none_of_it(
    make_daemon, store_dir
):
    """R's rekey froze D's log; its own pull then read from D's head what D wrote after the freeze, and was
    held before its apply while the rekey recorded its freezes (its check for the rekey's record passed
    before) and finished. The apply went on: R kept what D wrote past the freeze, which no other device got
    (the new generation reads D's log as frozen). A pull's apply and a rekey here hold each other off, and an
    apply whose pull began on a generation since ended applies nothing (the next pull reads the new slot).
    (So R's pull no longer takes D in while the rekey is held at rekey.frozen, which the earlier test of
    this, a rekey freezing again what its device's pull took past the freeze, waited for.)"""
    r, k, d, sid = _three_writers(make_daemon, store_dir)
    write_config(k.home, poll_interval=3600, sync_interval=3600)  # K pulls only when asked (`sync`)
    k.restart()
    frozen, fetched, applied = _hold(r, "rekey.frozen", "pull.fetched", "pull.applied")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        rekeyed = pool.submit(r.client().rekey, sid, drop=[_device(d)])
        wait_for(lambda: os.path.exists(frozen), timeout=20)  # D's log frozen, nothing recorded
        d.client().append(sid, "assistant", "D while R rekeys")
        d.client().sync(sid, wait=True, timeout=10)
        wait_for(lambda: r.client().sync(sid) and os.path.exists(fetched), timeout=30)  # R's pull read it
        os.remove(frozen)
        assert rekeyed.result(timeout=30)["dropped"] == [_device(d)]
    _let_the_pulls_apply(r, fetched, applied)
    _every_device_alike(make_daemon, store_dir, r, k, sid)


def test_a_kept_writer_s_pull_that_read_the_dropped_writer_before_it_took_the_notice_applies_none_of_it(
    make_daemon, store_dir
):
    """K's pull read from D's head what D wrote after R's rekey froze it (the notice not out yet), and was held
    before its apply; another pull of K (`sync`) then took the notice (nothing of D applied past the freeze:
    nothing to freeze again) and switched. The held apply went on: K kept what D wrote past the freeze, which
    no other device got, nor any import."""
    r, k, d, sid = _three_writers(make_daemon, store_dir)
    write_config(k.home, poll_interval=3600, sync_interval=3600)  # K pulls only when asked (`sync`)
    fetched, applied = _hold(k, "pull.fetched", "pull.applied")
    notice_put = _held(r, "rekey.notice_put")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        rekeyed = pool.submit(r.client().rekey, sid, drop=[_device(d)])
        wait_for(lambda: os.path.exists(notice_put), timeout=20)  # D's log frozen and recorded, no notice out
        d.client().append(sid, "assistant", "D while R rekeys")
        d.client().sync(sid, wait=True, timeout=10)
        # K's pull reads D's head: held (the pull goes on past the answer, which only paces the test)
        held = pool.submit(k.client().sync, sid, wait=True, timeout=1)
        wait_for(lambda: os.path.exists(fetched), timeout=30)
        os.remove(notice_put)
        assert rekeyed.result(timeout=30)["dropped"] == [_device(d)]
        held.result(timeout=30)
        # K's next pull takes the notice and switches (its log pushed under the new key: R waits for it no more)
        wait_for(lambda: k.client().sync(sid, wait=True, timeout=1) and not _waiting_for(r, sid), timeout=60)
    _let_the_pulls_apply(k, fetched, applied)
    _every_device_alike(make_daemon, store_dir, r, k, sid)


def test_a_dropped_writer_whose_log_a_kept_writer_froze_later_is_not_told_that_what_it_holds_is_held_here_only(
    make_daemon, store_dir
):
    """R froze D's log; D wrote and K pulled it before R's notice was out; K then took the notice and froze D's
    log where it had read it, a later freeze, which the new members slot carries: every device ends with what
    D wrote meanwhile. D, which cannot open the new slot, was told by the notice's "s" (R's freeze) that it was
    held here only (session `held_here`, `rm` refused, the pull's message): it would have kept, and sent again
    with a new code, what every device holds. K writes how far it carried D's log, signed, to the old slot."""
    r, k, d, sid = _three_writers(make_daemon, store_dir)
    _rekey_held_while(r, d, sid, "rekey.notice_put", k)  # K applies "D while R rekeys", past R's freeze of D
    _every_device_alike(make_daemon, store_dir, r, k, sid)
    assert "D while R rekeys" in _messages(r, sid)
    said = d.client().sync(sid, wait=True, timeout=10)["sessions"][sid]
    got = d.client().get_session(sid)
    assert got["access"] == "revoked"
    assert "held_here" not in got, got["held_here"]
    assert "held here only" not in said["pull_error"], said["pull_error"]
    d.client().delete_session(sid)  # nothing held here only: `rm` deletes it
