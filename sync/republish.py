"""Keeping this device's heads readable on a store whose heads expire (Kubo: an IPNS record has an end
of life, stores/ipns.py).

A record is valid for `ipns.lifetime()` (a year) after it was signed, and readers refuse it once that
has passed; a session left untouched that long would no longer import or follow. So, about once a day
(a quarter of the lifetime when that is shorter), the heads this device signs (its own log's head of
each session it pushed, and the members slot of each session it announced itself in as a writer) are
given to their store's `refresh_head`, which reads the record the store holds and publishes it again
(the same sequence, a new validity: the IPNS spec's republish) once less than half its lifetime is
left. A store whose heads do not expire reads nothing. When the last round ended is kept in the
database, so that a daemon restarted often does not read every head at each start, and one stopped
for months does its round at once.

A record past its end of life cannot be read to be renewed: Kubo validates a record before it answers
it, and answers one that has expired "routing: not found", as a name never published (as its DHT does
a record put 48 h ago that no device put again since: reput.py). So a daemon that was off for longer
than the lifetime finds nothing to republish (refresh_head: None). It then writes the head anew from
its own state in the database, at a revision above the one it last published (the IPNS spec's "Local
Record": the publisher tracks the sequence itself; a node may still hold the expired record, and keeps
the higher sequence): its log's head by a push of a new manifest over the log it recorded, its members
slot as a restore does (the writers it knows, past the revision it last wrote).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from nacl.signing import SigningKey

from ..storage.clock import wall
from ..stores import ipns
from .context import SyncContext
from .members import announce_key

log = logging.getLogger("sessiond.sync")

NOTE = "heads_refreshed_at"  # the database note: when the last round ended (Unix time)
MAX_EVERY = 24 * 3600.0  # seconds between two rounds at most
EVERY_ENV = "SESSIOND_IPNS_REPUBLISH_EVERY"  # seconds between two rounds, if set (tests: a republish seen sooner)


class Republisher:
    def __init__(
        self,
        ctx: SyncContext,
        *,
        rewrite_log: Callable[[str], Awaitable[object]] | None = None,
        rewrite_members: Callable[[str], Awaitable[object]] | None = None,
    ):
        """`rewrite_log(sid)`: publish this device's log head of `sid` anew (a forced push: a new manifest
        at the next revision); `rewrite_members(sid)`: write its members slot anew (Members.restore)."""
        self.ctx = ctx
        self.rewrite_log = rewrite_log
        self.rewrite_members = rewrite_members
        self.lifetime = ipns.lifetime()
        self.margin = self.lifetime / 2  # republished once less than half its lifetime is left
        self.every = ipns.env_seconds(EVERY_ENV) or min(MAX_EVERY, self.lifetime.total_seconds() / 4)

    async def run(self) -> None:
        """The background loop (Syncer.start): a round whenever `every` has passed since the last one."""
        while not self.ctx.stopping:
            try:
                last = float(await self.ctx.db.sync_note(NOTE) or 0)
            except ValueError:
                last = 0.0
            now = wall()
            wait = last + self.every - now
            if wait > 0 and last <= now:  # (a last round after now: the clock stepped back since; due now)
                await asyncio.sleep(min(wait, self.every))
                continue
            try:
                done = await self.round()
            except asyncio.CancelledError:
                raise
            except Exception:  # never let one bad round stop the loop: the next one tries again
                log.exception("republishing heads failed")
                await asyncio.sleep(min(self.every, 60.0))
                continue
            if done:
                log.info("heads republished before their records expire", extra={"objects": done})
            await self.ctx.db.set_sync_note(NOTE, repr(wall()))

    async def round(self) -> int:
        """Republish every head of this device whose record is due; how many were. A store that fails
        is logged and tried again at the next round."""
        done = 0
        ctx = self.ctx
        for sid in await ctx.db.session_ids():
            if ctx.stopping:
                break
            store = await ctx.store_for(sid)
            if not store.heads_expire:
                continue  # a folder, a relay, an S5 portal: its heads never expire (no key derived, nothing read)
            if not (await ctx.db.sync_state(sid))["head_rev"]:
                continue  # never pushed: no head of it anywhere
            keys: list[tuple[SigningKey, Callable[[str], Awaitable[object]] | None]] = [
                (ctx.keys.head_key(sid), self.rewrite_log)
            ]
            remote = await ctx.db.remote(sid)
            if remote and remote.get("announced"):
                ws = ctx.keys.write_secret(sid)
                if ws is not None:
                    keys.append((announce_key(ws), self.rewrite_members))  # the members slot it wrote as a writer
            for key, rewrite in keys:
                try:
                    did = await store.refresh_head(key, margin=self.margin)  # (each call bounded by the store)
                    if did is None and rewrite is not None:  # no valid record left to renew: write it anew
                        log.warning(
                            "the store holds no valid record of a head of this device (expired?): writing it again",
                            extra={"session": sid, "store": store.url},
                        )
                        did = bool(await rewrite(sid))
                    done += bool(did)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("could not republish a head: %s", exc, extra={"session": sid, "store": store.url})
            await asyncio.sleep(0)
        return done
