"""A loopback port for a server that a test stops and starts again on the same address (a relay's accounts
are per address): one outside the kernel's ephemeral range.

A port the kernel gave (a listen on port 0) is free while such a server is down, and the kernel may give
it meanwhile to any other process listening on port 0 (the other test worker's servers and daemons): the
restart then fails, "cannot listen". The kernel gives a port of its ephemeral range only
(/proc/sys/net/ipv4/ip_local_port_range), to a listen on port 0 and to an outgoing connection alike, so a
port outside it is never handed to anyone else by chance."""

from __future__ import annotations

import random
import socket

EPHEMERAL_DEFAULT = (32768, 60999)  # Linux's default ip_local_port_range


def ephemeral_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
        return low, high
    except (OSError, ValueError):
        return EPHEMERAL_DEFAULT


def restartable_port(host: str = "127.0.0.1") -> int:
    """A port of `host` free now and outside the ephemeral range: a server may leave it and take it again."""
    low, high = ephemeral_range()
    ranges = [r for r in ((10_000, low - 1), (high + 1, 65_535)) if r[1] - r[0] >= 1000]
    if not ranges:
        raise RuntimeError(f"no room outside the ephemeral range {low}-{high} for a test server")
    for _ in range(100):
        first, last = random.choice(ranges)
        port = random.randint(first, last)
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind
            try:
                s.bind((host, port))
            except OSError:
                continue  # in use (a service of the machine, another test doing the same): another one
        return port
    raise RuntimeError("no free port outside the ephemeral range")
