"""The store URL a relay serves on, noted in its data folder at each start (`serving-url`), so that `sessiond serve
invite` names the whole URL a new device is given, not `HOST:PORT` to fill in. For a relay listening on every
address it is this machine's host name, as the relay prints it at start: a device elsewhere may reach it by
another name (or through a reverse proxy), which the invite's message says."""

from __future__ import annotations

import logging
import os
import re

from ..storage.fsutil import atomic_write

NAME = "serving-url"
log = logging.getLogger("sessiond.relay")
_URL = re.compile(r"s5\+https?://[A-Za-z0-9.\-_\[\]:]{1,300}")


def note_url(data_dir: str, url: str) -> None:
    """Note `url` (the relay's public_url) in `data_dir`, atomically; a folder that cannot take it is said in
    the log, never a reason not to serve (the invite then leaves HOST:PORT to fill in)."""
    try:
        atomic_write(os.path.join(data_dir, NAME), (url + "\n").encode())
    except OSError as exc:
        log.warning("cannot note the URL served on in %s (%s): `serve invite` will print HOST:PORT", data_dir, exc)


def noted_url(data_dir: str) -> str | None:
    """The URL the relay serving `data_dir` last noted, or None: none noted, or what is there is no relay URL
    (damaged, or written by hand)."""
    try:
        with open(os.path.join(data_dir, NAME), "rb") as f:
            text = f.read(1024).decode("ascii")
    except (OSError, UnicodeDecodeError):
        return None
    url = text.removesuffix("\n")
    return url if _URL.fullmatch(url) else None


def with_invite(url: str, invite: str) -> str:
    """`s5+http://HOST:PORT` with `invite` as its user part: the store URL a new device starts with."""
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{invite}@{rest}"
