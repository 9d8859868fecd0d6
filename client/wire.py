"""One kept-alive HTTP/1.1 connection to the daemon's Unix socket, for the blocking client's calls: a
request goes out in one send (head and body together) and its answer is read whole.

http.client did the same in about twice the CPU (its headers go through the email package's parser,
and it sends a request's head and body in two writes, which the daemon then reads in two wake-ups).
h11, the sans-I/O HTTP/1.1 library, was measured too: ~215 us of CPU per request on this machine, three
times this whole client's cost per append, so the framing below stays this small reader (Content-Length,
chunked, or to the end of the connection: the only answers aiohttp gives).
The event streams (streams.py) still use http.client: they are long, and read a line at a time.
"""

from __future__ import annotations

import select
import socket

_EXPECTS_BODY = frozenset({"PATCH", "POST", "PUT"})  # sent with Content-Length: 0 when they have none
_NO_BODY = frozenset({204, 304})


class Disconnected(ConnectionResetError):
    """The daemon closed the connection before its whole answer arrived."""


def request_head(
    method: str, path: str, payload: bytes | None, key: str | None, key_header: str, headers: dict | None = None
) -> bytes:
    """`headers`: the request's others (their values UTF-8, as aiohttp sends them and reads them)."""
    head = f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n"
    if payload is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
    elif method in _EXPECTS_BODY:
        head += "Content-Length: 0\r\n"
    given = {} if key is None else {key_header: key}
    for name, value in {**given, **(headers or {})}.items():
        if "\r" in value or "\n" in value or "\0" in value:
            raise ValueError(f"Invalid header value {value!r}")  # as http.client refused it: no header injection
        head += f"{name}: {value}\r\n"
    return (head + "\r\n").encode("utf-8")


def readable(sock: socket.socket) -> bool:
    """Whether `sock` has something to read now (or is unusable): on a connection idle since its last answer,
    the daemon closed it (EOF, or an append stream's close frame)."""
    try:
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


class Connection:
    def __init__(self, path: str, timeout: float | None):
        self.path = path
        self.timeout = timeout
        self.sock: socket.socket | None = None

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def closed_by_peer(self) -> bool:
        """An idle kept-alive connection that is readable has been closed by the daemon (EOF)."""
        return self.sock is not None and readable(self.sock)

    def exchange(self, request: bytes, timeout: float | None = None) -> tuple[int, bytes]:
        """Send one request, return the answer's status and body (`timeout`: this one's, if not the
        connection's)."""
        if self.sock is None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.settimeout(self.timeout)
                s.connect(self.path)
            except BaseException:
                s.close()
                raise
            self.sock = s
        if timeout is None:
            self.sock.sendall(request)
            return self._answer(self.sock)
        sock = self.sock
        sock.settimeout(timeout)
        try:
            sock.sendall(request)
            return self._answer(sock)
        finally:
            sock.settimeout(self.timeout)

    def _answer(self, sock: socket.socket) -> tuple[int, bytes]:
        status, headers, rest = read_head(sock)
        connection = headers.get(b"connection", b"").lower()
        # HTTP/1.0 closes the connection after its answer unless it says keep-alive (aiohttp answers a request
        # its parser refuses so, then closes): the next request must go on a new connection
        close = connection == b"close" or (headers[b""].startswith(b"HTTP/1.0") and connection != b"keep-alive")
        body, ended = read_body(sock, status, headers, rest)
        if close or ended:
            self.close()
        return status, body


def read_head(sock: socket.socket) -> tuple[int, dict[bytes, bytes], bytes]:
    """An answer's head: its status, its headers (lower-case names; b"": the status line) and the bytes read
    past it."""
    buf = sock.recv(65536)
    while (end := buf.find(b"\r\n\r\n")) < 0:
        more = sock.recv(65536)
        if not more:
            raise Disconnected("the daemon closed the connection before it answered")
        buf += more
    lines = buf[:end].split(b"\r\n")
    headers = {b"": lines[0]}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split(b" ", 2)[1]), headers, buf[end + 4 :]


def read_body(sock: socket.socket, status: int, headers: dict[bytes, bytes], rest: bytes) -> tuple[bytes, bool]:
    """An answer's body, after its head (read_head): by its Content-Length, chunked, or to the end of the
    connection (then also True: the connection has ended)."""
    if status in _NO_BODY or 100 <= status < 200:
        return b"", False
    if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
        return _chunked(sock, rest), False
    if (length := headers.get(b"content-length")) is not None:
        return _exactly(sock, rest, int(length)), False
    parts = [rest]  # no length: the body ends with the connection
    while more := sock.recv(65536):
        parts.append(more)
    return b"".join(parts), True


def _exactly(sock: socket.socket, have: bytes, length: int) -> bytes:
    if len(have) >= length:
        return have[:length]
    out = bytearray(length)
    out[: len(have)] = have
    view, got = memoryview(out), len(have)
    while got < length:
        n = sock.recv_into(view[got:])
        if not n:
            raise Disconnected("the daemon closed the connection in the middle of its answer")
        got += n
    return bytes(out)


def _chunked(sock: socket.socket, buf: bytes) -> bytes:
    parts: list[bytes] = []
    while True:
        while (eol := buf.find(b"\r\n")) < 0:
            more = sock.recv(65536)
            if not more:
                raise Disconnected("the daemon closed the connection in the middle of its answer")
            buf += more
        size = int(buf[:eol].split(b";", 1)[0], 16)
        buf = buf[eol + 2 :]
        if size == 0:  # the last chunk; no trailers are sent: the blank line ends it
            while len(buf) < 2:
                more = sock.recv(65536)
                if not more:
                    break
                buf += more
            return b"".join(parts)
        chunk = _exactly(sock, buf, size + 2)  # the chunk and its CRLF
        parts.append(chunk[:size])
        buf = buf[size + 2 :] if len(buf) >= size + 2 else b""
