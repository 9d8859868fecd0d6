"""What the parts of the sync engine share, in one small object handed to each of them.

`SyncContext` holds the database, the device's keys, the stores (this daemon's own, and those other
sessions were imported from, opened once by URL), the timeout of every store call, the event sink,
the per-session locks (one for pushing, one for rekeying) and the maps of what went wrong (pull
errors, sessions whose log needs a repair). It also says which store a session syncs through.

`workers` are the threads this device's pushes are written on (workers.py), owned by the Syncer.

The parts (pusher.py, members.py, rekey.py, fetch.py, importer.py, follower.py, verify.py, proofs.py,
share.py) each take this object and the other parts they call, so that what a part uses is written
in its constructor; engine.Syncer builds them all and owns the worker loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field

from nacl.signing import SigningKey

from ..storage.database import Database
from ..storage.model import RemoteLog
from ..storage.redact import scrub_text
from ..stores import Store
from ..stores.bounded import bounded
from ..stores.cid import digest
from ..stores.errors import StoreError, failure_kind, way_on
from ..stores.registry import RegistryEntry
from .bounded import KeyedLocks
from .errors import fix_said, no_relay_account
from .keys import KeyStore
from .mirror import MirrorStore, open_stores
from .mirrorurls import credentials_of, same_stores, stores_identity
from .storecreds import StoreCredentials
from .workers import Workers

# seconds a look at the store's own state (Store.failing_now) may take in GET /v1/status before it is left
FAILING_LOOK = 1.0


@dataclass
class SyncContext:
    db: Database
    store: Store  # this daemon's store; a session imported from another store syncs through that one
    keys: KeyStore
    timeout: float  # seconds, for every store call
    on_event: Callable[[dict], None]
    workers: Workers | None = None  # the threads pushes run on (the Syncer's; None: workers.shared())
    # refuses (Invalid) what another device wrote that the API would not accept; the daemon gives its
    # validation (daemon/validate.py remote_log), so that sync needs no import of the daemon
    check_remote: Callable[[RemoteLog], None] | None = None
    stores: dict[str, Store] = field(default_factory=dict)  # the other stores, by URL
    pull_errors: dict[str, str] = field(default_factory=dict)  # per session: why its last pull failed
    # per session whose last pull failed: the failure's kind (an ImportError_'s, else its class), which
    # `doctor` reads its fix from; set and cleared with pull_errors (pull_failed, pull_ok)
    pull_kinds: dict[str, str] = field(default_factory=dict)
    # per session whose last pull failed in a way its error's `fix` mends beyond its kind's (errors.ImportError_:
    # a relay's account lost, its invite); set and cleared with pull_errors
    pull_fixes: dict[str, str] = field(default_factory=dict)
    # sessions whose last pull failed in a way no share code of it gets past (errors.ImportError_'s `fork`: a rekey
    # kept unfinished on a mirror, rekeykept.py), which doctor's fix says (a fork shared anew), whatever its kind's
    # would; set and cleared with pull_errors
    pull_forks: set[str] = field(default_factory=set)
    # per session: the store's own failure and the store's URL, when its last pull failed for a store that
    # failed to answer (a relay refusing a revoked account: doctor's fix by its class); set and cleared with
    # pull_errors
    pull_failures: dict[str, tuple[BaseException, str]] = field(default_factory=dict)
    # per session: when (time.monotonic()) the last pull of it that succeeded began, in this run (none at the
    # start): the daemon's clean-up ends a shared session as idle only once a pull begun after it found it
    # idle has brought in what the others wrote (daemon/operations.py), and `on_pulled` tells it of each
    pulled: dict[str, float] = field(default_factory=dict)
    on_pulled: Callable[[str], None] | None = None
    repair: set[str] = field(default_factory=set)  # sessions whose log verify found incomplete in the store
    # per session: this device's head found served rolled back or forged by its store, and published again by a
    # sync's repair (sync/lostlog.py: {store, how, published, served}); doctor warns of it until a sync's check
    # finds the store holding the log whole. `deferred` in one: the last sync checks left a store unchecked
    # ({store, why, checks, at}: a mirror's store with a write under way or writes in its outbox, or a store not
    # answering), which doctor says as such: the warning kept because the store was not looked at, not because it
    # was found lacking. Each kept in the database too (storage/headlies.py HeadMends): a restart keeps them.
    head_mends: dict[str, dict] = field(default_factory=dict)
    # sessions with another device on them (shared from here or imported: a `remotes` row), pushed first
    shared: set[str] = field(default_factory=set)
    stopping: bool = False  # set by Syncer.stop: long loops end early
    # per session: one push at a time, one rekey at a time (a lock exists only while in use)
    locks: KeyedLocks = field(default_factory=KeyedLocks)
    rekey_locks: KeyedLocks = field(default_factory=KeyedLocks)
    _progress_at: dict[tuple[str, str], float] = field(default_factory=dict)
    _credentials: StoreCredentials | None = None
    # per store in `stores`: the credentials it was opened with (one per URL of a mirror, None where none)
    _opened_with: dict[str, tuple[str | None, ...]] = field(default_factory=dict)
    _closing: set[asyncio.Task] = field(default_factory=set)  # stores replaced, being closed
    # objects put for a slot's write that will name them, not yet written (put_to_name): gc frees none of them
    naming: set[bytes] = field(default_factory=set)

    async def imported_elsewhere(self, sid: str) -> bool:
        """Whether session `sid` was imported through a store other than this daemon's (and syncs through it)."""
        remote = await self.db.remote(sid)
        return bool(remote and remote["store_url"])

    def pull_failed(self, sid: str, exc: BaseException, *, imported: bool = False) -> str:
        """Record why a pull of `sid` failed; returns the message (as shown: status, `sync --wait` and doctor
        show it, which the log's scrubbing never sees, so the secrets this process knows are hidden here).
        `imported`: `sid` syncs through a store it was imported from (imported_elsewhere), and the way on is
        said as fits it."""
        msg = scrub_text(str(exc) or type(exc).__name__)
        fix = getattr(exc, "fix", None)
        if fix:  # (said in the message too, as an import's error says it: status and `sync --wait` show that)
            fix = way_on(fix, imported)
            msg = f"{msg}; {fix_said(fix)}"
        msg = way_on(msg, imported)
        if fix and no_relay_account(exc):  # (any other: doctor says the fix by its kind, doctor_fixes.pull_fix)
            self.pull_fixes[sid] = fix
        else:
            self.pull_fixes.pop(sid, None)
        self.pull_errors[sid] = msg
        self.pull_kinds[sid] = str(getattr(exc, "kind", "") or type(exc).__name__)
        if getattr(exc, "fork", False):
            self.pull_forks.add(sid)
        else:
            self.pull_forks.discard(sid)
        failure = getattr(exc, "failure", None) or ((exc, self.store.url) if isinstance(exc, StoreError) else None)
        if failure is not None:  # its class and URL, not every frame it passed (as a push's: syncstatus.py)
            self.pull_failures[sid] = (failure[0].with_traceback(None), failure[1])
        else:
            self.pull_failures.pop(sid, None)
        return msg

    def pull_ok(self, sid: str, *, began: float | None = None) -> None:
        """A pull of `sid` succeeded; `began`: when it began (time.monotonic()), recorded in `pulled`."""
        if began is not None:
            self.pulled[sid] = began
            if self.on_pulled is not None:
                self.on_pulled(sid)
        self.pull_errors.pop(sid, None)
        self.pull_kinds.pop(sid, None)
        self.pull_fixes.pop(sid, None)
        self.pull_forks.discard(sid)
        self.pull_failures.pop(sid, None)

    @property
    def credentials(self) -> StoreCredentials:
        """The credentials kept for the stores sessions were imported from (storecreds.py)."""
        if self._credentials is None:
            self._credentials = StoreCredentials(self.keys.folder)
        return self._credentials

    # ------------------------------------------------------------------ progress of long work
    def progress(self, task: str, sid: str, done: int, total: int) -> None:
        """A `progress` event (push, verify, import: operations done of total), at most ten a second per
        task and session, and always the last one; on the event loop's thread."""
        now = time.monotonic()
        key = (task, sid)
        if done < total and now - self._progress_at.get(key, 0.0) < 0.1:
            return
        self._progress_at[key] = now
        if done >= total:
            self._progress_at.pop(key, None)
        self.on_event({"type": "progress", "task": task, "session": sid, "done": min(done, total), "total": total})

    # ------------------------------------------------------------------ stores per session
    def open_store(self, url: str | None, *, missing_ok: bool = True) -> Store:
        """The store at `url` (this daemon's own store for None or its URL; a mirror's URLs joined by
        mirrorurls.SEPARATOR), opened once. A folder store is never made here (only the daemon's own
        store, at its first use: daemon/server.py); one not there is opened all the same, unreachable
        until it is back (a share not mounted), or with missing_ok=False refused (StoreError)."""
        if not url or same_stores(url, self.store.url):  # credentials (an invite, a password) are no other store
            return self.store
        key = stores_identity(url)
        st = self.stores.get(key)
        given = credentials_of(url)
        if st is not None and any(given) and given != self._opened_with.get(key):
            # credentials other than those it was opened with (none, or wrong ones: an import tried again
            # with the invite or password it lacked): opened again with them, not refused until a restart
            del self.stores[key]
            self._close_later(st)
            st = None
        if st is None:
            # a session's store is recorded without its credentials: those an import was given come back here
            url = self.credentials.fill(url)
            st = self.stores[key] = open_stores(
                url,
                self.db.outbox,
                timeout=self.timeout,
                create=False,
                missing_ok=missing_ok,
                head_key=self.own_head_key,
            )
            self._opened_with[key] = credentials_of(url)
        return st

    async def own_head_key(self, pk: bytes) -> SigningKey | None:
        """The key of this device's head `pk`, for a mirror's drain (mirror.MirrorStore head_key)."""
        return await self.keys.own_head_key(pk, self.db.session_ids)

    def _close_later(self, st: Store) -> None:
        """Close a store replaced in `stores` (a call under way on it may fail, and is tried again)."""
        try:
            task = asyncio.get_running_loop().create_task(st.close())
        except RuntimeError:  # no event loop (a tool's synchronous use): nothing opened a session on it
            return
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def store_status(self) -> list[dict]:
        """This daemon's store(s): per store, whether it answered, what waits in its outbox, its last
        error. One store has no outbox (its pushes wait in the sync state): whether it answered is what its
        pushes met (Syncer.store_status adds it). What a store's own state says (Store.failing_now: a folder
        store's folder away) is: unreachable."""
        if isinstance(self.store, MirrorStore):
            rows, stores = await self.store.status(), self.store.stores
        else:
            rows, stores = [{"url": self.store.url, "reachable": None, "pending": 0, "last_error": None}], [self.store]
            rows[0] |= self.store.write_stats() | self.store.service_status()
        for row, st in zip(rows, stores, strict=True):
            if row["reachable"] is False:
                continue  # (its last use failed: said so already)
            try:
                failing = await bounded(st.failing_now(), FAILING_LOOK)
            except TimeoutError:  # (a hung share: a look that does not end says nothing)
                continue
            if failing is not None:
                row |= {"reachable": False, "last_error": str(failing), "failure": failure_kind(failing)}
        return rows

    async def store_for(self, sid: str) -> Store:
        """The store session `sid` syncs through: the one it was imported from, else this daemon's."""
        return self.store_of(await self.db.remote(sid))

    def store_of(self, remote: dict | None) -> Store:
        """store_for of a session whose remotes row (None: none) was just read."""
        return self.open_store(remote["store_url"] if remote else None)

    def store_urls(self) -> set[str]:
        return {self.store.url, *self.stores}

    async def close_stores(self) -> None:
        await self.store.close()
        for st in self.stores.values():
            await st.close()
        await asyncio.gather(*self._closing, return_exceptions=True)

    # ------------------------------------------------------------------ locks
    def lock(self, sid: str) -> AbstractAsyncContextManager[None]:
        return self.locks(sid)

    def rekey_lock(self, sid: str) -> AbstractAsyncContextManager[None]:
        return self.rekey_locks(sid)

    # ------------------------------------------------------------------ objects a slot will name
    @contextlib.asynccontextmanager
    async def put_to_name(self, store: Store, sid: str, ct: bytes, slot_pk: bytes, rev: int) -> AsyncIterator[bytes]:
        """Put `ct`, an object the caller then names in the slot `slot_pk` (0xed | announce key) at revision
        `rev` (a members object, a rekey's notice), and yield its hash. It is noted before the put as a gc
        candidate of `sid` and as this device's object of that slot (Released.put_for_slot), and the caller
        calls named() once the slot's write names it: killed in between, or the slot written by another
        device first, what was put stays a candidate, which gc frees once nothing names it (a retry seals the
        object anew, under a new salt: without the note it stayed in the store for good). Named, it is no
        candidate until the slot is seen written over (named() of a later revision: a device joined, a
        restore, a rekey's notice), when it is let go. Meanwhile it is in `naming`, which gc leaves alone
        whatever its grace (sync/gc.py), or a gc run between the put and the slot's write would free what
        the slot is about to name."""
        h = digest(ct)
        url: str | None = getattr(store, "url", None)
        self.naming.add(h)
        try:
            if url is not None:
                await self.db.released.put_for_slot(url, sid, h, slot_pk, rev)
            await bounded(store.put(ct), self.timeout)  # (its answer is `h`: a store checks it)
            yield h
        finally:
            self.naming.discard(h)

    async def named(self, store: Store, entry: RegistryEntry, *, written: bool = True) -> None:
        """The members slot `entry` (0xed | announce key), as just written here or read from `store`, names its
        object: that object is no gc candidate, and the objects this device put for the slot at its revision
        or before that it does not name are let go (gc frees them after its grace: a device that read the
        slot before it was written over has that long to fetch what it named, and one that finds it gone
        reads the slot again: Members.read_slot). Only once the slot is written (or read): a kill before
        leaves the old object named and whole. `written`: this device wrote `entry` (or read it just now);
        False for a read that may be a moment old (Released.slot_named)."""
        url: str | None = getattr(store, "url", None)
        if url is not None and len(entry.data) >= 33:
            await self.db.released.slot_named(url, entry.pk, entry.revision, bytes(entry.data[1:33]), written=written)
