"""Sharing a session between devices: members, share codes, import, and following other devices' logs.

Who writes a session is recorded in its *members* slot: an S5 registry entry signed by the session's
announce key (derived from the write secret, so every holder of a read-write code can add itself),
whose data is `0x1e | BLAKE3(members object) | salt (14)`. The members object, encrypted under
`members_key(session key, salt)`, lists every writer's head public key and device id. A device follows
exactly the heads listed there: a head signed by any other key is never read.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import time
from itertools import chain
from operator import itemgetter
from typing import Any

from nacl.public import SealedBox
from nacl.signing import SigningKey, VerifyKey

from ..storage.model import RemoteLog
from ..storage.errors import Invalid
from ..stores.registry import RegistryEntry, RegistryError
from ..stores import StaleHead, Store, StoreError, check_object, open_store

from ..daemon import validate
from . import dagcbor
from .checkpoint import Chain, ProofError, check_proof, check_proofs, extend, prepare_rows, proof_of
from .crypto import CTX_ANNOUNCE, DecryptError, derive, encrypt, members_key, open_unpadded
from .log import LogError, LogReader, Manifest, parse_manifest
from .sharecode import ShareCode, ShareCodeError, decode as decode_code

log = logging.getLogger("sessiond.sync")
T_MEMBERS = "sessiond/members"
SALT_LEN = 14


_CHECKS = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="sessiond-check")
_SLOW_CHECK = float(os.environ.get("SESSIOND_FAULT_SLOW_PROOF_CHECK") or 0)  # a fault hook for tests (seconds)


class ImportError_(Exception):
    """An import or pull that cannot be completed; `kind` names the problem."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def _crash_point(name: str) -> None:
    """A fault hook for the crash tests: SESSIOND_CRASH_AT=name makes the daemon die here at once, as
    under kill -9 (no clean-up, no flush)."""
    if os.environ.get("SESSIOND_CRASH_AT") == name:
        os._exit(137)


def announce_key(write_secret: bytes) -> SigningKey:
    return SigningKey(derive(CTX_ANNOUNCE, write_secret))


def _seal_small(plain: bytes, key: bytes) -> bytes:
    return encrypt(plain, key, pad=False)[0]


class SharingMixin:
    """Methods of Syncer that deal with other devices (see engine.Syncer)."""

    # ------------------------------------------------------------------ stores per session
    def _open_store(self, url: str | None, *, create: bool = True) -> Store:
        if not url or url == self.store.url:
            return self.store
        st = self._stores.get(url)
        if st is None:
            st = self._stores[url] = open_store(url, create=create)
        return st

    async def _store_for(self, sid: str) -> Store:
        remote = await self.db.remote(sid)
        return self._open_store(remote["store_url"] if remote else None)

    # ------------------------------------------------------------------ members
    async def read_members(self, store: Store, sid: str, session_key: bytes, announce_pk: bytes,
                           min_rev: int = 0) -> tuple[int, list[dict], dict | None]:
        """(revision, members, rekey notice or None) of a session's members slot."""
        pk = b"\xed" + announce_pk
        try:
            entry = await asyncio.wait_for(store.get_head(pk), self.timeout)
        except RegistryError as exc:
            raise ImportError_("forged", f"the session's members entry is not validly signed: {exc}") from None
        if entry is None:
            raise ImportError_("missing", f"the store has no members entry for session {sid} "
                                          f"(wrong store, or the sharer has not pushed yet)")
        if entry.pk != pk:
            raise ImportError_("forged", "the members entry is signed by another key")
        if entry.revision < min_rev:
            raise ImportError_("replayed", f"the members entry was rolled back to revision {entry.revision} "
                                           f"(this device has seen {min_rev})")
        if len(entry.data) != 1 + 32 + SALT_LEN or entry.data[0] != 0x1E:
            raise ImportError_("malformed", "the members entry's data is not 0x1e | hash | salt")
        h, salt = entry.data[1:33], entry.data[33:]
        try:
            ct = await asyncio.wait_for(store.get(h), self.timeout)
            check_object(h, ct)
            m = dagcbor.decode(open_unpadded(ct, members_key(session_key, salt)))
        except (StoreError, DecryptError, dagcbor.DagCborError) as exc:
            raise ImportError_("damaged", f"the members list of {sid} cannot be read: {exc}") from None
        if not isinstance(m, dict) or m.get("ty") != T_MEMBERS or m.get("s") != sid:
            raise ImportError_("damaged", "the members object does not belong to this session (swapped objects)")
        members = []
        for item in m.get("m", []):
            if isinstance(item, dict) and isinstance(item.get("k"), bytes) and len(item["k"]) == 33:
                members.append({"head_pk": item["k"], "device_id": str(item.get("d"))})
        notice = m.get("rekey")
        return entry.revision, members, notice if isinstance(notice, dict) else None

    async def ensure_member(self, sid: str, *, extra: list[dict] = ()) -> int:
        """Make sure this device (and every writer it knows of) is in the members list. Returns the
        members revision. Needs the write secret."""
        write_secret = self.keys.write_secret(sid)
        session_key = self.keys.session_key(sid)
        if write_secret is None or session_key is None:
            raise ImportError_("read_only", f"this device cannot add writers to {sid} (no write secret)")
        ak = announce_key(write_secret)
        store = await self._store_for(sid)
        me = {"head_pk": self.keys.head_pk(sid), "device_id": self.db.device_id}
        known = [me, *extra, *[{"head_pk": p["head_pk"], "device_id": p["device_id"]} for p in await self.db.peers(sid)]]
        for _attempt in range(5):
            try:
                rev, members, _ = await self.read_members(store, sid, session_key, bytes(ak.verify_key))
            except ImportError_ as exc:
                if exc.kind != "missing":
                    raise
                rev, members = 0, []
            have = {m["head_pk"] for m in members}
            missing = [k for k in known if k["head_pk"] not in have]
            if not missing:
                return rev
            merged = sorted({m["head_pk"]: m for m in members + missing}.values(), key=lambda m: m["head_pk"])
            plain = dagcbor.encode({"m": [{"d": m["device_id"], "k": m["head_pk"]} for m in merged], "s": sid,
                                    "v": 1, "ty": T_MEMBERS})
            salt = os.urandom(SALT_LEN)
            ct = _seal_small(plain, members_key(session_key, salt))
            h = await asyncio.wait_for(store.put(ct), self.timeout)
            entry = RegistryEntry.create(ak, rev + 1, b"\x1e" + h + salt)
            try:
                await asyncio.wait_for(store.set_head(entry), self.timeout)
            except StaleHead:
                continue  # another writer announced at the same time: read again and merge
            await self.db.set_remote(sid, members_rev=rev + 1, announced=1)
            return rev + 1
        raise ImportError_("busy", "could not update the members list (it kept changing); will retry")

    # ------------------------------------------------------------------ share
    async def share(self, sid: str, *, write: bool, passphrase: str | None, expires_in: float | None) -> dict:
        session = await self.db.get_session(sid)
        if session["access"] == "read" and write:
            raise ImportError_("read_only", f"session {sid} was imported read-only here; it can only be "
                                            f"shared read-only from this device")
        key = self.keys.session_key(sid, create=True)
        res = await self.sync_now(sid, wait=True, timeout=self.timeout)
        if not res["pushed"]:  # everything up to now is in the store (later changes follow as usual)
            err = res["sessions"].get(sid, {}).get("last_error") or "the store did not take the snapshot in time"
            raise ImportError_("store", f"cannot share {sid} before it is pushed: {err}")
        remote = await self.db.remote(sid)
        if remote is None:  # first share of a session this device owns
            ws = self.keys.write_secret(sid, create=True)
            await self.db.add_remote(sid, None, bytes(announce_key(ws).verify_key))
            remote = await self.db.remote(sid)
        write_secret = self.keys.write_secret(sid)
        if write_secret is not None:
            await self.ensure_member(sid)
        store = await self._store_for(sid)
        expires_at = int(time.time() + expires_in) if expires_in else None
        code = ShareCode(sid, key, bytes(remote["announce_pk"]), store.url, write_secret if write else None, expires_at)
        return {"code": code.encode(passphrase), "session": sid, "capability": code.capability,
                "expires_at": expires_at, "store": store.url, "protected": passphrase is not None}

    # ------------------------------------------------------------------ import
    async def import_code(self, text: str, passphrase: str | None) -> dict:
        try:
            code = decode_code(text, passphrase)
        except ShareCodeError as exc:
            raise ImportError_(exc.kind, str(exc)) from None
        sid = code.session_id
        store = self.store
        try:
            if code.store_url and code.store_url != self.store.url:
                hinted = self._open_store(code.store_url, create=False)  # a code makes no folders
                if await self._has_members(hinted, code) and not await self._has_members(self.store, code):
                    store = hinted
        except StoreError:
            pass  # an unusable hint: look in this daemon's own store
        try:
            existing = await self.db.get_session(sid)
        except Exception:
            existing = None
        if existing is not None and existing["access"] == "owner" and await self.db.remote(sid) is not None \
                and self.keys.session_key(sid) == code.session_key:
            return {"session": sid, "new": 0, "capability": "owner", "already": True}
        if existing is not None and self.keys.session_key(sid) not in (None, code.session_key):
            raise ImportError_("conflict", f"a different session with id {sid} already exists on this device")
        rev, members, notice = await self.read_members(store, sid, code.session_key, code.announce_pk)
        if notice is not None:
            raise ImportError_("revoked", f"this share code was revoked: session {sid} was rekeyed after it was "
                                          f"made; ask for a new code")
        my_pk = self.keys.head_pk(sid)
        mine = next((m for m in members if m["head_pk"] == my_pk), None)
        if mine is not None:
            await self._adopt_device(sid, mine["device_id"])
        logs, peers = await self._fetch_logs(store, sid, code.session_key,
                                             [m for m in members if m["head_pk"] != my_pk], full=True)
        # This device's own log as the store holds it: after `rm`, or on a restored device key, the
        # messages it published come back, and its next sequence number follows the last it published.
        own = None
        if mine is not None:
            man, lg = await self._fetch_log(store, sid, code.session_key, my_pk, mine["device_id"], min_rev=0,
                                            after_seq=0)
            if man is not None and man.last_seq > (await self.db.last_seq(sid) if existing is not None else 0):
                from .engine import _levels_to_cbor

                logs[man.device] = lg
                own = {"pushed_seq": man.last_seq, "head_rev": man.rev,
                       "tree": dagcbor.encode(_levels_to_cbor(man.levels))}
        if not any(op.kind == "session.create" for lg in logs.values() for op in lg.ops) and existing is None:
            raise ImportError_("damaged", "the shared logs do not contain the session's creation")
        checkpoints = sorted((o for lg in logs.values() for o in lg.ops if o.kind == "checkpoint.add"),
                             key=lambda o: o.order)
        if existing is None and checkpoints:  # every checkpoint must hold for the history it came with
            pks = {m["head_pk"] for m in members}

            def check() -> None:
                # messages in the global order (Lamport clock, device, seq); each log is in that order
                parts = [lg.messages for lg in logs.values() if lg.messages]
                rows = parts[0] if len(parts) == 1 else sorted(chain.from_iterable(parts), key=itemgetter(4, 2, 3))
                msgs = prepare_rows(rows)
                if _SLOW_CHECK:  # tests: stands for the checks of a very long session on a slow device
                    time.sleep(_SLOW_CHECK)
                try:
                    check_proofs([o.body for o in checkpoints], msgs, pks)
                except ProofError as exc:
                    raise ImportError_("checkpoint", f"the session's checkpoints do not verify: {exc}") from None

            # checked in a thread of its own, before the writer is taken: appends meanwhile do not wait
            await asyncio.get_running_loop().run_in_executor(_CHECKS, check)
        created = []
        if self.keys.session_key(sid) is None:
            self.keys.set_session_key(sid, code.session_key)
            created.append("key")
        if code.write_secret is not None and self.keys.write_secret(sid) is None:
            self.keys.set_write_secret(sid, code.write_secret)
            created.append("write")
        access = None
        if existing is None:
            access = "write" if code.write_secret else "read"
        elif existing["access"] == "read" and code.write_secret:
            access = "write"
        try:
            new = await self.db.apply_remote(
                sid, logs, peers=peers, access=access,
                remote={"store_url": store.url if store is not self.store else None,
                        "announce_pk": code.announce_pk, "members_rev": rev},
                event="session.imported", own=own)
        except BaseException:
            if "key" in created:
                self.keys.delete_session_key(sid)
            raise
        log.info("imported", extra={"session": sid, "event": "import"})
        return {"session": sid, "new": new, "capability": code.capability, "already": existing is not None,
                "devices": len(logs)}

    async def _adopt_device(self, sid: str, device: str | None) -> None:
        """The members list names this device's head key under another device id: this home holds a
        device key restored with `key import`. A fresh home becomes that device again; one that has
        written as itself cannot (its head key would then carry two devices' logs)."""
        if device in (None, "None") or device == self.db.device_id:
            return
        try:
            await self.db.adopt_device_id(device)
        except Exception:
            raise ImportError_("conflict", f"this device's key published session {sid} as device {device}, but "
                                           f"this home is device {self.db.device_id} and has sessions of its own; "
                                           f"import the code into a fresh home that holds the restored key "
                                           f"(`sessiond key import --home NEW`)") from None
        log.info("took the device id of a restored device key", extra={"session": sid, "event": "import"})

    # ------------------------------------------------------------------ checkpoints
    async def _known_pks(self, sid: str) -> set[bytes]:
        return {self.keys.head_pk(sid)} | {bytes(p["head_pk"]) for p in await self.db.peers(sid)}

    async def make_checkpoint(self, sid: str) -> dict:
        """Sign a checkpoint of everything this device knows of `sid` now, and record it in the log."""
        session = await self.db.get_session(sid)
        if session["access"] == "read":
            raise ImportError_("read_only", f"session {sid} is read-only here; checkpoints are made by its writers")
        chain = await self._conversation_chain(sid)
        proof = proof_of(sid, self.db.device_id, await self.db.next_checkpoint_number(sid), chain,
                         round(time.time(), 3), self.keys.head_key(sid))
        return await self.db.add_checkpoint(sid, proof)

    async def _conversation_chain(self, sid: str) -> Chain:
        """The conversation hash of everything this device has of `sid`, carried on from the last one
        computed (kept in memory per session) over the new messages only, when they all sort after it;
        from the start otherwise (after a restart, or when a message from another device arrived late
        in the global order), off the event loop."""
        ident, cached = self._chains.get(sid, (None, None))
        fresh_ident, frontier, rows = await self.db.conversation_chain(sid, cached.frontier if cached else None)
        chain = None
        if cached is not None and ident == fresh_ident \
                and all(frontier.get(d, 0) >= s for d, s in cached.frontier.items()):
            chain = extend(cached, frontier, rows)
        if chain is None:
            if cached is not None:
                fresh_ident, frontier, rows = await self.db.conversation_chain(sid, None)
            chain = await asyncio.to_thread(extend, None, frontier, rows) if len(rows) > 256 \
                else extend(None, frontier, rows)
        self._chains[sid] = (fresh_ident, chain)
        return chain

    async def verify_proof(self, sid: str, proof: dict) -> dict:
        if proof.get("session") not in (None, sid):
            raise ImportError_("checkpoint", f"the proof is for session {proof.get('session')}, not {sid}")
        try:
            check_proof(proof, await self.db.conversation(sid), await self._known_pks(sid))
        except ProofError as exc:
            return {"ok": False, "session": sid, "problem": str(exc)}
        return {"ok": True, "session": sid, "number": proof["number"], "device": proof["device"],
                "messages": proof["messages"], "tokens": proof["tokens"]}

    # ------------------------------------------------------------------ rekey
    # A rekey is three steps: the new keys and the intent written here (a rekey-pending record, one atomic
    # file), the notice published in the old members slot, then the switch (keys rotated, the new slot
    # announced, this device's log pushed under the new key). The record goes first and goes last: a
    # crash at any step leaves it, and the next pull of the session (the first round after a start)
    # finishes the rekey from it. A device taking another's rekey keeps such a record while it switches.
    def _rekey_lock(self, sid: str) -> asyncio.Lock:
        locks = self.__dict__.setdefault("_rekey_locks", {})
        return locks.setdefault(sid, asyncio.Lock())

    async def rekey(self, sid: str, drop: list[str] = ()) -> dict:
        """Rotate the session key. Every writer device except those in `drop` gets the new key, sealed to
        its head key, through a notice in the old members slot; everyone else (read-only followers, old
        codes) can read nothing written from now on."""
        await self.db.get_session(sid)
        async with self._rekey_lock(sid):
            if self.keys.rekey_pending(sid) is not None:
                await self._resume_rekey(sid)  # an earlier one, cut short: finish it first
            old_key, old_write = self.keys.session_key(sid), self.keys.write_secret(sid)
            remote = await self.db.remote(sid)
            if old_key is None or old_write is None or remote is None:
                raise ImportError_("read_only", f"only a device that can write {sid} and has shared it can rekey it")
            store = await self._store_for(sid)
            my_pk = self.keys.head_pk(sid)
            new_key, new_write = os.urandom(32), os.urandom(32)
            new_announce = bytes(announce_key(new_write).verify_key)
            for _attempt in range(5):
                rev, members, notice = await self.read_members(store, sid, old_key, bytes(remote["announce_pk"]))
                if notice is not None:
                    self.keys.clear_rekey_pending(sid)  # ours never reached the store
                    raise ImportError_("conflict", f"session {sid} was rekeyed by another device at the same time; "
                                                   f"this device takes that key at its next pull (`sessiond sync`), "
                                                   f"then run rekey again if you still want to")
                others = {m["device_id"] for m in members if m["head_pk"] != my_pk}
                unknown = [d for d in drop if d not in others]
                if unknown:
                    self.keys.clear_rekey_pending(sid)
                    raise ImportError_("unknown_device", f"no writer device {', '.join(map(repr, unknown))} in session "
                                                         f"{sid} to drop (its other writers: "
                                                         f"{', '.join(sorted(others)) or 'none'})")
                keep = [m for m in members if m["head_pk"] != my_pk and m["device_id"] not in drop]
                record = {"k": new_key, "w": new_write, "a": new_announce, "m": [
                    {"d": m["device_id"], "k": m["head_pk"]} for m in keep], "own": True}
                self.keys.set_rekey_pending(sid, dagcbor.encode(record))
                _crash_point("rekey:pending")
                try:
                    await self._publish_rekey(store, sid, old_key, old_write, rev, members, record)
                except StaleHead:
                    continue  # the slot changed meanwhile (a writer joined, or another rekey): look again
                break
            else:
                raise ImportError_("busy", f"could not rekey {sid}: its members list kept changing; try again")
            _crash_point("rekey:published")
            await self._finish_rekey(sid, record)
        log.info("rekeyed", extra={"session": sid, "event": "rekey"})
        return {"session": sid, "kept": [m["device_id"] for m in keep],
                "dropped": [m["device_id"] for m in members if m["head_pk"] != my_pk and m not in keep]}

    async def _publish_rekey(self, store: Store, sid: str, old_key: bytes, old_write: bytes, rev: int,
                             members: list[dict], record: dict) -> None:
        """The notice, as revision rev+1 of the old members slot: a box for each kept writer, and one for
        this device too (so that even without its record it can take its own rekey, as the others do)."""
        secret = dagcbor.encode({"a": record["a"], "k": record["k"], "w": record["w"]})
        pks = [m["k"] for m in record["m"]] + [self.keys.head_pk(sid)]
        boxes = [{"k": pk, "x": SealedBox(VerifyKey(pk[1:]).to_curve25519_public_key()).encrypt(secret)} for pk in pks]
        notice = {"a": record["a"], "b": boxes, "t": int(time.time())}
        plain = dagcbor.encode({"m": [{"d": m["device_id"], "k": m["head_pk"]} for m in members], "rekey": notice,
                                "s": sid, "v": 1, "ty": T_MEMBERS})
        salt = os.urandom(SALT_LEN)
        h = await asyncio.wait_for(store.put(_seal_small(plain, members_key(old_key, salt))), self.timeout)
        await asyncio.wait_for(store.set_head(RegistryEntry.create(announce_key(old_write), rev + 1,
                                                                   b"\x1e" + h + salt)), self.timeout)

    async def _finish_rekey(self, sid: str, record: dict) -> None:
        await self._switch_key(sid, record["k"], record["w"], record["a"],
                               [{"device_id": m["d"], "head_pk": m["k"]} for m in record["m"]])
        self.keys.clear_rekey_pending(sid)

    async def _resume_rekey(self, sid: str) -> None:
        """Finish a rekey that a crash cut short (the caller holds the session's rekey lock)."""
        raw = self.keys.rekey_pending(sid)
        if raw is None:
            return
        record = dagcbor.decode(raw)
        remote = await self.db.remote(sid)
        old_key, old_write = self.keys.session_key(sid), self.keys.write_secret(sid)
        if record.get("own") and remote is not None and old_key != record["k"] \
                and bytes(remote["announce_pk"]) != record["a"]:
            # this device's own rekey: was its notice published?
            store = await self._store_for(sid)
            rev, members, notice = await self.read_members(store, sid, old_key, bytes(remote["announce_pk"]))
            if notice is not None and notice.get("a") != record["a"]:
                self.keys.clear_rekey_pending(sid)  # another device's rekey came first: the pull takes it
                log.warning("rekey abandoned: another device rekeyed first", extra={"session": sid})
                return
            if notice is None:
                await self._publish_rekey(store, sid, old_key, old_write, rev, members, record)
        await self._finish_rekey(sid, record)
        log.info("finished an interrupted rekey", extra={"session": sid, "event": "rekey"})

    async def _switch_key(self, sid: str, key: bytes, write: bytes | None, announce: bytes, members: list[dict]) -> None:
        self.keys.rotate(sid, key, write)
        _crash_point("rekey:rotated")
        await self.db.set_remote(sid, announce_pk=announce, members_rev=0, announced=0)
        _crash_point("rekey:switched")
        if write is not None:
            await self.ensure_member(sid, extra=members)
        _crash_point("rekey:announced")
        if await self.db.last_seq(sid):
            await self.push(sid, force=True)  # this device's log, now under the new key

    async def _take_rekey(self, sid: str, notice: dict) -> bool:
        """A rekey notice in the members slot: open this device's box, or learn that access ended."""
        my_pk = self.keys.head_pk(sid)
        box = next((b["x"] for b in notice.get("b", []) if b.get("k") == my_pk), None)
        remote = await self.db.remote(sid)
        if remote is not None and bytes(remote["announce_pk"]) == notice.get("a"):
            return False  # already switched
        if box is None:
            raise ImportError_("revoked", f"session {sid} was rekeyed without this device: it keeps what it has "
                                          f"but receives nothing new (ask for a new share code)")
        try:
            secret = dagcbor.decode(SealedBox(self.keys.head_key(sid).to_curve25519_private_key()).decrypt(box))
        except Exception:
            raise ImportError_("damaged", f"the rekey notice of {sid} cannot be opened by this device") from None
        record = {"k": secret["k"], "w": secret.get("w") if self.keys.write_secret(sid) else None, "a": secret["a"],
                  "m": [], "own": False}
        self.keys.set_rekey_pending(sid, dagcbor.encode(record))  # a crash while switching resumes it
        await self._finish_rekey(sid, record)
        log.info("took new session key", extra={"session": sid, "event": "rekey"})
        return True

    async def _has_members(self, store: Store, code: ShareCode) -> bool:
        try:
            return await asyncio.wait_for(store.get_head(b"\xed" + code.announce_pk), self.timeout) is not None
        except (StoreError, RegistryError, asyncio.TimeoutError, OSError):
            return False

    async def _fetch_logs(self, store: Store, sid: str, session_key: bytes, members: list[dict], *,
                          full: bool, known: dict[bytes, dict] | None = None) -> tuple[dict[str, RemoteLog], list[dict]]:
        """Fetch and check every member's log (everything, or only what is new). Raises ImportError_
        naming the first problem; nothing is applied by this function."""
        logs: dict[str, RemoteLog] = {}
        peers = []
        for m in members:
            pk = m["head_pk"]
            k = (known or {}).get(pk, {})
            man, lg = await self._fetch_log(store, sid, session_key, pk, m.get("device_id"),
                                            min_rev=k.get("rev", 0), after_seq=0 if full else k.get("applied_seq", 0))
            if man is None:
                continue
            have = logs.get(man.device)
            if have is None:
                logs[man.device] = lg
            else:  # two heads of one device (before and after a rekey): INSERT OR IGNORE drops repeats
                have.messages.extend(lg.messages)
                have.ops.extend(lg.ops)
                have.last_seq = max(have.last_seq, lg.last_seq)
            peers.append({"head_pk": pk, "device_id": man.device, "rev": man.rev, "applied_seq": man.last_seq,
                          "last_error": None})
        return logs, peers

    async def _fetch_log(self, store: Store, sid: str, session_key: bytes, pk: bytes, device: str | None, *,
                         min_rev: int, after_seq: int, as_ops: bool = False) -> tuple[Manifest | None, Any]:
        """One member's log: (manifest, RemoteLog), or with as_ops (manifest, [Op]) for comparing."""
        from .engine import _open_manifest, manifest_hash_of

        try:
            head = await asyncio.wait_for(store.get_head(pk), self.timeout)
        except RegistryError as exc:
            raise ImportError_("forged", f"the head of device {device or pk.hex()[:16]} is not validly signed: {exc}") from None
        if head is None:
            return None, None  # a member that has not pushed anything yet
        if head.revision < min_rev:
            raise ImportError_("replayed", f"the head of device {device or pk.hex()[:16]} went back to revision "
                                           f"{head.revision} (this device has seen {min_rev}): a replayed old head")
        try:
            mhash = manifest_hash_of(head)
            ct = await asyncio.wait_for(store.get(mhash), self.timeout)
            man = parse_manifest(_open_manifest(ct, mhash, session_key, pk, head.revision), sid=sid, head_pk=pk,
                                 rev=head.revision)
            if device is not None and device != "None" and man.device != device:
                raise LogError(f"the manifest names device {man.device}, but the members list says {device}")
            reader = LogReader(sid, man.device, store, self.timeout)
            ops = await (reader.ops if as_ops else reader.log)(man.entries(), after_seq)
            if not as_ops:  # what the API would refuse is refused from another device too
                validate.remote_log(ops)
        except Invalid as exc:
            raise ImportError_("invalid", f"the log of device {device or pk.hex()[:16]} holds what this sessiond "
                                          f"refuses, so nothing of it is applied: {exc.message}") from None
        except (RegistryError, StoreError, DecryptError, LogError) as exc:
            raise ImportError_("damaged", f"the log of device {device or pk.hex()[:16]} is damaged: {exc}") from None
        except asyncio.TimeoutError:
            raise ImportError_("store", "the store did not answer in time") from None
        return man, ops

    # ------------------------------------------------------------------ following
    async def pull(self, sid: str) -> int:
        """Bring in what other devices wrote to `sid` since the last pull. Returns new operations."""
        remote = await self.db.remote(sid)
        key = self.keys.session_key(sid)
        if remote is None or key is None:
            return 0
        if self.keys.rekey_pending(sid) is not None:  # a rekey cut short by a crash: finish it first
            async with self._rekey_lock(sid):
                await self._resume_rekey(sid)
            remote, key = await self.db.remote(sid), self.keys.session_key(sid)
        store = self._open_store(remote["store_url"])
        try:
            rev, members, notice = await self.read_members(store, sid, key, bytes(remote["announce_pk"]),
                                                           min_rev=remote["members_rev"])
            if notice is not None:
                async with self._rekey_lock(sid):
                    await self._take_rekey(sid, notice)
                now = await self.db.remote(sid)
                if bytes(now["announce_pk"]) != bytes(remote["announce_pk"]):
                    return await self.pull(sid)  # now on the new key and members slot (switched here or meanwhile)
        except ImportError_ as exc:
            if exc.kind == "missing" and remote["members_rev"] == 0:
                return 0  # shared from here, not announced yet: nobody else can have written
            raise
        if rev > remote["members_rev"]:
            await self.db.set_remote(sid, members_rev=rev)
        my_pk = self.keys.head_pk(sid)
        known = {bytes(p["head_pk"]): p for p in await self.db.peers(sid)}
        heads = [m for m in members if m["head_pk"] != my_pk]
        changed = []
        for m in heads:
            k = known.get(m["head_pk"])
            head = await asyncio.wait_for(store.get_head(m["head_pk"]), self.timeout)
            if head is not None and (k is None or head.revision != k["rev"]):
                changed.append(m)
        if not changed:
            return 0
        logs, peers = await self._fetch_logs(store, sid, self.keys.session_keys(sid), changed, full=False,
                                             known=known)
        return await self.db.apply_remote(sid, logs, peers=peers)

    async def pull_all(self, sids: list[str] | None = None) -> None:
        """Pull `sids` (default: every shared session)."""
        for sid in (await self.db.shared_sessions() if sids is None else sids):
            if self._stopping:
                return
            try:
                await self.pull(sid)
                self._pull_errors.pop(sid, None)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                msg = str(exc) or type(exc).__name__
                if self._pull_errors.get(sid) != msg:
                    log.warning("pull failed", extra={"session": sid, "error": msg})
                    self.on_event({"type": "sync.error", "session": sid, "error": msg})
                self._pull_errors[sid] = msg
