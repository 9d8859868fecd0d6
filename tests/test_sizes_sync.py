"""What a session holds syncs, whatever its size, or is refused up front: every value an app or a model can
put into a session is either pushed to the store (each object at most 1 MiB) and read back by the other
device as it was, or refused before anything is stored. Real daemons on one folder store: A writes and
shares read-write, B imports and follows."""

from __future__ import annotations

import test_model
from test_tool_calls_streamed import App, tc
from waiting import wait_for

provider, setup = test_model.provider, test_model.setup


def synced_to(a, b, sid: str) -> None:
    """A's session pushed, and B holding exactly what A holds (its messages, as each device's API gives them)."""
    ca, cb = a.client(), b.client()
    assert ca.sync(sid, wait=True, timeout=60)["complete"]

    def same() -> bool:
        cb.sync(sid, wait=True, timeout=30)
        return cb.messages(sid, limit=100_000)["messages"] == ca.messages(sid, limit=100_000)["messages"]

    try:
        wait_for(same, timeout=60)
    except AssertionError:
        raise AssertionError(f"B does not hold A's session: {cb.sync(sid)['sessions'][sid]}") from None


def test_a_model_s_answer_of_more_calls_than_a_message_holds_syncs(setup, provider, tmp_path):
    """A model answering with more tool calls than one message holds (1,000, api/messages.MAX_TOOL_CALLS):
    each call was checked alone, so all 1,001 were recorded in one message, which every other device's pull
    refuses as an append of 1,001 calls is refused (daemon/remote_checks.py): the session stopped syncing to
    them for good. Now the answer keeps the first 1,000 calls and drops the rest, saying so, as it drops a
    malformed call."""
    make, p, _ = setup
    url = f"file://{tmp_path}/store"
    a, b = make(url), make(url)
    n = 1001
    p.faults.script = [(tc(i, "{}", id=f"call_{i}", name="f"), None) for i in range(n)] + [({}, "tool_calls")]
    ca, cb = a.client(), b.client()
    sid = ca.create_session(model="echo-1")["id"]
    cb.import_code(ca.share(sid, write=True)["code"])
    App(a, sid).ended()
    (answer,) = [m for m in ca.messages(sid)["messages"] if m["role"] == "assistant"]
    assert len(answer["tool_calls"]) == 1000
    synced_to(a, b, sid)
