"""A rekey's notice and the old members slot holding it as another sessiond writes them (docs/FORMATS.md §6: fields
are added under "v": 1, and a reader ignores those it does not know). A notice of sessiond 0.34.0 and earlier names
no frozen logs (no "f"), and a later sessiond may add fields this one does not know to the notice, to the slot's
object and to its member entries: a kept device takes such a notice all the same (its author's claim covers the
notice's bytes, the unknown fields too) and the devices go on writing under the new key. Real daemons, one file://
store; the notice is written with its author's own keys directly on the store (test_rekey_forgery's _forge), as
that other sessiond would."""

from __future__ import annotations

import asyncio

import pytest

from conftest import wait_for
from test_rekey_forgery import _device, _forge, _key, _messages, _three_writers

LATER = {"notice": {"zz": [1, "a later sessiond's"]}, "slot": {"zz": {"y": 2}}, "member": {"zz": True}}


@pytest.mark.parametrize("later", [{}, LATER], ids=["as-0.34.0-wrote-it", "fields-unknown-here"])
def test_a_notice_without_frozen_logs_or_with_fields_unknown_here_is_taken(make_daemon, store_dir, later):
    """D rekeys (its notice without "f", with `later`'s fields) and claims it; R and K, kept, take it, write
    under the new key, and read each other's writes."""
    r, k, d, sid = _three_writers(make_daemon, store_dir)
    d_id = _device(d)
    d.stop()
    new_key = asyncio.run(_forge(store_dir, d.home, sid, author=d_id, claim=True, later=later))

    def took(dev) -> bool:
        dev.client().sync(sid, wait=True, timeout=10)
        return _key(dev, sid) == new_key

    for dev in (r, k):
        wait_for(lambda dev=dev: took(dev), timeout=30, interval=0.3, what="the notice taken")
        assert dev.client().get_session(sid)["access"] in ("owner", "write")
    r.client().append(sid, "user", "R after the rekey")
    k.client().append(sid, "user", "K after the rekey")

    def both_read_both() -> bool:
        for dev in (r, k):
            dev.client().sync(sid, wait=True, timeout=10)
        return all({"R after the rekey", "K after the rekey", "D joins"} <= set(_messages(dev, sid)) for dev in (r, k))

    wait_for(both_read_both, timeout=30, interval=0.3, what="R and K read each other under the new key")
    assert _messages(r, sid) == _messages(k, sid)
