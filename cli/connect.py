"""The daemon a command talks to: the one of --home (or $SESSIOND_HOME, or the default home)."""

from __future__ import annotations

import os

from ..client import Client, ClientError
from .output import safe


def client(args, *, timeout: float | None = None) -> Client:
    """`timeout`: the seconds a call may take (default: the client's)."""
    # A command appends once at most: as a POST. The append stream pays off from a client's second append;
    # for one, its handshake cost the daemon ~160 us more than the POST (763 vs 600 us, medians of 6 x 400
    # one-append clients, 2026-12-04).
    if timeout is not None:
        return Client(args.home, append_stream=False, timeout=timeout)
    return Client(args.home, append_stream=False)


# seconds the note of a provider not defined here waits for the daemon's status: the change is made by then, and a
# daemon that does not answer (stuck) held the command for the client's default timeout (300 s) for a note
NOTE_WAIT = 3.0


def note_provider_not_here(args, c: Client) -> None:
    """`--provider NAME` given to `new`, `set`, `chat new` or `chat set`, taken: a name this device's config.toml
    does not define is kept all the same (the setting syncs, and another device may define it), but every
    question asked here would be refused, so standard error says so, and where to add it. A status not had
    within NOTE_WAIT seconds: nothing said."""
    import sys

    name = getattr(args, "provider", None)
    if not name:
        return
    try:
        with Client(c.home, socket=c.socket, timeout=NOTE_WAIT) as note:  # (its connection closed once answered)
            status = note.status()
    except ClientError:  # (the change is made: a note that cannot be had is no failure of it)
        return
    providers = status.get("providers")
    names = providers["names"] if providers else []
    if name in names:
        return
    config = os.path.join(status.get("home") or c.home, "config.toml")
    configured = ", ".join(names) or "none"
    print(
        safe(
            f"sessiond: note: no provider {name!r} in this device's config.toml (configured: {configured}):"
            f" it is set, and syncs to the devices that have one, but questions asked here are refused until"
            f" [providers.{name}] is added to {config} (and the daemon restarted)"
        ),
        file=sys.stderr,
    )
