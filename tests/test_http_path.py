"""The socket API's per-request path, in process: the router's order (the hot routes first, every route
still reaching its own handler), the answers for what no route takes, the Idempotency-Key's fast
check, and the blocking client's wire (one send per request; chunked, closing and broken answers)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import tempfile
import threading

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from sessiond.client import ApiError, Client, ClientError
from sessiond.daemon import validate as v
from sessiond.daemon.api import HOT_PATHS, make_app
from sessiond.daemon.routes import ROUTES
from sessiond.storage.errors import Invalid


class Owner:  # what make_app and the checks before any database use need of a daemon
    version = "test"


@pytest.fixture(scope="module")
def app() -> web.Application:
    return make_app(Owner())


def test_hot_routes_are_tried_first_and_every_route_still_reaches_its_handler(app):
    resources = list(app.router.resources())
    assert [r.canonical for r in resources[: len(HOT_PATHS)]] == list(HOT_PATHS)
    assert resources[-1].canonical == "/{tail}"  # the catch-all for what no route takes

    async def resolve_all() -> None:
        for r in ROUTES:
            path = r.path.replace("{id}", "s_0123456789abcdefghij").replace("{chat}", "main")
            info = await app.router.resolve(make_mocked_request(r.method, path, app=app))
            assert info.route.method == r.method and info.handler.__name__ == r.handler.__name__, (r.method, r.path)

    asyncio.run(resolve_all())


async def _ask(path: str, requests: list[bytes]) -> list[tuple[int, dict]]:
    out = []
    reader, writer = await asyncio.open_unix_connection(path)
    for req in requests:
        writer.write(req)
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        out.append((int(head.split(b" ")[1]), json.loads(await reader.readexactly(length))))
    writer.close()
    return out


def test_what_no_route_takes_is_a_json_404_or_405(app, tmp_path):
    async def main() -> list[tuple[int, dict]]:
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        path = str(tmp_path / "s.sock")
        await web.UnixSite(runner, path).start()
        try:
            bad_key = b'{"role": "user", "content": "x"}'
            return await _ask(
                path,
                [
                    b"GET /v1/nothing HTTP/1.1\r\nHost: x\r\n\r\n",
                    b"GET /v1/sessions/s1/bogus HTTP/1.1\r\nHost: x\r\n\r\n",
                    b"PUT /v1/status HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
                    b"DELETE /v1/sessions/s1/messages HTTP/1.1\r\nHost: x\r\n\r\n",
                    b"POST /v1/sessions/s1/messages HTTP/1.1\r\nHost: x\r\nIdempotency-Key: a\tb\r\n"
                    + f"Content-Length: {len(bad_key)}\r\n\r\n".encode()
                    + bad_key,
                ],
            )
        finally:
            await runner.cleanup()

    (s1, a1), (s2, a2), (s3, a3), (s4, a4), (s5, a5) = asyncio.run(main())
    assert (s1, a1["error"]) == (
        404,
        {"code": "not_found", "message": "no such route: GET /v1/nothing (see GET /v1/openapi.json)"},
    )
    assert s2 == 404 and a2["error"]["message"].startswith("no such route: GET /v1/sessions/s1/bogus")
    assert (s3, a3["error"]) == (405, {"code": "method_not_allowed", "message": "PUT is not allowed on /v1/status"})
    assert s4 == 405 and a4["error"]["code"] == "method_not_allowed"
    assert s5 == 422 and "Idempotency-Key header must be 1 to 255 printable ASCII" in a5["error"]["message"]


@pytest.mark.parametrize(
    "key, good",
    [
        ("3b6f2f7e-8f0e-4d0a-9c57-7e9f8f3a1b2c", True),
        (" ~", True),
        ("k" * 255, True),
        ("k" * 256, False),
        ("", False),
        ("tab\there", False),
        ("del\x7f", False),
        ("é", False),
        ("line\n", False),
    ],
)
def test_idempotency_key_fast_check_agrees_with_the_model(key, good):
    if good:
        assert v.idempotency_key(key) == key
    else:
        with pytest.raises(Invalid, match="1 to 255 printable ASCII"):
            v.idempotency_key(key)


class Scripted:
    """A Unix socket server answering each connection's requests with the next scripted bytes (None:
    close the connection without an answer). It records what each request arrived as."""

    def __init__(self, answers: list[bytes | None]):
        self.answers = answers
        self.requests: list[bytes] = []
        self.recv_calls: list[int] = []
        self.path = os.path.join(tempfile.mkdtemp(prefix="sd-wire-"), "s.sock")
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(self.path)
        self.sock.listen(4)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while self.answers:
            conn, _ = self.sock.accept()
            with conn:
                while self.answers:
                    data, reads = b"", 0
                    while b"\r\n\r\n" not in data or len(data) < self._length(data):
                        more = conn.recv(65536)
                        if not more:
                            break
                        data, reads = data + more, reads + 1
                    if not data:
                        break
                    self.requests.append(data)
                    self.recv_calls.append(reads)
                    answer = self.answers.pop(0)
                    if answer is None:
                        break
                    conn.sendall(answer)
                    if b"Connection: close" in answer:
                        break

    @staticmethod
    def _length(data: bytes) -> int:
        head, _, _ = data.partition(b"\r\n\r\n")
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                return len(head) + 4 + int(line.split(b":")[1])
        return len(head) + 4


def _json(status: int, obj, extra: str = "") -> bytes:
    body = json.dumps(obj).encode()
    return (
        f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n{extra}Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


def test_client_wire_reads_every_answer_shape_and_retries_only_what_is_safe():
    chunked_body = json.dumps({"chunked": "é" * 3000}).encode()
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(chunked_body[i : i + 1000]), chunked_body[i : i + 1000])
        for i in range(0, len(chunked_body), 1000)
    )
    server = Scripted(
        [
            _json(201, {"id": "m1"}),
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n",
            _json(200, {"closing": True}, "Connection: close\r\n"),
            _json(404, {"error": {"code": "not_found", "message": "no such session"}}),
            None,  # the connection breaks before an answer: an append with its key is sent again
            _json(201, {"id": "m2"}),
            None,  # ... but a request without a key is not
        ]
    )
    with Client(socket=server.path, timeout=10, append_stream=False) as c:  # appends as POSTs: wire.py's path
        assert c.append("s1", "user", "hello", idempotency_key="k-1")["id"] == "m1"
        assert server.recv_calls[0] == 1 and server.requests[0].endswith(b'"hello"}')  # head and body in one send
        assert b"\r\nIdempotency-Key: k-1\r\n" in server.requests[0]
        assert c.status() == {"chunked": "é" * 3000}
        assert c.status() == {"closing": True}
        with pytest.raises(ClientError, match="no such session") as e:
            c.get_session("s1")
        assert e.value.status == 404  # type: ignore[attr-defined]
        assert c.append("s1", "user", "again", idempotency_key="k-2")["id"] == "m2"
        assert server.requests[-1] == server.requests[-2]  # the same request, the same key
        with pytest.raises(ClientError, match="may or may not have been done"):
            c.create_session(name="x")
        sent = len(server.requests)
        with pytest.raises(ApiError, match="printable ASCII"):  # refused as the daemon would: nothing injected
            c.append("s1", "user", "x", idempotency_key="a\r\nX-Injected: 1")
        assert len(server.requests) == sent


def test_a_single_message_body_is_parsed_and_checked_in_one_call_and_a_batch_as_before(tmp_path, monkeypatch):
    """An append of one message reads its body in one validate_json call (no json.loads of it first); a
    batch, and everything that call refuses, still go through json.loads and the route's check."""
    from sessiond.api import jsonkeys  # (the routes' json.loads, which refuses a key given twice)

    parsed = []

    def loads(raw, *args, **kwargs):
        parsed.append(raw)
        return json.loads(raw, *args, **kwargs)

    monkeypatch.setattr(jsonkeys, "json", type("J", (), {"loads": staticmethod(loads), "dumps": json.dumps}))

    def post(body: bytes) -> bytes:  # with a bad Idempotency-Key: answered once the body is checked
        return (
            b"POST /v1/sessions/s1/messages HTTP/1.1\r\nHost: x\r\nIdempotency-Key: a\tb\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )

    async def main() -> list[tuple[int, dict]]:
        runner = web.AppRunner(make_app(Owner()), handle_signals=False, access_log=None)
        await runner.setup()
        path = str(tmp_path / "s.sock")
        await web.UnixSite(runner, path).start()
        try:
            return await _ask(
                path,
                [
                    post(b'{"role": "user", "content": "one"}'),
                    post(b'{"messages": [{"role": "user", "content": "a"}]}'),
                    post(b'{"role": "user", "content": "x", "tokens": true}'),
                    post(b'{"role": "user", "content": "x"'),
                ],
            )
        finally:
            await runner.cleanup()

    (s1, a1), (s2, a2), (s3, a3), (s4, a4) = asyncio.run(main())
    assert s1 == 422 and "Idempotency-Key" in a1["error"]["message"]  # the body passed its check
    assert s2 == 422 and "Idempotency-Key" in a2["error"]["message"]
    assert (s3, a3["error"]["code"]) == (422, "invalid")
    assert "tokens must be a number, not a boolean" in a3["error"]["message"]
    assert (s4, a4["error"]["code"]) == (400, "bad_json")
    assert parsed == [
        b'{"messages": [{"role": "user", "content": "a"}]}',
        b'{"role": "user", "content": "x", "tokens": true}',
        b'{"role": "user", "content": "x"',
    ]


GOOD_BODIES = [
    b'{"role": "user", "content": "hi"}',
    b'{"content": "hi", "role": "tool", "tokens": 3, "chat": "c", "name": null,'
    b' "metadata": {"a": [1, 2.5, {"b": null}]}}',
    b'{"role": "user", "content": "x", "tokens": 1.0}',
    b'{"role": "user", "content": "x", "tokens": 1e2}',
    b'{"role": "user", "content": "a\\u0000b \\u00e9 \\ud83d\\ude00 \xc3\xa9"}',
    b'{"role": "user", "role": "assistant", "content": "x", "metadata": {"k": 1, "k": 2}}',
    b' {"role": "user", "content": "x", "metadata": {"big": 9223372036854775807, "f": 1.0000000000000002}} \n',
    b'{"role": "user", "content": "x", "metadata": {"big": 18446744073709551615, "small": -9223372036854775808}}',
]
# taken the usual way only: the one call refuses them, json.loads and the check do not
USUAL_ONLY = [
    b'\xef\xbb\xbf{"role": "user", "content": "x"}',
    '{"role": "user", "content": "x"}'.encode("utf-16"),
]
REFUSED_BODIES = [
    b'{"role": "user", "content": "x", "metadata": {"big": 18446744073709551616}}',
    b'{"role": "user", "content": "x", "metadata": {"a": NaN}}',
    b'{"role": "user", "content": "x", "tokens": true}',
    b'{"role": "USER", "content": "x"}',
    b'{"role": "user", "content": "x", "extra": 1}',
    b'{"role": "user", "content": "x", "tokens": 1.5}',
    b'{"role": "user"}',
    b'{"messages": [{"role": "user", "content": "a"}]}',
    b'{"role": "user", "content": "x"',
    b"[" * 5000 + b"]" * 5000,
    b"",
]


@pytest.mark.parametrize("raw", GOOD_BODIES + USUAL_ONLY + REFUSED_BODIES)
def test_a_message_read_in_one_call_is_what_the_usual_way_reads_and_what_it_refuses_goes_the_usual_way(raw):
    from sessiond.api.messages import Append, MessageIn

    fast = v.from_json(MessageIn, raw)
    try:
        usual = v.checker(Append)(json.loads(raw))
    except (ValueError, RecursionError, Invalid):
        assert fast is None
        return
    if "messages" in usual:  # a batch: not a MessageIn
        assert fast is None
        return
    if raw in USUAL_ONLY:
        assert fast is None
        return
    assert raw in GOOD_BODIES
    assert fast == usual and list(fast) == list(usual) and repr(fast) == repr(usual)
