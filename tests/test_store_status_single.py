"""status's `stores` for a daemon of one store (no mirror): its row said `reachable: null` whatever its pushes met,
so a script reading `stores` saw a healthy store while every push failed on it (the store down). The row now says
what the pushes met: not known before any push, reachable once one went through, unreachable (with the failure,
its message and the retry) while a session's last push failed on the store, and reachable again once it answers."""

from __future__ import annotations

from conftest import wait_for
from test_mirror import Relay


def _row(d) -> dict:
    rows = d.client().status()["stores"]
    assert len(rows) == 1, rows
    return rows[0]


def test_one_store_s_row_says_what_its_pushes_met(make_daemon, tmp_path):
    relay = Relay(str(tmp_path / "relay")).start()
    try:
        a = make_daemon(relay.url).start()
        assert _row(a)["reachable"] is None  # nothing pushed yet: not known
        sid = a.client().create_session(name="kept")["id"]
        a.client().append(sid, "user", "first")
        a.client().share(sid)
        wait_for(lambda: _row(a)["reachable"] is True, timeout=20)
        relay.stop()
        a.client().append(sid, "user", "while the relay is down")
        wait_for(lambda: _row(a)["reachable"] is False, timeout=30)
        row = _row(a)
        assert row["failure"] == "unreachable", row
        assert row["last_error"] and "127.0.0.1" in row["last_error"], row
        assert row["retry_in"] >= 0, row
        relay.start()
        wait_for(lambda: _row(a)["reachable"] is True, timeout=60)
        assert not _row(a).get("last_error"), _row(a)
    finally:
        relay.close()
