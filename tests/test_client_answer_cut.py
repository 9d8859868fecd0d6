"""A streamed question (complete_stream) answered with JSON (the model's whole answer at once, or an error
before any of it) whose body was cut short: the clients raised the unknown outcome of any request (done_unknown)
without the question's idempotency_key, which every other unknown outcome of a question names (to send it
again, the question stored once, or to learn with asked() what was kept). The daemon writes such an answer in
one write, so the cut is made by a server on loopback that stands for a daemon killed mid-answer."""

from __future__ import annotations

import asyncio
import os
import tempfile

import pytest

from sessiond.client import AsyncClient, Client, ClientError

BODY = b'{"id": "m1", "role": "assistant", "content": "a whole answer, cut"}'


@pytest.fixture
def cut_server():
    """A Unix socket whose server answers any request with a JSON head and half its body, then closes."""
    d = tempfile.mkdtemp(prefix="sd-cut-")
    path = os.path.join(d, "s")

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        head = f"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: {len(BODY)}\r\n\r\n"
        writer.write(head.encode() + BODY[: len(BODY) // 2])
        await writer.drain()
        writer.close()

    yield path, serve
    for name in os.listdir(d):
        os.unlink(os.path.join(d, name))
    os.rmdir(d)


def _named_key(err: ClientError) -> None:
    assert err.done_unknown and err.idempotency_key == "asked-1", str(err)
    assert "idempotency_key='asked-1'" in str(err), str(err)
    assert str(err).count("may or may not have been done") == 1, str(err)  # said once, with the key's remedy


async def test_the_blocking_clients_cut_json_answer_names_the_questions_key(cut_server):
    path, serve = cut_server
    server = await asyncio.start_unix_server(serve, path)
    try:
        c = Client(os.path.dirname(path), socket=path)
        with pytest.raises(ClientError) as caught:
            await asyncio.to_thread(c.complete_stream, "s", "hi", idempotency_key="asked-1")
    finally:
        server.close()
        await server.wait_closed()
    _named_key(caught.value)


async def test_the_async_clients_cut_json_answer_names_the_questions_key(cut_server):
    path, serve = cut_server
    server = await asyncio.start_unix_server(serve, path)
    try:
        async with AsyncClient(os.path.dirname(path), socket=path) as ac:
            with pytest.raises(ClientError) as caught:
                await ac.complete_stream("s", "hi", idempotency_key="asked-1")
    finally:
        server.close()
        await server.wait_closed()
    _named_key(caught.value)
