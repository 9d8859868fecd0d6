"""Why a connection to a store or a provider could not be made is said in the system's words ("Connection
refused"), not asyncio's ("Connect call failed ('127.0.0.1', 9)"): stores/errors.py connect_cause. A host name
of several addresses (IPv4 and IPv6) whose connections fail with different errors is refused by asyncio's happy
eyeballs with one OSError of no errno whose text is "Multiple exceptions: [Errno 111] Connect call failed (...),
[Errno 101] Network is unreachable": that text was said as it is."""

from __future__ import annotations

import errno
import os
import socket

import aiohappyeyeballs
import pytest

from conftest import ReservedPort
from sessiond.stores.errors import connect_cause


async def _refused_by_every_address(port: int, *, v6: int) -> OSError:
    """How aiohttp's connector is refused by a host whose IPv4 address refuses the connection (nothing listens on
    `port`) and whose IPv6 address fails with `v6` (say, no route to it from here)."""
    infos = [
        (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", port)),
        (socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("2001:db8::1", port, 0, 0)),
    ]

    def made(info) -> socket.socket:
        if info[0] == socket.AF_INET6:
            raise OSError(v6, os.strerror(v6))
        return socket.socket(info[0], info[1], info[2])

    with pytest.raises(OSError) as e:
        await aiohappyeyeballs.start_connection(infos, socket_factory=made)
    return e.value


async def test_addresses_failing_with_different_errors_are_said_in_the_systems_words():
    with ReservedPort() as nobody:
        exc = await _refused_by_every_address(nobody.port, v6=errno.ENETUNREACH)
    assert "Multiple exceptions" in str(exc), exc  # (how the library combines them)
    said = connect_cause(exc)
    # main: "Multiple exceptions: [Errno 111] Connect call failed ('127.0.0.1', ...), [Errno 101] Network is ..."
    assert said == f"{os.strerror(errno.ECONNREFUSED)}; {os.strerror(errno.ENETUNREACH)}", said


async def test_addresses_failing_alike_are_said_once():
    with ReservedPort() as nobody:
        exc = await _refused_by_every_address(nobody.port, v6=errno.ECONNREFUSED)
    assert connect_cause(exc) == os.strerror(errno.ECONNREFUSED)
