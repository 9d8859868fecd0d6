"""Rotating a shared session's key (rekey), and taking another device's rekey.

A rekey is three steps: the new keys and the intent written here (a rekey-pending record, one atomic
file), the notice published in the old members slot, then the switch (keys rotated, the new slot
announced, this device's log pushed under the new key). The record goes first and goes last: a
crash at any step leaves it, and the next pull of the session (the first round after a start)
finishes the rekey from it. A device taking another's rekey keeps such a record while it switches.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Sequence

from nacl.public import SealedBox
from nacl.signing import VerifyKey

from ..stores import StaleHead, Store
from ..stores.registry import RegistryEntry
from . import dagcbor
from .context import SyncContext
from .crypto import members_key
from .errors import ImportError_
from .members import SALT_LEN, T_MEMBERS, Members, announce_key, seal_small
from .pusher import Pusher

log = logging.getLogger("sessiond.sync")


def _crash_point(name: str) -> None:
    """A fault hook for the crash tests: SESSIOND_CRASH_AT=name makes the daemon die here at once, as
    under kill -9 (no clean-up, no flush)."""
    if os.environ.get("SESSIOND_CRASH_AT") == name:
        os._exit(137)


class Rekeyer:
    """Rekeys sessions (this device's own rekey) and takes the rekeys of other devices."""

    def __init__(self, ctx: SyncContext, members: Members, pusher: Pusher):
        self.ctx = ctx
        self.members = members
        self.pusher = pusher

    async def rekey(self, sid: str, drop: Sequence[str] = (), *, drop_all: bool = False) -> dict:
        """Rotate the session key. Every writer device except those in `drop` (every one, with
        `drop_all`) gets the new key, sealed to its head key, through a notice in the old members slot;
        everyone else (read-only followers, old codes) can read nothing written from now on."""
        ctx = self.ctx
        await ctx.db.get_session(sid)
        async with ctx.rekey_lock(sid):
            if ctx.keys.rekey_pending(sid) is not None:
                await self.resume(sid)  # an earlier one, cut short: finish it first
            old_key, old_write = ctx.keys.session_key(sid), ctx.keys.write_secret(sid)
            remote = await ctx.db.remote(sid)
            if old_key is None or old_write is None or remote is None:
                raise ImportError_("read_only", f"only a device that can write {sid} and has shared it can rekey it")
            store = await ctx.store_for(sid)
            my_pk = ctx.keys.head_pk(sid)
            new_key, new_write = os.urandom(32), os.urandom(32)
            new_announce = bytes(announce_key(new_write).verify_key)
            for _attempt in range(5):
                rev, members, notice = await self.members.read_members(
                    store, sid, old_key, bytes(remote["announce_pk"])
                )
                if notice is not None:
                    ctx.keys.clear_rekey_pending(sid)  # ours never reached the store
                    raise ImportError_(
                        "conflict",
                        f"session {sid} was rekeyed by another device at the same time; "
                        f"this device takes that key at its next pull (`sessiond sync`), "
                        f"then run rekey again if you still want to",
                    )
                others = {m["device_id"] for m in members if m["head_pk"] != my_pk}
                unknown = [d for d in drop if d not in others]
                if unknown:
                    ctx.keys.clear_rekey_pending(sid)
                    raise ImportError_(
                        "unknown_device",
                        f"no writer device {', '.join(map(repr, unknown))} in session "
                        f"{sid} to drop (its other writers: "
                        f"{', '.join(sorted(others)) or 'none'})",
                    )
                keep = [m for m in members if m["head_pk"] != my_pk and m["device_id"] not in drop and not drop_all]
                record = {
                    "k": new_key,
                    "w": new_write,
                    "a": new_announce,
                    "m": [{"d": m["device_id"], "k": m["head_pk"]} for m in keep],
                    "own": True,
                }
                ctx.keys.set_rekey_pending(sid, dagcbor.encode(record))
                _crash_point("rekey:pending")
                try:
                    await self._publish_notice(store, sid, old_key, old_write, rev, members, record)
                except StaleHead:
                    continue  # the slot changed meanwhile (a writer joined, or another rekey): look again
                break
            else:
                raise ImportError_("busy", f"could not rekey {sid}: its members list kept changing; try again")
            _crash_point("rekey:published")
            await self._finish(sid, record)
        log.info("rekeyed", extra={"session": sid, "event": "rekey"})
        return {
            "session": sid,
            "kept": [m["device_id"] for m in keep],
            "dropped": [m["device_id"] for m in members if m["head_pk"] != my_pk and m not in keep],
        }

    async def _publish_notice(
        self, store: Store, sid: str, old_key: bytes, old_write: bytes, rev: int, members: list[dict], record: dict
    ) -> None:
        """The notice, as revision rev+1 of the old members slot: a box for each kept writer, and one for
        this device too (so that even without its record it can take its own rekey, as the others do)."""
        secret = dagcbor.encode({"a": record["a"], "k": record["k"], "w": record["w"]})
        pks = [m["k"] for m in record["m"]] + [self.ctx.keys.head_pk(sid)]
        boxes = [{"k": pk, "x": SealedBox(VerifyKey(pk[1:]).to_curve25519_public_key()).encrypt(secret)} for pk in pks]
        notice = {"a": record["a"], "b": boxes, "t": int(time.time())}
        plain = dagcbor.encode(
            {
                "m": [{"d": m["device_id"], "k": m["head_pk"]} for m in members],
                "rekey": notice,
                "s": sid,
                "v": 1,
                "ty": T_MEMBERS,
            }
        )
        salt = os.urandom(SALT_LEN)
        h = await asyncio.wait_for(store.put(seal_small(plain, members_key(old_key, salt))), self.ctx.timeout)
        await asyncio.wait_for(
            store.set_head(RegistryEntry.create(announce_key(old_write), rev + 1, b"\x1e" + h + salt)), self.ctx.timeout
        )

    async def _finish(self, sid: str, record: dict) -> None:
        await self._switch_key(
            sid, record["k"], record["w"], record["a"], [{"device_id": m["d"], "head_pk": m["k"]} for m in record["m"]]
        )
        self.ctx.keys.clear_rekey_pending(sid)

    async def resume(self, sid: str) -> None:
        """Finish a rekey that a crash cut short (the caller holds the session's rekey lock)."""
        ctx = self.ctx
        raw = ctx.keys.rekey_pending(sid)
        if raw is None:
            return
        record = dagcbor.decode(raw)
        remote = await ctx.db.remote(sid)
        old_key, old_write = ctx.keys.session_key(sid), ctx.keys.write_secret(sid)
        if (
            record.get("own")
            and remote is not None
            and old_key != record["k"]
            and bytes(remote["announce_pk"]) != record["a"]
        ):
            # this device's own rekey: was its notice published?
            assert old_key is not None  # this device's own rekey began with the key it held
            store = await ctx.store_for(sid)
            rev, members, notice = await self.members.read_members(store, sid, old_key, bytes(remote["announce_pk"]))
            if notice is not None and notice.get("a") != record["a"]:
                ctx.keys.clear_rekey_pending(sid)  # another device's rekey came first: the pull takes it
                log.warning("rekey abandoned: another device rekeyed first", extra={"session": sid})
                return
            if notice is None:
                assert old_write is not None  # an own rekey needs the write secret (Rekeyer.rekey checks it)
                await self._publish_notice(store, sid, old_key, old_write, rev, members, record)
        await self._finish(sid, record)
        log.info("finished an interrupted rekey", extra={"session": sid, "event": "rekey"})

    async def _switch_key(
        self, sid: str, key: bytes, write: bytes | None, announce: bytes, members: list[dict]
    ) -> None:
        self.ctx.keys.rotate(sid, key, write)
        _crash_point("rekey:rotated")
        await self.ctx.db.set_remote(sid, announce_pk=announce, members_rev=0, announced=0)
        _crash_point("rekey:switched")
        if write is not None:
            await self.members.ensure_member(sid, extra=members)
        _crash_point("rekey:announced")
        if await self.ctx.db.last_seq(sid):
            await self.pusher.push(sid, force=True)  # this device's log, now under the new key

    async def take(self, sid: str, notice: dict) -> bool:
        """A rekey notice in the members slot: open this device's box, or learn that access ended."""
        keys = self.ctx.keys
        my_pk = keys.head_pk(sid)
        box = next((b["x"] for b in notice.get("b", []) if b.get("k") == my_pk), None)
        remote = await self.ctx.db.remote(sid)
        if remote is not None and bytes(remote["announce_pk"]) == notice.get("a"):
            return False  # already switched
        if box is None:
            raise ImportError_(
                "revoked",
                f"session {sid} was rekeyed without this device: it keeps what it has "
                f"but receives nothing new (ask for a new share code)",
            )
        try:
            secret = dagcbor.decode(SealedBox(keys.head_key(sid).to_curve25519_private_key()).decrypt(box))
        except Exception:
            raise ImportError_("damaged", f"the rekey notice of {sid} cannot be opened by this device") from None
        record = {
            "k": secret["k"],
            "w": secret.get("w") if keys.write_secret(sid) else None,
            "a": secret["a"],
            "m": [],
            "own": False,
        }
        keys.set_rekey_pending(sid, dagcbor.encode(record))  # a crash while switching resumes it
        await self._finish(sid, record)
        log.info("took new session key", extra={"session": sid, "event": "rekey"})
        return True
