"""The relay caps the connections one client address holds open at once (`sessiond serve
--max-connections-per-address`, default 64): past it a new connection is answered HTTP 429 naming the cap
and the option, and closed; the connections counted are those open, not the requests they carry. A real
`sessiond serve` process, real TCP sockets on loopback."""

from __future__ import annotations

import socket

from conftest import relay_served, run_cli

DEFAULT_CAP = 64  # README, docs/SECURITY.md


def connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    return s


def ask(s: socket.socket, keep_alive: bool = False) -> bytes:
    """One request on `s`; the whole answer (its head and its Content-Length of body)."""
    s.sendall(
        b"GET /s5/registry?pk=AAAA HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + (b"" if keep_alive else b"Connection: close\r\n")
        + b"\r\n"
    )
    got = b""
    while b"\r\n\r\n" not in got:
        chunk = s.recv(65536)
        if not chunk:
            return got
        got += chunk
    head, body = got.split(b"\r\n\r\n", 1)
    length = next(
        (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0
    )
    while len(body) < length:
        chunk = s.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def served_fine(port: int) -> bool:
    with connect(port) as s:
        return ask(s).startswith(b"HTTP/1.1 400 ")  # pk=AAAA is not a head key: the relay's own answer


def test_connections_past_the_cap_of_one_address_are_refused_with_429_naming_it(tmp_path):
    with relay_served(str(tmp_path / "relay")) as info:
        port = info["port"]
        held = [connect(port) for _ in range(DEFAULT_CAP)]  # idle, open: each counts
        try:
            assert ask(held[0], keep_alive=True).startswith(b"HTTP/1.1 400 ")  # the held ones are served
            with connect(port) as s:
                refused = ask(s)
            assert refused.startswith(b"HTTP/1.1 429 "), refused[:200]
            assert b"Retry-After: " in refused and b"Connection: close" in refused
            text = refused.split(b"\r\n\r\n", 1)[1].decode()
            assert f"{DEFAULT_CAP} connections" in text and "--max-connections-per-address" in text, text
            held.pop().close()  # one closed: a slot is free again
            for _ in range(100):
                if served_fine(port):
                    break
            else:
                raise AssertionError("a closed connection's slot never came back")
        finally:
            for s in held:
                s.close()


def test_the_cap_is_set_by_an_option_and_counts_connections_not_requests(tmp_path):
    with relay_served(str(tmp_path / "relay"), "--max-connections-per-address", "2") as info:
        port = info["port"]
        a, b = connect(port), connect(port)
        try:
            for _ in range(10):  # many requests on one kept connection: one connection
                assert ask(a, keep_alive=True).startswith(b"HTTP/1.1 400 ")
            with connect(port) as c:
                refused = ask(c)
            assert refused.startswith(b"HTTP/1.1 429 ") and b"at most 2 connections" in refused, refused[:300]
        finally:
            a.close()
            b.close()
    for bad in ("0", "-1", "x"):
        res = run_cli(
            None,
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data",
            str(tmp_path / "r"),
            "--max-connections-per-address",
            bad,
        )
        assert res.returncode == 2 and "--max-connections-per-address" in res.stderr, res.stderr
