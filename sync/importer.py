"""Importing a share code: finding the session's store, reading its members slot, fetching and checking
every member's log (and this device's own, after `rm` or on a restored device key), checking the
session's checkpoints against that history, then applying it all at once.

The checkpoint checks run off the event loop, through `run_check` (the Syncer's thread pool).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from itertools import chain
from operator import itemgetter

from ..storage.model import RemoteLog
from ..storage.redact import shown_store
from ..storage.sessions import case_twin_message
from ..stores import HeadExpired, Store, StoreError
from ..stores.errors import LyingServer, describe_failure, failing
from ..stores.registry import RegistryEntry, RegistryError
from . import dagcbor
from .checkpoint import ProofError, check_proofs, prepare_rows
from .context import SyncContext
from .errors import ImportError_, crash_point, log_fix, refuses_device
from .fetch import BEHIND, ManifestSealed, fetch_frozen, fetch_log, fetch_logs
from .heads import levels_to_cbor
from .locations import relay_account_fix
from .members import Members, expiry_hint, member_name
from .mirrorurls import same_stores
from .pages import op_to_cbor
from .rekeyproof import check_exclusion, fork_way, no_author_way, unnamed_author
from .sharecode import ShareCode, ShareCodeError, network_of_url
from .sharecode import decode as decode_code

log = logging.getLogger("sessiond.sync")


def _slow_check() -> float:
    """A fault hook for tests (seconds), read when used, as the crash hooks are: a process forked from one
    that imported this module before the variable was set must see it."""
    return float(os.environ.get("SESSIOND_FAULT_SLOW_PROOF_CHECK") or 0)


class Importer:
    """Imports sessions from share codes."""

    def __init__(
        self,
        ctx: SyncContext,
        members: Members,
        run_check: Callable[[Callable[[], None]], Awaitable[None]],
        push_soon: Callable[[str], None] | None = None,
    ):
        self.ctx = ctx
        self.members = members
        self.run_check = run_check  # runs a CPU-bound check in a worker thread
        self.push_soon = push_soon  # queues a push of a session (a device that rejoins after a rekey)

    async def import_code(self, text: str, passphrase: str | None, store_url: str | None = None) -> dict:
        db = self.ctx.db
        try:
            code = decode_code(text, passphrase)
        except ShareCodeError as exc:
            raise ImportError_(exc.kind, str(exc)) from None
        sid = code.session_id
        twin = await db.case_twin(sid)
        if twin is not None:  # before anything touches key files: on such a disk, they would be the twin's
            raise ImportError_(
                "conflict", case_twin_message(sid, twin) + "; delete the one here first to import this one"
            )
        store, slot = await self._find_store(code, store_url)
        try:
            return await self._import(code, store, slot, store_url)
        except ImportError_ as exc:
            if exc.refused and exc.fix is None:  # (a relay that lets this device look, then refuses a read)
                exc.fix = self._account_fix(code, store)
            if exc.log_of is not None:  # a log found bad: mended by its writer, then imported again
                exc.fix = log_fix(*exc.log_of, importing=True)
            raise

    async def _rekeyed(
        self, code: ShareCode, store: Store, members: list[dict], notice: dict, my_pk: bytes, held: bool
    ) -> ImportError_:
        """Why a code whose members slot holds a rekey notice does not import: the session was rekeyed after
        the code was made (a new code of it, from a device that took the rekey, imports); or the notice is
        one no device takes (its named author's head, which this code opens, does not claim it:
        rekeyproof.check_exclusion), which stays in the slot, a new code of it refused too. Any other refusal
        of the check is the import's error as the check words it (the notice is not known to be a rekey): a
        store that fails while the heads are read (kind store), another member's head claiming a rekey of the
        same slot (rekey_conflict, worded for a device importing: `held`, whether it has a copy of the
        session), a member's head forged or its log damaged."""
        sid = code.session_id
        try:
            await check_exclusion(
                store, sid, notice, old_announce=code.announce_pk, members=members, me=my_pk,
                keys=[code.session_key], known_revs={}, timeout=self.ctx.timeout,
                importing="the copy here is kept as it was" if held else "nothing was imported",
            )  # fmt: skip
        except ImportError_ as exc:
            if exc.kind != "rekey_unconfirmed":  # a store failing, a conflict, a forged or damaged head: itself
                return exc
            author = notice.get("d")
            if author is None:  # sessiond before claims wrote no author: its rekey's new code imports
                return ImportError_(
                    "rekey_unconfirmed",
                    f"session {sid} cannot be imported with this code: its members slot holds a rekey notice"
                    f" that names no device of the session as its author ({unnamed_author(author)}). "
                    + no_author_way(author, sid, "took it"),
                )
            why = (
                f"the device it names as its author ({author}) does not claim it (a writer wrote it without a"
                f" rekey of its own, or the author's log has not reached the store yet)"
                if isinstance(author, str) and author in {m["device_id"] for m in members}
                else "it names no device of the session as its author"
            )
            return ImportError_(
                "rekey_unconfirmed",
                f"session {sid} cannot be imported: its members slot holds a rekey notice that no device takes,"
                f" which no share code of it gets past: {why}; " + fork_way(sid),
            )
        return ImportError_(
            "revoked",
            f"this share code was revoked: session {sid} was rekeyed after it was made; ask for a new code",
        )

    async def _import(self, code: ShareCode, store: Store, slot: RegistryEntry | None, store_url: str | None) -> dict:
        """The import of `code`'s session from `store` (where _find_store found its members slot, `slot`)."""
        ctx = self.ctx
        db, keys = ctx.db, ctx.keys
        sid = code.session_id
        try:
            existing = await db.get_session(sid)
        except Exception:
            existing = None
        key_here = keys.session_key(sid)
        remote = await db.remote(sid) if existing is not None else None
        # A session here under another key: this device left out of (or away through) a rekey, given a new
        # code; it goes over to the new key once the code's logs show the same session (its creation). Or
        # such a switch a crash cut short: its key files rotated (below), its database not yet switched.
        rejoin = (
            existing is not None
            and key_here is not None
            and (
                key_here != code.session_key
                or (remote is not None and bytes(remote["announce_pk"]) != code.announce_pk)
            )
        )
        if existing is not None and existing["access"] == "owner" and remote is not None and not rejoin:
            return {"session": sid, "new": 0, "capability": "owner", "already": True}
        rev, members, notice, frozen = await self.members.read_slot(
            store, sid, code.session_key, code.announce_pk, entry=slot
        )
        my_pk = keys.head_pk(sid)
        if notice is not None:
            raise await self._rekeyed(code, store, members, notice, my_pk, existing is not None)
        mine = next((m for m in members if m["head_pk"] == my_pk), None)
        if mine is not None:
            await self._adopt_device(sid, mine["device_id"])
        logs, peers = await fetch_logs(
            store,
            sid,
            code.session_key,
            [m for m in members if m["head_pk"] != my_pk],
            full=True,
            timeout=ctx.timeout,
            check=ctx.check_remote,
            progress=lambda done, total: ctx.progress("import", sid, done, total),
            behind_ok=True,  # a writer away through a rekey: its log comes once it takes it
        )
        # The logs of writers earlier rekeys dropped, as they stood then (the slot pins each one's manifest)
        for f in frozen:
            lg = await fetch_frozen(store, sid, f, timeout=ctx.timeout, check=ctx.check_remote)
            have = logs.get(lg.device_id)
            if have is None:
                logs[lg.device_id] = lg
            else:  # (a device dropped, and later a writer again: INSERT OR IGNORE drops repeats)
                have.messages.extend(lg.messages)
                have.ops.extend(lg.ops)
                have.last_seq = max(have.last_seq, lg.last_seq)
        # This device's own log as the store holds it: after `rm`, or on a restored device key, the
        # messages it published come back, and its next sequence number follows the last it published.
        own = None
        if mine is not None:
            try:
                man, lg = await fetch_log(
                    store,
                    sid,
                    [code.session_key, *keys.session_keys(sid)],
                    my_pk,
                    mine["device_id"],
                    min_rev=0,
                    after_seq=0,
                    timeout=ctx.timeout,
                    check=ctx.check_remote,
                )
            except ManifestSealed:
                # Going on without it would number this device's next messages from 1 again, under the
                # numbers its old log used, and the other devices would drop them as repeats
                raise ImportError_(
                    "behind",
                    f"this device's own log of session {sid} is in the store under a key from before the"
                    f" session's latest rekey (the device was away through it), which this home does not hold"
                    f" (a device key restored by key import brings no session keys), so it cannot go on from"
                    f" it here. If the device's old home still exists, start it once: `sessiond start --home"
                    f" OLD_HOME`, then `sessiond sync --wait --home OLD_HOME` (it takes the rekey and pushes its"
                    f" log under the new key), and import the code here again. Otherwise import the session on a"
                    f" home with a device key of its own, as a new writer: `sessiond start --home NEW_HOME`, then"
                    f" `sessiond import --home NEW_HOME < code.txt` (what this device wrote before the rekey then"
                    f" stays with the devices that read it already)",
                ) from None
            here = (await db.last_seq(sid), (await db.sync_state(sid))["head_rev"]) if existing is not None else (0, 0)
            # (a log of no operations counts too: a head made only for a rekey's claim, whose revision and
            # claims the next push must go on from, and which a later rekey's switch must push again)
            if man is not None and (man.last_seq > here[0] or man.rev > here[1]):
                logs[man.device] = lg
                own = {
                    "pushed_seq": man.last_seq,
                    "head_rev": man.rev,
                    "tree": dagcbor.encode(levels_to_cbor(man.levels)),
                    # its rekey claims go on in the manifests it pushes from here (a restored device key)
                    "rekey_claims": dagcbor.encode(man.claims) if man.claims else None,
                }
        if not any(op.kind == "session.create" for lg in logs.values() for op in lg.ops) and existing is None:
            raise ImportError_(
                "damaged",
                f"the shared logs of session {sid} lack its creation: `sessiond verify {sid} && sessiond sync"
                f" --wait {sid}` on the device that created it pushes its log again; then import the code again",
            )
        if rejoin and not await self._same_session(sid, logs):
            raise ImportError_(
                "conflict",
                f"a different session with id {sid} already exists on this device (made here, or imported from a"
                f" file or another code), and the code's cannot be imported beside it: keep this one, or, to import"
                f" the code's instead, save this one first (`sessiond export {sid} -o {sid}.json`, which"
                f' `sessiond import-file` takes back under a new id once its "id" is removed) and delete it here'
                f" (`sessiond rm {sid}`)",
            )
        checkpoints = sorted(
            (o for lg in logs.values() for o in lg.ops if o.kind == "checkpoint.add"), key=lambda o: o.order
        )
        # A checkpoint covering messages of a device whose log is not here at all (a writer a rekey dropped,
        # or a kept one that has not taken it yet: not in `logs`) cannot be checked against this history;
        # a log that is here but shorter than a checkpoint says (an old head served) still fails the check.
        checkpoints = [o for o in checkpoints if _checkable(o.body, logs)]
        if existing is None and checkpoints:  # every checkpoint must hold for the history it came with
            pks = {m["head_pk"] for m in members} | {bytes(f["k"]) for f in frozen}

            def check() -> None:
                # messages in the global order (Lamport clock, device, seq); each log is in that order
                parts = [lg.messages for lg in logs.values() if lg.messages]
                rows = parts[0] if len(parts) == 1 else sorted(chain.from_iterable(parts), key=itemgetter(4, 2, 3))
                msgs = prepare_rows(rows)
                slow = _slow_check()
                if slow:  # tests: stands for the checks of a very long session on a slow device
                    time.sleep(slow)
                try:
                    check_proofs([o.body for o in checkpoints], msgs, pks)
                except ProofError as exc:
                    raise ImportError_("checkpoint", f"the session's checkpoints do not verify: {exc}") from None

            # checked in a thread of its own, before the writer is taken: appends meanwhile do not wait
            await self.run_check(check)
        keep_credentials = store_url if store_url and store is not ctx.store else None
        if keep_credentials:
            # the session's store is recorded without the credentials store_url may carry: kept apart (a
            # 0600 file in the keys folder) for when the store is opened again after a restart. Kept before
            # the session is written, so that no crash leaves it here without them (a crash before that
            # leaves credentials no session uses: the next start forgets them); and again after, in case a
            # delete meanwhile pruned them (its prune did not see this session yet)
            await ctx.credentials.remembered(keep_credentials)
        async with ctx.lock(sid):  # no push of `sid` meanwhile: none can make or use a key of its own for it
            fresh = existing is None and not await self._exists(sid)
            if fresh:
                # Key files of a session that does not exist here are leftovers, never this session's keys:
                # a push under way when `rm` removed them makes a new random key (its `create=True`), a crash
                # can come between the delete and their removal, a rekey taken meanwhile writes the new one.
                # Kept, this device would read the members slot and write its log under a wrong key.
                keys.delete_session_key(sid)
            created = []
            if keys.session_key(sid) is None:
                created.append("key")
            if code.write_secret is not None and keys.write_secret(sid) is None:
                created.append("write")
            if created:  # both at once: one fsync of the keys folder, in a thread (the loop goes on meanwhile)
                await keys.store_keys(
                    sid,
                    code.session_key if "key" in created else None,
                    code.write_secret if "write" in created else None,
                )
            access = None
            if existing is None or rejoin:  # (a rejoin's access is what the new code gives)
                access = "write" if code.write_secret else "read"
            elif existing["access"] == "read" and code.write_secret:
                access = "write"
            switch = None
            if rejoin:  # the code's keys first (the old kept for the history), then the database, in one step
                keys.rotate(sid, code.session_key, code.write_secret)
                crash_point("rejoin:rotated")
                my_pk = keys.head_pk(sid)
                switch = {
                    "members_rev": rev,
                    "keep": [bytes(m["head_pk"]) for m in members if m["head_pk"] != my_pk],
                    "push_again": code.write_secret is not None,  # a writer again: its whole log, under the new key
                }
            try:
                new = await db.apply_remote(
                    sid,
                    logs,
                    peers=peers,
                    access=access,
                    remote={
                        "store_url": store.url if store is not ctx.store else None,
                        "announce_pk": code.announce_pk,
                        "members_rev": rev,
                    },
                    event="session.imported",
                    own=own,
                    rejoin=switch,
                )
            except BaseException:
                if fresh or "key" in created:
                    keys.delete_session_key(sid)
                raise
            if rejoin:
                ctx.pull_ok(sid)
                if code.write_secret is not None and self.push_soon is not None:
                    self.push_soon(sid)
            ctx.shared.add(sid)  # it has other devices on it: pushed ahead of unshared sessions
        crash_point("import:applied")
        if keep_credentials:
            await ctx.credentials.remembered(keep_credentials)
        if code.write_secret is not None:
            # A writer is a member from its import on, not from its first push: a rekey keeps exactly the
            # members, so a device that has not written yet would otherwise lose access.
            try:
                await self.members.ensure_member(sid, slot=(rev, members, frozen))  # the slot as read above
            except (ImportError_, StoreError, RegistryError, TimeoutError, OSError) as exc:
                raise ImportError_(
                    "store",
                    f"session {sid} was imported, but this device could not add itself to its writers "
                    f"({exc}); import the code again",
                ) from None
        log.info("imported", extra={"session": sid, "event": "import"})
        return {
            "session": sid,
            "new": new,
            "capability": code.capability,
            "already": existing is not None,
            "devices": len(logs),
            # writers whose logs are still under the key before the latest rekey (away meanwhile)
            "waiting_for": [member_name(p) for p in peers if p["last_error"] == BEHIND],
        }

    async def _same_session(self, sid: str, logs: dict[str, RemoteLog]) -> bool:
        """Whether the code's logs hold the very creation of the session held here (same device, sequence
        number and content): a new key for this session, not another one under its id."""
        create = next((op for lg in logs.values() for op in lg.ops if op.kind == "session.create"), None)
        if create is None:
            return False
        here = await self.ctx.db.log_ops(sid, create.device_id, create.seq - 1, create.seq)
        return len(here) == 1 and dagcbor.encode(op_to_cbor(here[0])) == dagcbor.encode(op_to_cbor(create))

    async def _exists(self, sid: str) -> bool:
        try:
            await self.ctx.db.get_session(sid)
        except Exception:  # the database's "not found" (as for `existing` above)
            return False
        return True

    async def _find_store(self, code: ShareCode, store_url: str | None) -> tuple[Store, RegistryEntry | None]:
        """Where the code's session is (sync/locations.py): the store asked for, else this device's own,
        else a hint; each only once the session's members slot is read from it. With the slot's entry as
        read there (None: the store did not say, or it failed its checks: read_members reads it again)."""
        ctx, sid = self.ctx, code.session_id
        if store_url:
            try:
                asked = ctx.open_store(store_url, missing_ok=False)  # a code makes no folders
            except StoreError as exc:
                raise ImportError_(
                    "bad_store", f"cannot open the store {shown_store(store_url)}: {exc}; check the URL"
                ) from None
            held, slot, failure, fix = await self._has_members(asked, code)
            if failure is not None:  # a failing store says nothing of the session: say it fails, not "absent"
                raise ImportError_("store", f"cannot look for session {sid}: {failure}", fix)
            if not held:
                raise ImportError_(
                    "missing",
                    f"the store {asked.url} does not hold session {sid}; check the URL{expiry_hint([asked])}",
                )
            return asked, slot
        places = code.places()
        if not places:
            return ctx.store, None  # no location (the oldest codes): this device's own store, as always
        failures: list[str] = []
        fixes: list[str] = []  # what mends a failure beyond its own advice (a relay's account: its invite)
        looked: list[Store] = [ctx.store]
        held, slot, failure, _ = await self._has_members(ctx.store, code)
        if held:
            return ctx.store, slot
        if failure is not None:
            failures.append(failure)
        for _network, hint in places:
            if not hint or same_stores(hint, ctx.store.url):
                continue
            try:
                hinted = ctx.open_store(hint, missing_ok=False)
            except StoreError:
                continue  # an unusable hint (a folder not here, a scheme not known)
            looked.append(hinted)
            held, slot, failure, fix = await self._has_members(hinted, code)
            if held:
                return hinted, slot
            if failure is not None:
                failures.append(failure)
            if fix is not None:
                fixes.append(fix)
        networks = ", ".join(dict.fromkeys(n for n, _ in places))
        hints = ", ".join(h for _, h in places if h) or "none"
        if failures:  # a store that fails may hold it: that is what to fix, not a missing session
            raise ImportError_(
                "store",
                f"cannot look for session {sid} (shared through {networks}; hints: {hints}): "
                + "; ".join(failures)
                + "; or import again with --store URL naming another store of that network that holds it",
                "; ".join(fixes) or None,
            )
        raise ImportError_(
            "store_needed",
            f"session {sid} is shared through {networks}, and neither this device's store nor the code's "
            f"hints ({hints}) hold it; import again with --store URL naming a store of that network that does"
            + expiry_hint(looked),
        )

    def _account_fix(self, code: ShareCode, store: Store) -> str | None:
        """What mends a store refusing this device's credentials beyond the failure's own advice: for a relay
        the code names (not this device's own store, whose invite the daemon's start took), the invite this
        device needs, given with `import --store-file` (README); None for any other store."""
        if store is self.ctx.store or network_of_url(store.url) != "s5":
            return None
        if not any(network == "relay" for network, _ in code.places()):
            return None  # (an S5 portal: its accounts are not the relay's invites)
        return relay_account_fix(store.url)

    async def _has_members(
        self, store: Store, code: ShareCode
    ) -> tuple[bool, RegistryEntry | None, str | None, str | None]:
        """Whether `store` holds the session's members slot, its entry, why the store could not say
        (it failed: unreachable, timed out, credentials refused, a server error; None when it answered),
        and what mends that beyond the failure's own advice (_account_fix; None otherwise).
        A slot that fails its checks (a forged or damaged entry) counts: the import then reads it and
        says what is wrong, instead of looking on."""
        try:
            entry = await asyncio.wait_for(store.get_head(b"\xed" + code.announce_pk), self.ctx.timeout)
        except (RegistryError, LyingServer, HeadExpired):  # (a network store's own head checks raise the latter)
            return True, None, None, None  # (an expired head: read_members says so)
        except (TimeoutError, StoreError, OSError) as exc:
            if failing(exc):
                fix = self._account_fix(code, store) if refuses_device(exc) else None
                return False, None, describe_failure(exc, store.url), fix
            return False, None, None, None
        return entry is not None, entry, None, None

    async def _adopt_device(self, sid: str, device: str | None) -> None:
        """The members list names this device's head key under another device id: this home holds a
        device key restored with `key import`. A fresh home becomes that device again; one that has
        written as itself cannot (its head key would then carry two devices' logs)."""
        db = self.ctx.db
        if device is None or device == db.device_id:
            return
        try:
            await db.adopt_device_id(device)
        except Exception:
            raise ImportError_(
                "conflict",
                f"this device's key published session {sid} as device {device}, but "
                f"this home is device {db.device_id} and has sessions of its own; "
                f"import the code into a fresh home that holds the restored key "
                f"(`sessiond key import --home NEW`)",
            ) from None
        log.info("took the device id of a restored device key", extra={"session": sid, "event": "import"})


def _checkable(proof: object, logs: dict) -> bool:
    """Whether a checkpoint's frontier names only devices whose logs an import holds (a malformed one is
    checked, and refused, by check_proofs)."""
    frontier = proof.get("frontier") if isinstance(proof, dict) else None
    if not isinstance(frontier, dict):
        return True
    return all(d in logs for d, upto in frontier.items() if not (isinstance(upto, int) and upto <= 0))
