"""A checkpoint whose mark an append passed is made even when the daemon is stopped right after that append
was answered (was: a clean stop cancelled the automatic checkpoints still waiting their turn, and as the
next is made only at the next mark, those sessions went without the checkpoint of that interval)."""

from __future__ import annotations

from conftest import DaemonProc


def test_a_clean_stop_makes_the_checkpoints_due_first(home):
    d = DaemonProc(home).start()
    c = d.client()
    sids = [c.create_session(checkpoint_interval=5)["id"] for _ in range(12)]
    for sid in sids:
        c.append(sid, "user", "x", tokens=4)
    for sid in sids:  # each passes its first mark (5 tokens): a checkpoint is due
        c.append(sid, "user", "y" * 2000, tokens=2)
    assert d.stop() == 0  # at once
    d.start()
    try:
        c = d.client()
        without = [sid for sid in sids if not c.checkpoints(sid)["checkpoints"]]
        assert without == [], f"{len(without)} of {len(sids)} sessions lost the checkpoint of their mark"
    finally:
        d.stop()
