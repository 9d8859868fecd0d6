"""The sync worker: pushes each session's new operations to the store, durably and in order.

Order of a push: data objects (pages, nodes), then the manifest, then the head. The manifest's
plaintext and revision are recorded in SQLite (`sync_state.pending`) before the manifest is uploaded,
and the pushed mark moves only after the store holds the new head. A crash at any point resumes from
the recorded state: the same objects and the same manifest are written again (they are deterministic),
so a retried push is idempotent and never reuses a key for different plaintext.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Callable, Iterator

from nacl.signing import SigningKey

from ..stores.cid import CIDV1_RAW_BLAKE3
from ..storage.database import Database
from ..storage.model import LogRun, Op, now
from ..stores.registry import RegistryEntry, RegistryError
from ..stores import StaleHead, Store, StoreError, check_object

from . import dagcbor
from .crypto import DecryptError, EncryptedCID, manifest_key, open_sealed, open_unpadded
from .keys import KeyStore
from .share import ImportError_, SharingMixin
from .log import FANOUT, Entry, LogError, LogReader, LogWriter, Written, op_to_cbor, parse_manifest

log = logging.getLogger("sessiond.sync")
HEAD_DATA_PREFIX = b"\x1e"


class SyncError(Exception):
    pass


def head_data(manifest_hash: bytes) -> bytes:
    return HEAD_DATA_PREFIX + manifest_hash


def manifest_hash_of(entry: RegistryEntry) -> bytes:
    if len(entry.data) != 33 or entry.data[:1] != HEAD_DATA_PREFIX:
        raise RegistryError("head data is not 0x1e followed by a 32-byte BLAKE3 hash")
    return entry.data[1:]


def _contiguous(sid: str, a: int, b: int, run: LogRun) -> LogRun:
    """`run`, if it holds exactly the operations a..b of this device's log of `sid`."""
    have = run.seqs
    if have != list(range(a, b + 1)):
        raise SyncError(f"this device's log of {sid} is not contiguous between {a} and {b} (have {len(have)} "
                        f"operations, first {have[:3]}, last {have[-3:]}); not pushing a torn log")
    return run


def _levels_to_cbor(levels: list[list[Entry]]) -> list:
    return [[e.to_cbor() for e in lv] for lv in levels]


def _levels_from_cbor(data: bytes | None) -> list[list[Entry]]:
    if not data:
        return [[]]
    return [[Entry.from_cbor(e) for e in lv] for lv in dagcbor.decode(data)]


FULL_PULL_EVERY = 30.0  # seconds: every shared session is checked this often even if no head seems to change


class Syncer(SharingMixin):
    def __init__(self, db: Database, store: Store, key_dir: str, *, interval: float = 2.0,
                 push_delay: float = 0.05, timeout: float = 30.0, poll_interval: float = 0.25,
                 on_event: Callable[[dict], None] | None = None):
        self.db = db
        self.store = store
        self.keys = KeyStore(key_dir)
        self.interval = interval
        self.push_delay = push_delay
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.on_event = on_event or (lambda ev: None)
        self._stores: dict[str, Store] = {}
        self._pull_errors: dict[str, str] = {}
        self._head_versions: dict[str, dict[bytes, object]] = {}  # per store URL: what each head was
        self._blind = False  # a store that cannot tell which heads changed
        self._last_retry = 0.0
        self._last_full_pull = 0.0
        self._pull_now = True
        self._dirty: set[str] = set()
        self._retry_at: dict[str, float] = {}
        self._chains: dict[str, tuple] = {}  # per session: (its identity, Chain) of the last checkpoint
        self._attempts: dict[str, int] = {}
        self._repair: set[str] = set()  # sessions whose log verify found incomplete in the store
        self._errors: dict[str, str] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._wake = asyncio.Event()
        self._progress = asyncio.Condition()
        self._task: asyncio.Task | None = None
        self._stopping = False

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        self._dirty.update(await self.db.sessions_needing_push())  # resume after a restart
        self._task = asyncio.create_task(self._run(), name="sessiond-sync")
        if self._dirty:
            self._wake.set()

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        await self.store.close()
        for st in self._stores.values():
            await st.close()

    def notify(self, sid: str) -> None:
        self._dirty.add(sid)
        self._wake.set()

    def forget(self, sid: str) -> None:
        """A session was deleted here: stop pushing it and destroy its key (crypto-shredding)."""
        self._dirty.discard(sid)
        self._retry_at.pop(sid, None)
        self._errors.pop(sid, None)
        self._chains.pop(sid, None)
        self.keys.delete_session_key(sid)

    # ---------------------------------------------------------------- the worker
    async def _run(self) -> None:
        while not self._stopping:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self._next_wait())
            except asyncio.TimeoutError:
                pass
            woke = self._wake.is_set()
            self._wake.clear()
            if self._stopping:
                return
            if woke and self.push_delay:
                await asyncio.sleep(self.push_delay)  # let a burst of appends land in one push
            try:
                await self._push_due()
                await self._maybe_pull()
            except asyncio.CancelledError:
                raise
            except Exception:  # never let one bad round stop the worker
                log.exception("sync round failed")

    def _next_wait(self) -> float:
        wait = min(self.interval, self.poll_interval)
        if self._retry_at:
            wait = min(wait, min(self._retry_at.values()) - time.monotonic())
        return max(0.01, wait)

    async def _maybe_pull(self) -> None:
        """Pull the shared sessions whose heads (a device's log, or the members slot) changed in the
        store since the last look; all of them when a store cannot say which changed, when asked to
        (`sessiond sync`), and now and then in any case. So a follower of many sessions does work in
        proportion to what changed, not to how many sessions it follows."""
        if not await self.db.has_shared_sessions():
            return
        full = self._pull_now
        safety_net = self.interval if self._blind else max(self.interval, FULL_PULL_EVERY)
        if time.monotonic() - self._last_full_pull >= safety_net:
            full = True
        changed: set[bytes] = set()
        self._blind = False
        for url in {self.store.url, *[u for u in self._stores]}:
            try:
                versions = await self._open_store(url).head_versions()
            except (StoreError, OSError):
                versions = None
            before = self._head_versions.get(url)
            if versions is None or before is None:
                self._blind = self._blind or versions is None
                full = True
            else:
                changed.update(pk for pk, v in versions.items() if before.get(pk) != v)
            if versions is not None:
                self._head_versions[url] = versions
        # sessions whose last pull failed are tried again every `interval`: the change that made them
        # due has been seen already and would not make them due again
        retry: set[str] = set()
        if self._pull_errors and time.monotonic() - self._last_retry >= self.interval:
            retry = set(self._pull_errors)
            self._last_retry = time.monotonic()
        if full:
            self._pull_now = False
            self._last_full_pull = time.monotonic()
            await self.pull_all()
        elif changed or retry:
            await self.pull_all(sorted(retry.union(await self.db.sessions_with_heads(sorted(changed)))))

    async def _push_due(self) -> None:
        t = time.monotonic()
        due = sorted(s for s in self._dirty if self._retry_at.get(s, 0) <= t)
        for sid in due:
            if self._stopping:
                return
            self._dirty.discard(sid)
            try:
                await self.push(sid)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the store failed or lied: keep the work queued and back off
                self._dirty.add(sid)
                n = self._attempts.get(sid, 0) + 1
                self._attempts[sid] = n
                delay = min(30.0, 0.2 * (2 ** (n - 1)))
                self._retry_at[sid] = time.monotonic() + delay
                msg = _describe(exc)
                self._errors[sid] = msg
                try:
                    await self.db.save_sync_state(sid, last_error=msg)
                except Exception:
                    pass
                log.warning("push failed; retrying in %.1fs", delay, extra={"session": sid, "error": msg})
                self.on_event({"type": "sync.error", "session": sid, "error": msg})
            else:
                self._attempts.pop(sid, None)
                self._retry_at.pop(sid, None)
                self._errors.pop(sid, None)
            async with self._progress:
                self._progress.notify_all()

    # ---------------------------------------------------------------- one push
    def _lock(self, sid: str) -> asyncio.Lock:
        lock = self._locks.get(sid)
        if lock is None:
            lock = self._locks[sid] = asyncio.Lock()
        return lock

    async def push(self, sid: str, *, compact: bool = True, force: bool = False) -> dict:
        """Push this device's new operations of `sid`, then (as a revision of its own) fold full levels
        of the log upward. Returns what each step wrote."""
        async with self._lock(sid):
            try:
                await self.db.get_session(sid)
            except Exception:
                return {"session": sid, "skipped": "deleted"}
            ctx = _PushContext(self, sid, await self._store_for(sid))
            state = await self.db.sync_state(sid)
            if state["pending"]:
                await self._publish(ctx, state["pending"])
                state = await self.db.sync_state(sid)
            out = {"session": sid, "revision": state["head_rev"], "objects": 0, "bytes": 0,
                   "compaction_objects": 0, "compaction_bytes": 0}
            last = await self.db.last_seq(sid)
            levels = _levels_from_cbor(state["tree"])
            if last > state["pushed_seq"]:
                async def load(a: int, b: int) -> LogRun:
                    return _contiguous(sid, a, b, await self.db.log_run(sid, self.db.device_id, a - 1, b))

                @contextlib.contextmanager
                def open_loader() -> Iterator[Callable[[int, int], LogRun]]:
                    with self.db.run_reader() as reader:  # a worker thread's own connection
                        yield lambda a, b: _contiguous(sid, a, b, reader.log_run(sid, self.db.device_id, a - 1, b))

                entries, lamport = await ctx.writer.write_run(load, open_loader, state["pushed_seq"] + 1, last)
                levels[0].extend(entries)
                out["revision"] = await self._commit_revision(ctx, state, levels, last, lamport)
                out["objects"], out["bytes"] = ctx.writer.written.objects, ctx.writer.written.bytes
                state = await self.db.sync_state(sid)
            if force and out["revision"] == state["head_rev"]:  # a new manifest even without new operations
                out["revision"] = await self._commit_revision(ctx, state, levels, state["pushed_seq"], None)
                state = await self.db.sync_state(sid)
            if compact and any(len(lv) >= FANOUT for lv in levels):
                ctx.writer.written = Written()

                async def load_records(first: int, upto: int) -> LogRun:
                    return await self.db.log_run(sid, self.db.device_id, first - 1, upto)

                levels = await ctx.writer.compact(levels, load_records)
                out["revision"] = await self._commit_revision(ctx, state, levels, state["pushed_seq"], None)
                out["compaction_objects"] = ctx.writer.written.objects
                out["compaction_bytes"] = ctx.writer.written.bytes
            remote = await self.db.remote(sid)
            if remote is not None and not remote["announced"] and out["revision"] \
                    and self.keys.write_secret(sid) is not None:
                await self.ensure_member(sid)  # so that the other devices find this device's log
            return out

    async def _commit_revision(self, ctx: "_PushContext", state: dict, levels: list[list[Entry]], last: int,
                               lamport: int | None) -> int:
        current = await asyncio.wait_for(ctx.store.get_head(ctx.head_pk), self.timeout)
        rev = max(state["head_rev"], current.revision if current else 0) + 1
        prev = CIDV1_RAW_BLAKE3 + manifest_hash_of(current) if current else None
        if lamport is None:
            lamport = (await self.db.get_lamport(ctx.sid))
        plain = ctx.writer.manifest(rev, ctx.head_pk, last, lamport, levels, prev)
        pending = dagcbor.encode({"m": plain, "r": rev, "s": last, "t": _levels_to_cbor(levels)})
        await self.db.save_sync_state(ctx.sid, pending=pending)  # fixed before anything of rev is uploaded
        await self._publish(ctx, pending)
        return rev

    async def _publish(self, ctx: "_PushContext", pending: bytes) -> None:
        sid, writer, head_key, head_pk = ctx.sid, ctx.writer, ctx.head_key, ctx.head_pk
        p = dagcbor.decode(pending)
        rev, plain = p["r"], p["m"]
        ct, ref = writer.seal_manifest(plain, head_pk, rev)
        await writer.put([ct])
        entry = RegistryEntry.create(head_key, rev, head_data(ref.hash))
        try:
            await asyncio.wait_for(ctx.store.set_head(entry), self.timeout)
        except StaleHead:
            current = await asyncio.wait_for(ctx.store.get_head(head_pk), self.timeout)
            if current is None or current.data != entry.data or current.revision != rev:
                raise SyncError(f"the store holds a newer head (revision {current.revision if current else '?'}) "
                                f"for this device's log of {sid} that this device did not write") from None
        await self.db.save_sync_state(sid, pushed_seq=p["s"], head_rev=rev, tree=dagcbor.encode(p["t"]),
                                      pending=None, last_error=None, last_push=now())
        log.info("pushed", extra={"session": sid, "rev": rev, "objects": writer.written.objects,
                                  "bytes": writer.written.bytes})
        self.on_event({"type": "sync.pushed", "session": sid, "revision": rev, "seq": p["s"]})

    async def snapshot_id(self, sid: str) -> dict | None:
        """Where this device's latest snapshot of `sid` is: its head revision and manifest object ids."""
        state = await self.db.sync_state(sid)
        if not state["head_rev"]:
            return None
        head = await asyncio.wait_for((await self._store_for(sid)).get_head(self.keys.head_pk(sid)), self.timeout)
        if head is None:
            return None
        h = manifest_hash_of(head)
        from ..stores.cid import _b32encode

        return {"revision": head.revision, "head_key": head.pk.hex(),
                "manifest_ipfs_cid": "b" + _b32encode(CIDV1_RAW_BLAKE3 + h), "manifest_blake3": h.hex()}

    # ---------------------------------------------------------------- API helpers
    async def status(self, sid: str | None = None) -> dict:
        states = await self.db.all_sync_states()
        if sid is not None:
            states = {sid: states[sid]} if sid in states else {}
        for s, st in states.items():
            if s in self._errors:
                st["last_error"] = self._errors[s]
            if s in self._retry_at:
                st["retry_in"] = round(max(0.0, self._retry_at[s] - time.monotonic()), 2)
            if s in self._pull_errors:
                st["pull_error"] = self._pull_errors[s]
            st["state"] = "error" if st.get("last_error") and st["pending"] or st.get("pull_error") else (
                "pending" if st["pending"] else "synced")
        return states

    async def _store_lacks_log(self, sid: str) -> bool:
        """Whether the store lost what this device pushed of `sid`: its head, the manifest, or an object
        the manifest points to (or verify found one missing further down). Cheap: no object is read."""
        if sid in self._repair:
            return True
        state = await self.db.sync_state(sid)
        if not state["head_rev"] or state["pending"] or self.keys.session_key(sid) is None:
            return False
        store = await self._store_for(sid)
        try:
            head = await asyncio.wait_for(store.get_head(self.keys.head_pk(sid)), self.timeout)
            if head is None or head.revision < state["head_rev"]:
                return True
            hashes = [manifest_hash_of(head)] + [e.ref.hash for lv in _levels_from_cbor(state["tree"]) for e in lv]
            for h in hashes:
                if not await asyncio.wait_for(store.has(h), self.timeout):
                    return True
        except (StoreError, RegistryError, OSError, asyncio.TimeoutError):
            return False  # a store that does not answer is not one that lost data; the push reports it
        return False

    async def repair(self, sid: str) -> bool:
        """Push this device's whole log of `sid` again if the store lacks any of it. Returns whether it will."""
        async with self._lock(sid):
            if not await self.db.last_seq(sid) or not await self._store_lacks_log(sid):
                return False
            await self.db.save_sync_state(sid, pushed_seq=0, tree=None, pending=None)
            self._repair.discard(sid)
        log.warning("the store lacks objects of this device's log; pushing all of it again",
                    extra={"session": sid, "event": "repair"})
        self._dirty.add(sid)
        return True

    async def sync_now(self, sid: str | None, *, wait: bool, timeout: float) -> dict:
        targets = [sid] if sid else await self.db.session_ids()
        for s in targets:
            await self.repair(s)
        marks = {s: await self.db.last_seq(s) for s in targets}
        for s in targets:
            self._dirty.add(s)
            self._retry_at.pop(s, None)  # "now" means now, not after the backoff
        self._wake.set()
        if wait:
            deadline = time.monotonic() + timeout

            async def done() -> bool:
                states = await self.db.all_sync_states()
                return all(states.get(s, {}).get("pushed_seq", 0) >= m for s, m in marks.items() if s in states)

            while not await done():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                async with self._progress:
                    try:
                        await asyncio.wait_for(self._progress.wait(), timeout=min(left, 0.5))
                    except asyncio.TimeoutError:
                        pass
            for s in targets:  # and bring in what the other devices wrote, now
                if await self.db.remote(s) is not None:
                    try:
                        await self.pull(s)
                        self._pull_errors.pop(s, None)
                    except Exception as exc:
                        self._pull_errors[s] = str(exc) or type(exc).__name__
        else:
            self._pull_now = True
        states = await self.status()
        result = {s: states[s] for s in targets if s in states}
        pushed = all(st["pushed_seq"] >= marks[s] for s, st in result.items())
        complete = pushed and not any(s in self._pull_errors for s in targets)
        return {"complete": complete, "pushed": pushed, "sessions": result}

    # ---------------------------------------------------------------- verify
    async def verify(self, sid: str | None = None) -> dict:
        targets = [sid] if sid else await self.db.session_ids()
        reports = [await self.verify_session(s) for s in targets]
        return {"ok": all(r["ok"] for r in reports), "sessions": reports}

    async def verify_session(self, sid: str) -> dict:
        report = await self._verify_own(sid)
        if report["problems"] and (report["revision"] is not None or report["problems"][0].startswith("head: missing")):
            self._repair.add(sid)  # what the store lost of this device's log, `sessiond sync` pushes again
            report["repair"] = "`sessiond sync` pushes this device's whole log of the session again"
        report["devices"] = 1 if report["revision"] else 0
        key = self.keys.session_keys(sid)
        remote = await self.db.remote(sid)
        if remote is None or key is None:
            return report
        store = await self._store_for(sid)
        my_pk = self.keys.head_pk(sid)
        try:  # a device left out of a rekey cannot open the others' new logs: say so, not "damaged"
            _, _, notice = await self.read_members(store, sid, key[0], bytes(remote["announce_pk"]))
            if notice is not None and notice.get("a") != bytes(remote["announce_pk"]) \
                    and not any(b.get("k") == my_pk for b in notice.get("b", [])):
                report["problems"].append("revoked: the session was rekeyed without this device; it keeps what it "
                                          "has, but can neither read nor check what is written from now on (ask "
                                          "for a new share code)")
                report["ok"] = False
                return report
        except ImportError_ as exc:
            report["problems"].append(f"members: {exc}")
        for peer in await self.db.peers(sid):
            pk = bytes(peer["head_pk"])
            if pk == my_pk:
                continue
            name = peer["device_id"] or pk.hex()[:16]
            try:
                man, ops = await self._fetch_log(store, sid, key, pk, peer["device_id"], min_rev=peer["rev"],
                                                 after_seq=0, as_ops=True)
            except Exception as exc:
                report["problems"].append(f"device {name}: {_describe(exc)}")
                continue
            if man is None:
                if peer["rev"]:
                    report["problems"].append(f"device {name}: head missing from the store")
                continue
            report["devices"] += 1
            upto = min(man.last_seq, peer["applied_seq"])
            local = await self.db.log_ops(sid, man.device, 0, upto)
            remote_ops = [o for o in ops if o.seq <= upto]
            if [dagcbor.encode(op_to_cbor(o)) for o in local] != [dagcbor.encode(op_to_cbor(o)) for o in remote_ops]:
                report["problems"].append(f"device {name}: the store's log differs from what this device applied")
            report["operations"] += len(ops)
        report["ok"] = not report["problems"]
        return report

    async def _verify_own(self, sid: str) -> dict:
        """This device's log of `sid` in the store, checked against the local database. The report is
        about one head: it names the revision and the manifest it read (`manifest`, its BLAKE3 hash),
        and every object reachable from that manifest is read and checked (hash, tags, plaintext id,
        decoding) even after another one failed; each one that is damaged or missing is listed in
        `damaged` as {"object": hash, "problem": ...} and named in `problems`."""
        problems: list[str] = []
        damaged: list[dict] = []
        report = {"session": sid, "ok": False, "revision": None, "manifest": None, "objects": 0, "operations": 0,
                  "unpushed": 0, "problems": problems, "damaged": damaged}
        state = await self.db.sync_state(sid)
        last = await self.db.last_seq(sid)
        report["unpushed"] = max(0, last - state["pushed_seq"])
        if state["head_rev"] == 0:
            if last:
                problems.append("not pushed yet: run `sessiond sync --wait` and verify again")
            else:
                report["ok"] = True
            return report
        key = self.keys.session_key(sid)
        if key is None:
            problems.append("the session key is missing from this device's key folder")
            return report
        head_pk = self.keys.head_pk(sid)
        store = await self._store_for(sid)
        try:
            head = await asyncio.wait_for(store.get_head(head_pk), self.timeout)
        except (RegistryError, StoreError, asyncio.TimeoutError, OSError) as exc:
            problems.append(f"head: {_describe(exc)}")
            return report
        if head is None:
            problems.append("head: missing from the store (nothing published under this device's key)")
            return report
        report["revision"] = head.revision
        if head.revision < state["head_rev"]:
            problems.append(f"head: rolled back to revision {head.revision}; this device published "
                            f"revision {state['head_rev']}")
            return report
        try:
            mhash = manifest_hash_of(head)
        except RegistryError as exc:
            problems.append(f"head (revision {head.revision}): {_describe(exc)}")
            return report
        report["manifest"] = mhash.hex()
        try:
            ct = await asyncio.wait_for(store.get(mhash), self.timeout)
            report["objects"] += 1
            plain = _open_manifest(ct, mhash, self.keys.session_keys(sid), head_pk, head.revision)
            manifest = parse_manifest(plain, sid=sid, head_pk=head_pk, rev=head.revision)
        except (StoreError, DecryptError, LogError, asyncio.TimeoutError, OSError) as exc:
            damaged.append({"object": mhash.hex(), "problem": _describe(exc)})
            problems.append(f"manifest {mhash.hex()} (revision {head.revision}): {_describe(exc)}")
            return report
        if manifest.device != self.db.device_id:
            problems.append(f"manifest names device {manifest.device}, not this device")
            return report
        reader = LogReader(sid, self.db.device_id, store, self.timeout)
        remote, bad = await reader.audit(manifest.entries())
        for h, e, exc in bad:
            damaged.append({"object": h.hex(), "problem": _describe(exc)})
            problems.append(f"object {h.hex()} (seqs {e.first}..{e.last}): {_describe(exc)}")
        report["objects"] += reader.fetched
        report["operations"] = len(remote)
        local = await self.db.log_ops(sid, self.db.device_id, 0, manifest.last_seq)
        if not problems:
            local_enc = [dagcbor.encode(op_to_cbor(o)) for o in local]
            remote_enc = [dagcbor.encode(op_to_cbor(o)) for o in remote]
            if len(local_enc) != len(remote_enc):
                problems.append(f"the store holds {len(remote_enc)} operations up to seq {manifest.last_seq}; "
                                f"this device has {len(local_enc)}")
            else:
                bad_seqs = [o.seq for o, a, b in zip(local, local_enc, remote_enc) if a != b]
                if bad_seqs:
                    problems.append(f"{len(bad_seqs)} operations differ from the local database "
                                    f"(first at seq {bad_seqs[0]})")
        report["ok"] = not problems
        return report


class _PushContext:
    """What one push of one session needs: its keys and a writer that counts what it wrote."""

    def __init__(self, syncer: Syncer, sid: str, store: Store):
        self.sid = sid
        self.store = store
        key = syncer.keys.session_key(sid, create=True)
        self.head_key: SigningKey = syncer.keys.head_key(sid)
        self.head_pk = syncer.keys.head_pk(sid)
        self.writer = LogWriter(sid, syncer.db.device_id, key, store, syncer.timeout)


def _open_manifest(ct: bytes, mhash: bytes, session_key: bytes | list[bytes], head_pk: bytes, rev: int) -> bytes:
    """A head manifest has no encrypted CID of its own: its key comes from the revision and its plaintext
    is checked by parsing. Returns the plaintext."""

    check_object(mhash, ct)  # the store should have checked; a lying one may not have
    keys = [session_key] if isinstance(session_key, bytes) else session_key
    for i, key in enumerate(keys):  # the current key, then those from before a rekey
        try:
            return open_unpadded(ct, manifest_key(key, head_pk, rev))
        except DecryptError:
            if i == len(keys) - 1:
                raise
    raise DecryptError("no key to open the manifest with")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "the store did not answer in time"
    return str(exc) or type(exc).__name__


__all__ = ["Syncer", "SyncError", "EncryptedCID", "open_sealed"]
