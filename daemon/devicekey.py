"""The device key at the daemon's start: refused if damaged, or if lost while sessions here were pushed
signed with it (unless --reset-device-key). The `Daemon` (daemon/server.py) checks it once the database is
open, before anything could make a new key."""

from __future__ import annotations

import logging
import os

from ..storage.database import Database
from ..sync.keys import DEVICE_KEY, device_key_problem
from .home import Home, HomeError

log = logging.getLogger("sessiond")


async def check_device_key(home: Home, db: Database, *, reset_device_key: bool) -> None:
    """Refuse to start on a damaged device key, or without one while sessions here were pushed signed
    with it: a KeyStore would make a new key, and every such session would go on under a new writer,
    its followers rejecting it (a fork). Unless the database holds nothing signed with the lost key,
    or --reset-device-key (`reset_device_key`) says to make a new one anyway."""
    path = os.path.join(home.keys, DEVICE_KEY)
    problem = device_key_problem(home.keys)
    restore = f"`sessiond key import --home {home.path}` (your 24 backup words)"
    if problem is None:
        return
    if problem != "missing":
        raise HomeError(f"the device key {path} is {problem}: restore it with {restore}")
    signed = await db.signed_sessions()
    if not signed:
        return  # a new home, or nothing of it pushed yet: a new key loses nothing
    if not reset_device_key:
        raise HomeError(
            f"the device key {path} is missing, but {signed} session(s) here were pushed signed with it; "
            f"restore it with {restore}, or start with --reset-device-key to make a new key (this device "
            f"then can no longer update those sessions where they are shared: their followers reject it)"
        )
    log.warning(
        "--reset-device-key: a new device key replaces the lost one; sessions pushed under the old key "
        "can no longer be updated from here where they are shared",
        extra={"event": "start", "objects": signed},
    )
