"""The head line of an append stream frame (GET /v1/appends; daemon/routes/appends.py) is read as strictly as
a request body is: a key given twice, a field the head does not take (a "chat" there would be ignored and
the message appended to the current chat), or a tag that no strict JSON reader takes back (1e999 was
echoed as Infinity, which JSON.parse refuses) is a 400 bad_frame naming it; nothing is appended and the
connection goes on."""

from __future__ import annotations

import json

from sessiond.client.wsframes import AppendStream, frame
from test_append_stream import stored


def _sent(daemon, heads: list[str], body: bytes) -> list[str]:
    """Frames of each of `heads` and `body` sent on one append stream: the text of each answer, in order."""
    st = AppendStream(daemon.socket, 10)
    try:
        st.sock.sendall(b"".join(frame(head.encode() + b"\n" + body, 1) for head in heads))
        return [st._message(st.sock) for _ in heads]
    finally:
        st.close()


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
    answers = [_strict(t) for t in _sent(daemon, [h for h, _ in heads], good)]  # each one a strict reader takes
    *bad, last = answers
    for a, (_, why) in zip(bad, heads):
        assert a["status"] == 400 and a["body"]["error"]["code"] == "bad_frame", a
        assert why in a["body"]["error"]["message"], (why, a)
    assert last["tag"] == 7 and last["status"] == 201, last
    assert stored(c, sid) == ["kept"]
    assert [m["chat"] for m in c.messages(sid)["messages"]] == ["main"]


def test_a_tag_nested_deeper_than_a_session_holds_is_a_bad_frame(daemon):
    """A tag nested ~960 deep (within the head's 4 KiB) was echoed back whole: an answer Python's JSON reader
    cannot parse (RecursionError), so an app lost the answer, and the append it held, with it. A tag is any JSON
    value nested at most 32 levels, as a session's own JSON fields (api/types.MAX_DEPTH): a deeper one is a 400
    bad_frame saying so, its tag null, nothing appended; one of 32 levels is echoed as it came."""
    c = daemon.client()
    sid = c.create_session(name="s")["id"]
    good = json.dumps({"role": "user", "content": "kept"}).encode()
    deep = "[" * 960 + "1" + "]" * 960
    fine = json.loads("[" * 31 + "{}" + "]" * 31)  # 32 levels: arrays and the object inside them
    heads = [
        f'{{"tag": {deep}, "session": "{sid}", "key": "k1"}}',
        f'{{"tag": {json.dumps(fine)}, "session": "{sid}", "key": "k2"}}',
    ]
    texts = _sent(daemon, heads, good)
    refused, taken = (json.loads(t) for t in texts)  # (the refusal one Python's reader takes)
    assert refused["status"] == 400 and refused["tag"] is None, refused
    assert refused["body"]["error"]["code"] == "bad_frame", refused
    assert "nested" in refused["body"]["error"]["message"] and "32" in refused["body"]["error"]["message"], refused
    assert taken["status"] == 201 and taken["tag"] == fine, taken
    assert stored(c, sid) == ["kept"]  # the refused frame's append is not made


def test_a_tag_that_is_not_valid_unicode_is_a_bad_frame(daemon):
    """A tag holding a lone surrogate ("\\ud800", which JSON's escapes can spell) was taken: the append was
    made, and its answer, echoing the tag, could not be written as UTF-8 text, so the daemon closed the stream,
    the append's answer and every later frame's lost. It is a 400 bad_frame naming the tag, nothing appended,
    and the connection goes on."""
    c = daemon.client()
    sid = c.create_session(name="s")["id"]
    good = json.dumps({"role": "user", "content": "kept"}).encode()
    heads = [
        f'{{"tag": "\\ud800", "session": "{sid}", "key": "k1"}}',
        f'{{"tag": {{"x": ["\\udfff"]}}, "session": "{sid}", "key": "k2"}}',
        f'{{"tag": 3, "session": "{sid}", "key": "k3"}}',
    ]
    answers = [json.loads(t) for t in _sent(daemon, heads, good)]
    *bad, last = answers
    for a in bad:
        assert a["status"] == 400 and a["tag"] is None and a["body"]["error"]["code"] == "bad_frame", a
        assert "Unicode" in a["body"]["error"]["message"], a
    assert last["tag"] == 3 and last["status"] == 201, last
    assert stored(c, sid) == ["kept"]  # the third frame's append alone


def test_a_tag_nests_as_deep_as_a_session_s_metadata_and_no_deeper(daemon):
    """A tag and a session's metadata are both JSON held to MAX_DEPTH (api/types.py), counted two ways: a tag by
    its arrays and objects (32 of them, a string inside or not), metadata by its values' depth from the operation
    that carries it (32 levels, a string inside counted as one). A tag of 32 arrays around a string was echoed
    where metadata of 32 objects around a string was refused. Both count one way now: 32 levels taken on both
    paths, 33 refused on both, each saying it is nested too deeply."""
    from sessiond.client import ApiError

    c = daemon.client()
    sid = c.create_session(name="s")["id"]
    good = json.dumps({"role": "user", "content": "kept"}).encode()

    def levels(n: int, inner: bool) -> object:  # n levels: n objects, or n - 1 around a string
        x: object = "v" if inner else {}
        for _ in range(n - 1):
            x = {"n": x}
        return x

    shapes = [(n, inner) for n in (32, 33) for inner in (False, True)]
    heads = [
        json.dumps({"tag": levels(n, inner), "session": sid, "key": f"k{i}"}) for i, (n, inner) in enumerate(shapes)
    ]
    answers = [json.loads(t) for t in _sent(daemon, heads, good)]
    for (n, inner), a in zip(shapes, answers):
        try:
            c.create_session(metadata=levels(n, inner))
            metadata = "taken"
        except ApiError as exc:
            assert exc.status == 422 and "metadata" in str(exc) and "is nested too deeply" in str(exc), exc
            metadata = "refused"
        if a["status"] == 201:
            tag = "taken"
            assert a["tag"] == levels(n, inner), a
        else:
            assert a["status"] == 400 and a["body"]["error"]["code"] == "bad_frame", a
            assert "is nested too deeply" in a["body"]["error"]["message"], a
            tag = "refused"
        assert (tag, metadata) == (("taken", "taken") if n == 32 else ("refused", "refused")), (n, inner, a)
