"""Following the other devices of shared sessions: pulling what they wrote.

A pull reads the session's members slot (taking a rekey notice found there, or finishing one a crash cut
short), then fetches the logs of the members whose heads moved and applies them. `poll` decides, each
round of the worker, which sessions to pull: those whose heads changed in the store since the last look
(when the store can say), those whose last pull failed, and now and then all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import time
from collections.abc import Iterator

from ..storage.testhooks import pause_for_tests
from ..stores import Store, StoreError
from ..stores.errors import describe_failure
from ..stores.registry import RegistryEntry
from .bounded import LRU
from .context import SyncContext
from .errors import ImportError_, describe, no_relay_account
from .fetch import fetch_logs, read_head
from .followfrozen import FrozenLogs
from .generation import Generations, RekeyBusy
from .generation import polling as polling_
from .locations import relay_account_fix
from .members import LOST, MEMBERS_KEPT, Members
from .membersobject import member_name
from .mirror import MirrorStore
from .mirrorapart import Apart, holding, watching
from .rekey import Rekeyer

log = logging.getLogger("sessiond.sync")
# seconds: every shared session is checked this often even if no head seems to change (a safety net: a
# store that names or lists its changed heads is exact, so this is rare; a blind store has its own rounds).
# A writer of a session's members slot reads the slot's object again this often too (Follower.pull).
FULL_PULL_EVERY = 300.0
FULL_PULL_ENV = "SESSIOND_FULL_PULL_EVERY"


def full_pull_every() -> float:
    """FULL_PULL_EVERY, or SESSIOND_FULL_PULL_EVERY seconds (for tests: rounds within seconds, so that what
    only they notice can be seen). Read when used, as the fault hooks are: a process forked from one that
    imported this module before the variable was set must see it."""
    text = os.environ.get(FULL_PULL_ENV, "").strip()
    return float(text) if text else FULL_PULL_EVERY


# sessions pulled at once: a pull waits mostly on the store (and its thread hops), so several overlap
PULLS_AT_ONCE = 8
# set in the pulls `sessiond sync --wait` makes (Follower.asked)
_ASKED: contextvars.ContextVar[bool] = contextvars.ContextVar("sessiond_follower_asked", default=False)


class Follower:
    """Pulls shared sessions; remembers what each store's heads were, and why pulls failed (ctx.pull_errors)."""

    def __init__(
        self, ctx: SyncContext, members: Members, rekeyer: Rekeyer, *, interval: float, min_wait: float = 0.25
    ):
        self.ctx = ctx
        self.members = members
        self.rekeyer = rekeyer
        self.generations = Generations(ctx)  # (the rekey lock as pulls take it: generation.py)
        self.interval = interval
        self.pull_now = True  # pull every shared session in the next round (at the start, or asked to)
        self.min_wait = min_wait
        self._head_versions: dict[str, dict[bytes, object]] = {}  # per store URL: what each head was
        self._tokens: dict[str, object] = {}  # per store URL with a change feed: where its feed was read up to
        self._blind_wait = min_wait  # the wait between full rounds while a store cannot say what changed
        self._blind_next = 0.0
        self._last_retry = 0.0
        self._last_full_pull = 0.0
        # sessions pulled at the next poll whatever the stores say: just imported (a head that moved during the
        # import was named to a poll that knew no session following it), or due in a round that failed
        self._due: set[str] = set()
        self._carried: set[bytes] = set()  # heads named changed to a round that failed: looked at again
        self.looks = 0  # rounds that asked the stores what changed (an import compares it before and after)
        self.frozen = FrozenLogs(ctx, members, self.generations)  # the slot's frozen logs a pull takes in
        self.apart = Apart()  # sessions whose slot the stores of a mirror were seen holding apart (mirrorapart.py)
        self._held_noted: LRU[tuple[str, str, bytes], bool] = LRU(MEMBERS_KEPT)  # logs_seen noted by this process

    @staticmethod
    @contextlib.contextmanager
    def asked() -> Iterator[None]:
        """The pulls made within were asked for (`sessiond sync --wait`: what an import's error for a lost frozen
        log says to run on a writer): each looks for every frozen log's manifest in the store, those this process
        took already too, and a writer puts back one lost (frozenrepair.py)."""
        token = _ASKED.set(True)
        try:
            yield
        finally:
            _ASKED.reset(token)

    def follow(self, sid: str) -> None:
        """`sid` was just imported while polls went on (`looks` moved): pull it at the next poll. A head of
        it that moved after the import read it may have been named to a poll that knew no session
        following that head yet, and would not be named again."""
        self._due.add(sid)

    async def poll(self) -> None:
        """Pull the shared sessions whose heads (a device's log, or the members slot) changed in the
        store since the last look; all of them when a store cannot say which changed, when asked to
        (`sessiond sync`), and now and then in any case. So a follower of many sessions does work in
        proportion to what changed, not to how many sessions it follows: a store with a change feed
        (the relay, a folder's change journal) names the changed heads (Store.head_changes; after a
        relay's reset, the heads it does not name at the revision held here: _not_held), one that
        lists its heads cheaply is compared with the last listing, and one that can do neither is read in full rounds
        spaced out (from `min_wait` up to `interval`) while they find nothing new."""
        ctx = self.ctx
        if not await ctx.db.has_shared_sessions():
            return
        t = time.monotonic()
        full = self.pull_now or t - self._last_full_pull >= full_pull_every()
        blind = False
        # a store's change feed moves on as it answers: what it named is carried over if this round fails
        changed, self._carried = self._carried, set()
        due, self._due = self._due | self.apart.back(), set()
        try:
            await self._round(t, full, blind, changed, due)
        except BaseException:
            self._carried |= changed
            self._due |= due
            raise

    async def _round(self, t: float, full: bool, blind: bool, changed: set[bytes], due: set[str]) -> None:
        """One poll (see poll): `changed` and `due` are filled in and pulled; raises with them left for the next."""
        ctx = self.ctx
        for url in ctx.store_urls():
            store = ctx.open_store(url)
            try:
                feed = await store.head_changes(self._tokens.get(url))
            except (StoreError, OSError):
                feed = None
            if feed is not None:
                token, pks = feed
                if pks is None:  # a reset: the heads whose revision it names is not the one held here
                    pks = await self._not_held(store)
                # the token moves on only now: a read of what is held here that failed leaves the old one,
                # whose next answer is the reset again (not nothing changed, until the next full round)
                self._tokens[url] = token
                if pks is None:
                    full = True
                else:
                    changed.update(pks)
                continue
            self._tokens.pop(url, None)
            try:
                versions = await store.head_versions()
            except (StoreError, OSError):
                versions = None
            before = self._head_versions.get(url)
            if versions is None:
                blind = True
            elif before is None:
                full = True
            elif versions is not before:  # the same listing: nothing changed (stores/file.py)
                changed.update(pk for pk, v in versions.items() if before.get(pk) != v)
                changed.update(before.keys() - versions.keys())  # deleted: a lost members slot is written again
            if versions is not None:
                self._head_versions[url] = versions
            else:
                self._head_versions.pop(url, None)
        self.looks += 1
        if blind and t >= self._blind_next:
            full = True  # a store that cannot say what changed: a full round, when its wait is over
        # sessions whose last pull failed are tried again every `interval`: the change that made them
        # due has been seen already and would not make them due again
        retry: set[str] = set()
        if ctx.pull_errors and t - self._last_retry >= self.interval:
            retry = set(ctx.pull_errors)
            self._last_retry = t
        if full:
            self.pull_now = False
            self._last_full_pull = t
            try:
                new = await self.pull_all(polling=True)
            except BaseException:
                self.pull_now = True  # the full round again at the next poll
                raise
            # nothing new: the next blind round waits twice as long (up to `interval`); news: soon again
            self._blind_wait = self.min_wait if new else min(self.interval, max(self.min_wait, 2 * self._blind_wait))
            self._blind_next = time.monotonic() + self._blind_wait
        elif changed or retry or due:
            moved = await ctx.db.sessions_with_heads(sorted(changed))
            # the retried and the just imported are read in full (their members slot too)
            await self.pull_all(sorted(retry.union(due, moved)), changed=changed, retry=retry | due, polling=True)

    async def _not_held(self, store: Store) -> set[bytes] | None:
        """After `store`'s change feed could not say what changed (a relay's reset: it restarted without
        its feed's state, or this device's cursor is too old), the heads of the sessions following it there
        that must be read: those the feed names at a revision other than the one last read here (newer;
        0, never read), and those it does not name (the relay may not follow them for this account yet).
        A head named at the revision held here is not read: the feed is a hint, and what it names is read
        and verified as any head. None when the store cannot say (then every head is read)."""
        try:
            revisions = await store.head_revisions()
        except (StoreError, OSError):
            revisions = None
        if revisions is None:
            return None
        ctx, out = self.ctx, set()
        stores: dict[str | None, Store] = {}
        for sid, url, pk, rev in await ctx.db.held_revisions():
            st = stores.get(url)
            if st is None:
                st = stores[url] = ctx.open_store(url)
            # (this device's own head is never read by a pull)
            if st is store and revisions.get(pk) != rev and pk != ctx.keys.head_pk(sid):
                out.add(pk)
        return out

    async def pull(self, sid: str, moved: set[bytes] | None = None, *, restored: bool = False) -> int:
        """_pull; a failure that is the session's relay (not this device's own store: a session imported
        through one) refusing this device for want of an account there says the import's fix: an invite,
        given with `sessiond import --store-file` (locations.relay_account_fix)."""
        try:
            return await self._pull(sid, moved, restored=restored)
        except (ImportError_, StoreError) as exc:
            if not no_relay_account(exc) or getattr(exc, "fix", None):
                raise
            remote = await self.ctx.db.remote(sid)
            store = self.ctx.open_store(remote["store_url"]) if remote is not None else self.ctx.store
            if store is self.ctx.store:
                raise  # this device's own store: `doctor` says its fix (a new invite given at the daemon's start)
            fix = relay_account_fix(store.url)
            if isinstance(exc, ImportError_):
                exc.fix = fix
                raise
            err = ImportError_("store", describe_failure(exc, store.url), fix, refused=True, no_account=True)
            err.failure = (exc, store.url)
            raise err from None

    async def _pull(self, sid: str, moved: set[bytes] | None = None, *, restored: bool = False) -> int:
        """Bring in what other devices wrote to `sid` since the last pull. Returns new operations.
        `moved`: the heads the stores said changed since the last poll (the poll's pulls); the members
        slot, if not among them, is taken as last read (Members.read_members `unchanged`). A members slot
        found lost (its entry or object gone, or damaged) is written again here if this device wrote it
        (Members.restore), then read again (`restored`): the writers mend it without a `sessiond sync`.
        Its entry lost is a change of the store's heads, which the next poll names; its object lost changes
        no head, and the slot as last read is taken while its entry stays: a device that wrote the slot
        reads its object again in a full pull (`moved` None) once every FULL_PULL_EVERY seconds (counted
        from this process's last read or write of it: Members.object_read_ago)."""
        ctx = self.ctx
        db, keys = ctx.db, ctx.keys
        remote = await db.remote(sid)
        key = keys.session_key(sid)
        if remote is None or key is None:
            return 0
        if keys.rekey_pending(sid) is not None:  # a rekey cut short by a crash (or under way here): finish it first
            async with self.generations.lock(sid):
                await self.rekeyer.resume(sid)
            remote, key = await db.remote(sid), keys.session_key(sid)
            if remote is None or key is None:
                return 0
        store = ctx.open_store(remote["store_url"])
        announce_pk = bytes(remote["announce_pk"])
        ago = self.members.object_read_ago(sid)
        audit = (
            moved is None
            and bool(remote["announced"])
            and keys.write_secret(sid) is not None
            and (ago is None or ago >= full_pull_every())
        )
        try:
            with watching() as apart:
                rev, members, notice, frozen = await self.members.read_slot(
                    store,
                    sid,
                    key,
                    announce_pk,
                    min_rev=remote["members_rev"],
                    cached=not audit,
                    unchanged=moved is not None and b"\xed" + announce_pk not in moved,
                )
            if notice is not None:
                async with self.generations.lock(sid):
                    try:
                        await self.rekeyer.take(sid, notice, store, members)
                    except Exception:
                        await self._settle_quietly(sid)  # (a chain of rekeys cut short: its push left to its end)
                        raise
                now = await db.remote(sid)
                assert now is not None  # taking a notice switches the remote; it does not remove it
                if bytes(now["announce_pk"]) != announce_pk:
                    return await self.pull(sid)  # now on the new key and members slot (switched here or meanwhile)
        except ImportError_ as exc:  # (left out of a rekey, `revoked`: marked so by the check, Rekeyer.confirm)
            if exc.kind == "missing" and remote["members_rev"] == 0:
                return 0  # shared from here, not announced yet: nobody else can have written
            if exc.kind in LOST and not restored and await self._restore(sid, announce_pk):
                return await self.pull(sid, restored=True)
            raise
        if await self.rekeyer.owed.owes(sid, remote):  # (goes on in this generation: a push left to a chain's end)
            async with self.generations.lock(sid):
                await self.rekeyer.owed.settle(sid)
        newer = rev > remote["members_rev"]
        if newer:
            await db.set_remote(sid, members_rev=rev)
        # a revision new here, which a device on only some of the mirror's stores may have written: carried to the
        # others, which hold the one before (Members.restore), or a device on those writes its own slot at this
        # revision there. Or the mirror's stores seen holding the slot apart (one that was not caught up when this
        # device read the revision came back with another copy of it): checked once, not left until its next one
        if isinstance(store, MirrorStore) and (self.apart.check(sid, store, apart.get(b"\xed" + announce_pk)) or newer):
            await self._restore(sid, announce_pk)
        await self.frozen.write_back(sid, remote, members, frozen)
        new = await self.frozen.take(sid, store, frozen, announce_pk, audit=audit or _ASKED.get()) if frozen else 0
        my_pk = keys.head_pk(sid)
        known = {bytes(p["head_pk"]): p for p in await db.peers(sid)}
        heads = [m for m in members if m["head_pk"] != my_pk]
        changed = []
        read: dict[bytes, RegistryEntry | None] = {}  # the heads read here, not read again by fetch_logs
        with holding() as holders:  # (a mirror: the stores seen holding each head read, at no read of its own)
            for m in heads:
                k = known.get(m["head_pk"])
                head = read[m["head_pk"]] = await read_head(store, sid, m["head_pk"], member_name(m), ctx.timeout)
                # a member not known yet is taken in even without a head (it imported, wrote nothing yet):
                # its head is then followed, and its first push is seen
                if k is None or (head is not None and head.revision != k["rev"]):
                    changed.append(m)
        await self._seen_holding(sid, holders)
        if not changed:
            return new if await self.generations.on(sid, announce_pk) else new + await self.pull(sid)
        logs, peers = await fetch_logs(
            store,
            sid,
            keys.session_keys(sid),
            changed,
            full=False,
            known=known,
            timeout=ctx.timeout,
            check=ctx.check_remote,
            heads=read,
            behind_ok=True,
        )
        await pause_for_tests("pull.fetched")  # (the tests hold it here: the logs read, nothing applied)
        # applied under the session's rekey lock, and only on the generation the pull read: a rekey here (or the
        # take of another device's) freezes the dropped writers' logs as this device holds them, and records
        # it, under that lock; applied after, what a dropped writer wrote past its freeze would be this
        # device's alone (the next pull reads the new slot)
        try:
            async with self.generations.same(sid, announce_pk) as same:
                if same:
                    new += await db.apply_remote(sid, logs, peers=peers)
        except RekeyBusy:  # (left to the next poll: a rekey here holds the session)
            await pause_for_tests("pull.applied")
            raise
        await pause_for_tests("pull.applied")  # (the tests: the logs applied, or left)
        # the generation read switched meanwhile (a rekey here, or another pull's take of a notice): nothing applied,
        # and the new generation's logs not read. Read now: a pull that succeeds read every writer's log under the
        # key the session is on (a shared session's idle end is confirmed by one: daemon/sharedidle.py)
        return new if same else new + await self.pull(sid)

    async def _seen_holding(self, sid: str, holders: dict[bytes, frozenset[str]]) -> None:
        """The stores of a mirror a pull's reads saw holding other devices' heads: noted as holding their logs
        (storage/logsseen.py), as verify notes them, so a store wiped after normal syncs, never a verify here, is
        found to have lost them (sync/verify.py). Each once a process: no write, nor read, at every pull."""
        for pk, urls in holders.items():
            for url in urls:
                if (sid, url, pk) not in self._held_noted:
                    await self.ctx.db.syncstate.logs_seen.seen(sid, url, [pk])
                    self._held_noted[(sid, url, pk)] = True

    async def _settle_quietly(self, sid: str) -> None:
        """OwedPush.settle, its failure said and left (the failure the pull raises is the take's)."""
        try:
            await self.rekeyer.owed.settle(sid)
        except Exception as exc:
            log.warning("could not push the log a rekey's switch left: %s", describe(exc), extra={"session": sid})

    async def _restore(self, sid: str, announce_pk: bytes) -> bool:
        """Members.restore, after a pull found the slot lost, or read a new revision of it through a mirror (carried to
        the mirror's stores behind it): whether it wrote the slot again (on the generation
        the pull read only: generation.py). Its own failure is not reported: the pull's is (and the next pull tries
        again)."""
        try:
            async with self.generations.same(sid, announce_pk) as same:
                return same and await self.members.restore(sid)
        except (ImportError_, StoreError, TimeoutError, OSError):
            return False

    async def pull_all(
        self,
        sids: list[str] | None = None,
        *,
        changed: set[bytes] | None = None,
        retry: set[str] | None = None,
        polling: bool = False,
    ) -> int:
        """Pull `sids` (default: every shared session), PULLS_AT_ONCE at a time. Returns how many new
        operations came in. `changed`: as in pull, except for the sessions in `retry` (whose last pull
        failed: read in full). `polling` (a poll's round): a session a rekey here holds is not waited for, but
        left to the next poll (generation.py)."""
        ctx = self.ctx
        every = await ctx.db.shared_sessions() if sids is None else sids
        todo = iter(every)

        async def puller() -> int:
            with polling_(polling):  # (reset at its end: one puller runs in the caller's own task)
                return await pull_each()

        async def pull_each() -> int:  # takes the next session from the shared iterator until none is left
            new = 0
            for sid in todo:
                if ctx.stopping:
                    break
                try:
                    hint = None if retry and sid in retry else changed
                    began = time.monotonic()
                    new += await (self.pull(sid) if hint is None else self.pull(sid, hint)) or 0
                    ctx.pull_ok(sid, began=began)
                except RekeyBusy:
                    self._due.add(sid)  # (a rekey here holds it: pulled in full by the first poll after it)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    before = ctx.pull_errors.get(sid)
                    msg = ctx.pull_failed(sid, exc, imported=await ctx.imported_elsewhere(sid))
                    if before != msg:
                        log.warning("pull failed", extra={"session": sid, "error": msg})
                        ctx.on_event({"type": "sync.error", "session": sid, "error": msg})
            return new

        n = min(PULLS_AT_ONCE, len(every))
        return await puller() if n <= 1 else sum(await asyncio.gather(*(puller() for _ in range(n))))
