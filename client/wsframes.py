"""The blocking client's append stream (GET /v1/appends, a WebSocket: daemon/routes/appends.py): the
client side of RFC 6455, written small over one Unix socket, standard library only as the rest of the
blocking client is. The handshake (its Sec-WebSocket-Accept checked), masked text frames (os.urandom
masks, as the RFC asks of a client), ping answered with pong, close.

One append is a frame (a head line: tag, session, Idempotency-Key; a newline; the POST's body) answered by
a frame {tag, status, body}; this client sends one and reads its answer before the next (the Client's
threads take turns on it)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import select
import socket
import struct
import time

from .calls import stream_idle_limit
from .wire import Disconnected, read_body, read_head

PATH = "/v1/appends"
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455, 1.3
_TEXT, _BINARY, _CLOSE, _PING, _PONG = 0x1, 0x2, 0x8, 0x9, 0xA


class NoStream(Exception):
    """The daemon has no append stream (an older one: 404): appends go as POSTs."""


_CHUNK = 1 << 16  # bytes masked at a time (a multiple of 4: each chunk starts at the mask's first byte)


def masked(data: bytes, mask: bytes) -> bytes:
    """`data` XORed with the 4-byte `mask` repeated (RFC 6455, 5.3), as big-integer XORs of up to _CHUNK
    bytes each (a large batch is not held three more times over as integers)."""
    n = len(data)
    if n <= _CHUNK:
        m = (mask * (n // 4 + 1))[:n]
        return (int.from_bytes(data, "little") ^ int.from_bytes(m, "little")).to_bytes(n, "little")
    out = bytearray(n)
    whole = int.from_bytes(mask * (_CHUNK // 4), "little")
    view = memoryview(data)
    for i in range(0, n, _CHUNK):
        part = view[i : i + _CHUNK]
        k = len(part)
        key = whole if k == _CHUNK else int.from_bytes((mask * (k // 4 + 1))[:k], "little")
        out[i : i + k] = (int.from_bytes(part, "little") ^ key).to_bytes(k, "little")
    return bytes(out)


def frame(payload: bytes, opcode: int = _TEXT) -> bytes:
    """A whole (FIN) client frame: masked, with a fresh random mask."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 0xFE, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0xFF, n)
    mask = os.urandom(4)
    return head + mask + masked(payload, mask)


def accept_for(key: bytes) -> bytes:
    """The Sec-WebSocket-Accept a server answers `key` with (RFC 6455, 4.2.2)."""
    return base64.b64encode(hashlib.sha1(key + _GUID).digest())


class AppendStream:
    """An open append stream on its own connection."""

    def __init__(self, path: str, timeout: float | None, pipeline: bool = False):
        """`pipeline`: the daemon takes this connection's frames together (`?pipeline=1`), for an app that
        sends several before reading their answers; the blocking client has one in flight at a time."""
        self._tag = 0
        self._pipeline = pipeline
        self._buf = bytearray()
        self.idle_limit: float | None = None  # seconds it may sit idle and still be used (calls.stream_idle_limit)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.settimeout(timeout)
            s.connect(path)
            self._handshake(s)
        except BaseException:
            s.close()
            raise
        self.sock: socket.socket | None = s
        # whether the daemon wrote to it between appends (closed_by_peer): one poll object, asked at each append
        # (select.select's lists were ~3 us of every append)
        self._poll = select.poll()
        self._poll.register(s, select.POLLIN)
        self.idle_since = time.monotonic()  # when its last answer was read (none is due between appends)

    def _handshake(self, s: socket.socket) -> None:
        key = base64.b64encode(os.urandom(16))
        s.sendall(
            b"GET "
            + PATH.encode()
            + (b"?pipeline=1" if self._pipeline else b"")
            + b" HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key + b"\r\n\r\n"
        )
        status, headers, rest = read_head(s)
        if status != 101:
            body, _ = read_body(s, status, headers, rest)
            if status in (404, 405):
                raise NoStream()
            raise Refused(status, body)
        if headers.get(b"sec-websocket-accept") != accept_for(key) or headers.get(b"upgrade", b"").lower() != (
            b"websocket"
        ):
            raise ValueError("the daemon's WebSocket handshake is not RFC 6455's")
        self._buf = bytearray(rest)
        self.idle_limit = stream_idle_limit(headers.get(b"keep-alive", b"").decode("latin-1"))

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.sendall(frame(struct.pack("!H", 1000), _CLOSE))
            except OSError:
                pass
            self.sock.close()
            self.sock = None

    def closed_by_peer(self) -> bool:
        """Between appends nothing is due from the daemon: a stream with something to read has been closed
        by it (idle for its connection_idle_timeout, or the daemon stopping)."""
        if self.sock is None:
            return False
        if self._buf:
            return True
        try:  # (EOF, an error or a closed descriptor are reported too: POLLHUP, POLLERR, POLLNVAL)
            return bool(self._poll.poll(0))
        except (OSError, ValueError):
            return True

    def idle_too_long(self) -> bool:
        """Idle for its idle limit: the daemon may be about to close it (or its close be on its way), which
        would drop an append sent on it; a new stream takes the next."""
        return self.idle_limit is not None and time.monotonic() - self.idle_since >= self.idle_limit

    def append(self, sid: str, key: str, body: bytes) -> tuple[int, object]:
        """Send one append (`body`: the POST's body, JSON bytes), return its answer's status and body."""
        sock = self.sock
        if sock is None:
            raise Disconnected("the append stream is closed")
        self._tag += 1
        head = json.dumps({"tag": self._tag, "session": sid, "key": key}).encode()
        sock.sendall(frame(head + b"\n" + body))
        answer = json.loads(self._message(sock))
        if not isinstance(answer, dict) or answer.get("tag") != self._tag:
            raise ValueError("the daemon's answer on the append stream is not the answer to this append")
        self.idle_since = time.monotonic()
        return answer["status"], answer["body"]

    def _message(self, sock: socket.socket) -> bytes:
        """The next data message, its fragments joined; pings answered; a close is Disconnected."""
        parts: list[bytes] = []
        while True:
            fin, opcode, payload = self._frame(sock)
            if opcode == _PING:
                sock.sendall(frame(payload, _PONG))
            elif opcode == _CLOSE:
                raise Disconnected("the daemon closed the append stream")
            elif opcode != _PONG:
                parts.append(payload)
                if fin:
                    return b"".join(parts)

    def _frame(self, sock: socket.socket) -> tuple[bool, int, bytes]:
        b0, b1 = self._take(sock, 2)
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", self._take(sock, 2))
        elif n == 127:
            (n,) = struct.unpack("!Q", self._take(sock, 8))
        mask = self._take(sock, 4) if b1 & 0x80 else b""
        payload = self._take(sock, n)
        return bool(b0 & 0x80), b0 & 0x0F, masked(payload, mask) if mask else payload

    def _take(self, sock: socket.socket, n: int) -> bytes:
        while len(self._buf) < n:
            more = sock.recv(max(65536, n - len(self._buf)))
            if not more:
                raise Disconnected("the daemon closed the append stream")
            self._buf += more
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out


class Refused(Exception):
    """The daemon refused to open the stream: its status and body."""

    def __init__(self, status: int, body: bytes):
        super().__init__(status)
        self.status = status
        self.body = body
