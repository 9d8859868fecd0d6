"""The head line of an append stream frame (GET /v1/appends; daemon/routes/appends.py) is read as strictly as
a request body is: a key given twice, a field the head does not take (a "chat" there would be ignored and
the message appended to the current chat), or a tag that no strict JSON reader takes back (1e999 was
echoed as Infinity, which JSON.parse refuses) is a 400 bad_frame naming it; nothing is appended and the
connection goes on."""

from __future__ import annotations

import json

from sessiond.client.wsframes import AppendStream, frame
from test_append_stream import stored


def _strict(text: str):
    def refuse(name: str):
        raise ValueError(f"not strict JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_a_head_with_a_key_twice_an_unknown_field_or_a_tag_strict_json_cannot_hold_is_a_bad_frame(daemon):
    c = daemon.client()
    sid = c.create_session(name="s")["id"]
    c.create_chat(sid, id="other")
    good = json.dumps({"role": "user", "content": "kept"}).encode()
    heads = [
        (f'{{"tag": 1, "session": "{sid}", "key": "k1", "key": "k2"}}', "twice"),
        (f'{{"tag": 2, "session": "{sid}", "key": "k3", "chat": "other"}}', "'chat'"),
        (f'{{"tag": 1e999, "session": "{sid}", "key": "k4"}}', "tag"),
        (f'{{"tag": [NaN], "session": "{sid}", "key": "k5"}}', "tag"),
        (f'{{"tag": 7, "session": "{sid}", "key": "k6"}}', None),  # a good one, last
    ]
    st = AppendStream(daemon.socket, 10)
    try:
        st.sock.sendall(b"".join(frame(head.encode() + b"\n" + good, 1) for head, _ in heads))
        answers = [_strict(st._message(st.sock)) for _ in heads]  # each answer one a strict reader takes
    finally:
        st.close()
    *bad, last = answers
    for a, (_, why) in zip(bad, heads):
        assert a["status"] == 400 and a["body"]["error"]["code"] == "bad_frame", a
        assert why in a["body"]["error"]["message"], (why, a)
    assert last["tag"] == 7 and last["status"] == 201, last
    assert stored(c, sid) == ["kept"]
    assert [m["chat"] for m in c.messages(sid)["messages"]] == ["main"]
