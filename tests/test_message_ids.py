"""A message id an app or a user gives (DEVICE-SEQ: `before`/`after` of GET messages, a fork's `at`, `fork
--at`) whose SEQ is past 64 bits, or written in digits other than ASCII's ('²', '٣': str.isdigit takes
them), reached SQLite or int() and was a 500 "internal error" (a traceback in the log). It is not a
message id: a 422 naming it, nothing changed."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from conftest import run_cli
from sessiond.client import ApiError


@pytest.mark.parametrize("seq", ["99999999999999999999999", "9223372036854775808", "\u00b2", "\u0663"])
def test_a_message_id_whose_seq_is_past_64_bits_or_not_ascii_digits_is_a_422(daemon, seq):
    c = daemon.client()
    sid = c.create_session(name="s")["id"]
    first = c.append(sid, "user", "hello")["id"]
    device = first.rpartition("-")[0]
    mid = f"{device}-{seq}"
    for call in (
        lambda: c._call("GET", f"/v1/sessions/{sid}/messages?before={quote(mid)}"),
        lambda: c._call("GET", f"/v1/sessions/{sid}/messages?after={quote(mid)}"),
        lambda: c.fork(sid, mid),
    ):
        with pytest.raises(ApiError) as info:
            call()
        assert info.value.status == 422 and "not a message id" in info.value.message, info.value
    res = run_cli(daemon.home, "fork", sid, "--at", mid)
    assert res.returncode == 2 and "--at: not a message id" in res.stderr, res
    assert [s["id"] for s in c.list_sessions()["sessions"]] == [sid]  # no fork made
    assert [m["id"] for m in c.messages(sid)["messages"]] == [first]
