"""The connections one client address holds open on the relay at once, capped (`sessiond serve
--max-connections-per-address`, default 64): each open connection costs the relay memory and a file
descriptor, and without a cap one client could open them until the relay had none left for anyone.

What is counted is connections open, not the requests they carry (a kept-alive connection making many
requests is one). An address is a client's IP address as the relay sees it: an IPv4 address; an IPv6
address by its /64 (the block one site or host is given, in which an address costs nothing to change).
Loopback (127.0.0.1, ::1) is an address like any other: every client on the relay's own machine,
a reverse proxy in front of it too, shares one count. A connection past the cap is answered at once
`429 Too Many Requests` (naming the cap and the option, with a Retry-After) and closed; the
connections already open are untouched. The relay listens on TCP only (no Unix socket).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

log = logging.getLogger("sessiond.relay")

DEFAULT_PER_ADDRESS = 64
RETRY_AFTER = 1  # seconds: a daemon's own connections free up within that (its requests are short)
DRAIN = 1.0  # seconds a refused connection is read (and what it sent dropped) before it is closed
MAX_DRAINING = 256  # refused connections read so at once, of all addresses; past them one is closed at once


def address_of(peer: object) -> str:
    """The address a connection counts against: the IP of `peer` (a socket's peername), an IPv6 one as its
    /64 (an IPv4-mapped one as the IPv4 address)."""
    host = str(peer[0] if isinstance(peer, tuple) and peer else peer).split("%", 1)[0]
    if ":" not in host:
        return host
    try:
        raw = socket.inet_pton(socket.AF_INET6, host)
    except OSError:
        return host
    if raw[:12] == bytes(10) + b"\xff\xff":
        return socket.inet_ntop(socket.AF_INET, raw[12:])
    return socket.inet_ntop(socket.AF_INET6, raw[:8] + bytes(8)) + "/64"


class ConnectionCap:
    def __init__(self, per_address: int = DEFAULT_PER_ADDRESS):
        if per_address < 1:
            raise ValueError("the connections per address must be at least 1")
        self.per_address = per_address
        self.open: dict[str, int] = {}  # address -> its connections open now (absent: none)
        self._refusing: set[str] = set()  # addresses refused since their count last went down (logged once)
        self.draining = 0  # refused connections not closed yet (DRAIN)

    def protocols(self, inner: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """A protocol factory for loop.create_server: each connection counted, handed to `inner`'s
        protocol (aiohttp's server) while its address is under the cap, refused otherwise."""
        return lambda: _Counted(self, inner)

    def refusal(self, address: str) -> bytes:
        text = (
            f"this relay takes at most {self.per_address} connections at once from one address and {address}"
            f" has {self.per_address} open: close some and try again, or ask the relay's operator to raise"
            " sessiond serve --max-connections-per-address\n"
        ).encode()
        return (
            b"HTTP/1.1 429 Too Many Requests\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n"
            + f"Content-Length: {len(text)}\r\nRetry-After: {RETRY_AFTER}\r\n".encode()
            + b"Connection: close\r\n\r\n"
            + text
        )

    def take(self, address: str) -> bool:
        n = self.open.get(address, 0)
        if n >= self.per_address:
            if address not in self._refusing:
                self._refusing.add(address)
                log.warning(
                    "relay: refusing connections from %s: it has %d open (--max-connections-per-address)",
                    address,
                    n,
                )
            return False
        self.open[address] = n + 1
        return True

    def give_back(self, address: str) -> None:
        n = self.open[address] - 1
        if n:
            self.open[address] = n
        else:
            del self.open[address]
        self._refusing.discard(address)


class _Counted(asyncio.Protocol):
    """One connection: counted against its address and passed on to the inner protocol, or refused."""

    def __init__(self, cap: ConnectionCap, inner: Callable[[], asyncio.Protocol]):
        self._cap = cap
        self._make = inner
        self._inner: asyncio.Protocol | None = None
        self._address: str | None = None
        self._closer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        address = address_of(transport.get_extra_info("peername"))
        if not self._cap.take(address):
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(self._cap.refusal(address))
            if self._cap.draining >= MAX_DRAINING:  # many refused at once: no fd held for any of them
                transport.close()
                return
            # read (and drop) what the client sends for a moment before closing: closing on unread bytes
            # would reset the connection, and the client could lose the answer
            self._cap.draining += 1
            self._closer = asyncio.get_running_loop().call_later(DRAIN, transport.close)
            return
        self._address = address
        self._inner = self._make()
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self._inner is not None:
            return self._inner.eof_received()
        return None  # refused: the client is done sending; closed now

    def connection_lost(self, exc: Exception | None) -> None:
        if self._closer is not None:
            self._closer.cancel()
            self._cap.draining -= 1
        if self._address is not None:
            self._cap.give_back(self._address)
        if self._inner is not None:
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()
