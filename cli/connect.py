"""The daemon a command talks to: the one of --home (or $SESSIOND_HOME, or the default home)."""

from __future__ import annotations

from ..client import Client


def client(args, *, timeout: float | None = None) -> Client:
    """`timeout`: the seconds a call may take (default: the client's)."""
    # A command appends once at most: as a POST. The append stream pays off from a client's second append;
    # for one, its handshake cost the daemon ~160 us more than the POST (763 vs 600 us, medians of 6 x 400
    # one-append clients, 2026-12-04).
    if timeout is not None:
        return Client(args.home, append_stream=False, timeout=timeout)
    return Client(args.home, append_stream=False)
