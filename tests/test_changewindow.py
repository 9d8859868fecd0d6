"""The change window behind head_changes tokens (stores/changewindow.py): bounded by the heads it names, so a
follower of many busy heads keeps ~1 MB of it, not what 4,096 looks named (profile-memory.md, 21st pass)."""

from __future__ import annotations

from sessiond.stores import changewindow
from sessiond.stores.changewindow import ChangeWindow


def pk(i: int) -> bytes:
    return i.to_bytes(33, "big")


def test_a_token_gets_what_was_named_after_it_and_an_old_one_gets_cannot_say():
    w = ChangeWindow(max_named=10, max_batches=100)
    for pos in range(1, 6):  # 5 batches of 3 heads: 15 named, over the bound of 10
        w.add(pos, [pk(pos * 10 + j) for j in range(3)])
    assert w.named <= 10
    assert w.since(5) == set()
    assert w.since(4) == {pk(50), pk(51), pk(52)}
    assert w.since(3) == {pk(40), pk(41), pk(42), pk(50), pk(51), pk(52)}
    assert w.since(1) is None and w.since(0) is None  # dropped: the caller looks at every head
    w.add(6, [])  # a look that found nothing keeps nothing
    assert w.since(5) == set()


def test_the_newest_batch_is_kept_whole_past_the_bound():
    w = ChangeWindow(max_named=10, max_batches=100)
    w.add(1, [pk(1)])
    w.add(2, [pk(i) for i in range(100, 150)])  # a full listing's worth
    assert w.since(1) == {pk(i) for i in range(100, 150)} and w.since(0) is None


def test_the_bound_by_batches_holds_too():
    w = ChangeWindow(max_named=1_000, max_batches=4)
    for pos in range(1, 11):
        w.add(pos, [pk(pos)])
    assert w.since(6) == {pk(7), pk(8), pk(9), pk(10)} and w.since(5) is None


def test_a_reset_keeps_nothing_before_it():
    w = ChangeWindow()
    w.add(1, [pk(1)])
    w.reset(7)
    assert w.named == 0 and w.since(1) is None and w.since(7) == set()


def test_the_defaults_bound_a_busy_follower_to_about_a_megabyte():
    """What a daemon following 10,000 heads kept after 4,096 looks of 40 heads each: 163,840 heads named
    (~15 MB with the sets and keys); now at most MAX_NAMED."""
    w = ChangeWindow()
    for pos in range(1, 4097):
        w.add(pos, {pk(pos * 40 + j) for j in range(40)})
    assert w.named <= changewindow.MAX_NAMED == 10_000
    assert w.since(4095) == {pk(4096 * 40 + j) for j in range(40)}
