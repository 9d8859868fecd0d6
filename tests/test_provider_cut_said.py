"""A provider whose connection closes in the middle of its answer is said as that, in sessiond's words. The
message quoted aiohttp's exception as it prints itself: "cut the answer off before its end (Response payload
is not completed: <TransferEncodingError: 400, message='Not enough data to satisfy transfer length
header.'>)", whose "400" (aiohttp's own code for a malformed message, not the provider's status) read as the
provider having answered HTTP 400, a request it refused, which it had not."""

from __future__ import annotations

import pytest

from sessiond.client import ApiError


def _cut(e: ApiError) -> str:
    assert e.code == "provider_stream_cut" and e.status == 502, (e.code, e.message)
    said = e.message.split(" cut the answer off before its end (", 1)[1].split("); ", 1)[0].removesuffix(")")
    assert "400" not in said and "<" not in said and "Error" not in said, e.message
    return said


@pytest.mark.parametrize("stream", [False, True])
def test_a_connection_closed_mid_answer_is_said_so(echo_daemon, stream):
    d, p = echo_daemon
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    p.faults.cut_after = 2  # streamed: two words, then the connection drops; whole: half its body, then so
    with pytest.raises(ApiError) as e:
        if stream:
            list(c.complete_stream(sid, "one two three four"))
        else:
            c.complete(sid, "one two three four")
    said = _cut(e.value)
    assert said.startswith("its connection closed: not enough data"), e.value.message
    if not stream:  # a body of a known length: how much of it came
        assert "bytes" in said and " of " in said, e.value.message
