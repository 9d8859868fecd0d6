"""The daemon a command talks to: the one of --home (or $SESSIOND_HOME, or the default home)."""

from __future__ import annotations

from ..client import Client


def client(args) -> Client:
    return Client(args.home)
