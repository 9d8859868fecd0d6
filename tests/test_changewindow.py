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


def test_a_token_at_the_window_s_edge_gets_what_came_after_and_one_before_it_cannot_say():
    """The boundary: a position whose batch was the last one dropped is the window's `known_from`; a token there
    saw that batch, and is told what came after (all kept); one before it is told "cannot say"."""
    w = ChangeWindow(max_named=4, max_batches=100)
    for pos in range(1, 5):  # 4 batches of 2: the first two dropped
        w.add(pos, [pk(pos * 10), pk(pos * 10 + 1)])
    assert w.known_from == 2
    assert w.since(2) == {pk(30), pk(31), pk(40), pk(41)}
    assert w.since(1) is None


async def test_the_relay_feed_s_tokens_across_several_answers_a_cap_and_a_reset():
    """stores/s5feed.py over the window: a follower that looks after several feed answers gets all of them;
    answers naming more than the window keeps make its token "cannot say" (a full look), never a partial
    answer; a reset (the relay's feed started again, same epoch) makes every older token "cannot say"."""
    from sessiond.stores.s5account import b64url
    from sessiond.stores.s5feed import ChangeFeed

    answers: list[dict] = []

    class Reply:
        status = 200

        def __init__(self, doc: dict):
            self.doc = doc

        def json(self) -> dict:
            return self.doc

    async def call(*args, **kwargs):
        return Reply(answers.pop(0))

    def answer(cursor: int, heads: range, reset: bool = False) -> None:
        changes = [{"pk": b64url(pk(i)), "revision": 1} for i in heads]
        answers.append({"epoch": "e1", "cursor": cursor, "reset": reset, "changes": changes})

    feed = ChangeFeed(call, "relay", timeout=30)
    feed.window.max_named = 10
    answer(5, range(3), reset=True)
    await feed.poll(0)
    token, named = feed.changes_since(None)  # a first look: cannot say
    assert named is None
    for cursor, heads in ((6, range(10, 12)), (7, range(20, 23)), (8, range(30, 31))):  # three answers
        answer(cursor, heads)
        await feed.poll(0)
    token2, named = feed.changes_since(token)
    assert named == {pk(i) for i in (10, 11, 20, 21, 22, 30)}
    for cursor in (9, 10):  # 12 heads named since token2: more than the window keeps
        answer(cursor, range(cursor * 10, cursor * 10 + 6))
        await feed.poll(0)
    token3, named = feed.changes_since(token2)
    assert named is None
    answer(11, range(40), reset=True)  # the relay's feed started again: its answer names every head
    await feed.poll(0)
    assert feed.changes_since(token3)[1] is None
    token4, _ = feed.changes_since(token3)
    answer(12, range(50, 51))
    await feed.poll(0)
    assert feed.changes_since(token4)[1] == {pk(50)}
