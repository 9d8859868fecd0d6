"""A batch whose messages name several chats is answered with the chat of each id (was: `chat` named the
first message's chat alone, so an app read every id of the batch as that chat's)."""

from __future__ import annotations


def test_a_batch_over_several_chats_says_where_each_message_went(daemon):
    c = daemon.client()
    sid = c.create_session()["id"]
    side = c.create_chat(sid, name="side")["id"]
    batch = [
        {"role": "user", "content": "to the side", "chat": "side"},
        {"role": "user", "content": "to the current chat"},
        {"role": "assistant", "content": "side again", "chat": side},
    ]
    got = c.append_many(sid, batch)
    assert got["chats"] == [side, "main", side], got
    stored = {m["id"]: m["chat"] for m in c.messages(sid, all_chats=True)["messages"]}
    assert [stored[i] for i in got["ids"]] == got["chats"], (got, stored)
    again = c.append_many(sid, batch, idempotency_key="k1")
    assert c.append_many(sid, batch, idempotency_key="k1") == again  # a retry: the same answer
    assert again["chats"] == [side, "main", side], again
    # a batch into one chat is answered as before: its chat, no list
    one = c.append_many(sid, [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], chat="side")
    assert one["chat"] == side and "chats" not in one, one
