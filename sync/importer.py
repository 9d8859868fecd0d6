"""Importing a share code: finding the session's store (findstore.py), reading its members slot (a slot
holding a rekey notice refuses the code: rekeyproof.refused_code), fetching and checking every member's
log (and this device's own, after `rm` or on a restored device key), checking the session's checkpoints
against that history, then applying it all at once.

The checkpoint checks run off the event loop, through `run_check` (the Syncer's thread pool).
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable
from itertools import chain
from operator import itemgetter

from ..storage.errors import IMPORT_HERE, session_path
from ..storage.model import Op, RemoteLog
from ..storage.sessions import case_twin_message, importing_twin_message
from ..storage.testhooks import pause_for_tests
from ..stores import Store, StoreError
from ..stores.errors import failing
from ..stores.registry import RegistryEntry, RegistryError
from . import dagcbor
from .checkpoint import SETTING_KINDS, ProofError, check_proofs, newer_version, prepare_rows
from .context import SyncContext
from .errors import NEWER_CODE_FIX, ImportError_, crash_point, log_fix, log_fix_api, needs_invites
from .fetch import BEHIND, ManifestSealed, fetch_frozen, fetch_log, fetch_logs
from .findstore import account_fix, find_store
from .heads import levels_to_cbor
from .importsame import creation_not_held, file_copy, same_session
from .members import Members
from .membersobject import member_name
from .rekeyproof import refused_code
from .sharecode import ShareCode, ShareCodeError
from .sharecode import decode as decode_code

log = logging.getLogger("sessiond.sync")


def _slow_check() -> float:
    """A fault hook for tests (seconds), read when used, as the crash hooks are: a process forked from one
    that imported this module before the variable was set must see it."""
    return float(os.environ.get("SESSIOND_FAULT_SLOW_PROOF_CHECK") or 0)


def _announce_of(remote: dict | None) -> bytes | None:
    """A session row's members slot's announce key (none: no row)."""
    return bytes(remote["announce_pk"]) if remote is not None else None


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
            err = ImportError_(exc.kind, str(exc))
            if exc.kind == "version":  # a newer sessiond's code: this device upgrades
                err.owner = [NEWER_CODE_FIX]
            elif exc.kind == "passphrase_required":
                err.api = ['POST /v1/import {"code": CODE, "passphrase": PASSPHRASE}']
            raise err from None
        sid = code.session_id
        twin = await db.held_twin(sid)
        if twin is not None and twin[1]:  # (hidden, 404 by its id: no session here to delete yet)
            raise ImportError_("conflict", importing_twin_message(sid, twin[0]), reason="importing")
        if twin is not None:  # before anything touches key files: on such a disk, they would be the twin's
            raise ImportError_(
                "conflict",
                case_twin_message(sid, twin[0]) + "; delete the one here first to import this one",
                reason="case_twin",
            )
        store, slot = await find_store(self.ctx, code, store_url)
        try:
            return await self._import(code, store, slot, store_url)
        except ImportError_ as exc:
            if exc.refused and exc.fix is None:  # (a relay that lets this device look, then refuses a read)
                exc.fix = account_fix(self.ctx, code, store)
                needs_invites(exc, [store.url] if exc.fix else [])
            if exc.log_of is not None:  # a log found bad: mended by its writer, then imported again
                exc.fix = log_fix(*exc.log_of, importing=True)
                exc.api = log_fix_api(*exc.log_of, importing=True)
            raise

    async def _import(self, code: ShareCode, store: Store, slot: RegistryEntry | None, store_url: str | None) -> dict:
        """The import of `code`'s session from `store` (where find_store found its members slot, `slot`)."""
        ctx = self.ctx
        db, keys = ctx.db, ctx.keys
        sid = code.session_id
        try:  # (a miss, the common case, read without the refusal's guess: Database.has_session)
            existing = await db.get_session(sid) if await db.has_session(sid) else None
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
        if rejoin and code.session_key in keys.session_keys(sid)[1:]:
            # a code of a key this device holds as an earlier one: made before a rekey it took (or made), which its
            # slot's notice says. Checked as a notice leaving this device out, its author this device or a member
            # on the new key, it read as one no device takes (`refused_code`)
            raise ImportError_(
                "revoked",
                f"this share code was revoked: session {sid} was rekeyed after it was made, and this device holds the"
                f" session already, under that rekey's key; nothing was imported (`sessiond share {sid}` here makes"
                f" a code of it now)",
            )
        rev, members, notice, frozen = await self.members.read_slot(
            store, sid, code.session_key, code.announce_pk, entry=slot
        )
        my_pk = keys.head_pk(sid)
        if notice is not None:
            # (the author's older manifests may be walked whole, ~50 s on a slow store: `claims`, its bar)
            walked = functools.partial(ctx.progress, "claims", sid)
            raise await refused_code(
                code, store, members, notice, my_pk, existing is not None, self.ctx.timeout, progress=walked
            )
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
            lg, _last = await fetch_frozen(store, sid, f, timeout=ctx.timeout, check=ctx.check_remote)
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
        # this device's own log as the store holds it, under a key this device holds or the code's: when this device
        # created the session (away through rekeys, its log still under the key from before them), the creation the
        # rejoin's check looks for is there and in no other log under the code's key
        own_log: RemoteLog | None = None
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
                old_home = (
                    "start the device's old home once, if it still exists: `sessiond start --home OLD_HOME`, then"
                    " `sessiond sync --wait --home OLD_HOME` (it takes the rekey and pushes its log under the new"
                    " key), and import the code here again"
                )
                new_home = (
                    "import the session on a home with a device key of its own, as a new writer: `sessiond start"
                    " --home NEW_HOME`, then `sessiond import --home NEW_HOME < code.txt` (what this device wrote"
                    " before the rekey then stays with the devices that read it already)"
                )
                behind = ImportError_(
                    "behind",
                    f"this device's own log of session {sid} is in the store under a key from before the"
                    f" session's latest rekey (the device was away through it), which this home does not hold"
                    f" (a device key restored by key import brings no session keys), so it cannot go on from"
                    f" it here. {old_home[0].upper()}{old_home[1:]}. Otherwise {new_home}",
                )
                behind.owner = [old_home, new_home]  # (its owner's: other homes, no request to this daemon)
                raise behind from None
            own_log = lg
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
        mine_frozen = next((f for f in frozen if bytes(f["k"]) == my_pk and f["d"] == db.device_id), None)
        if own is None and mine_frozen is not None and db.device_id in logs:
            # this device's log as a rekey that dropped it froze it, its copy deleted since (or a restored key):
            # taken back, so that what it writes from now on is numbered past it (numbered from 1 again, the
            # other devices, which hold the frozen log, would drop it as repeats), and pushed whole again
            held = await db.last_seq(sid) if existing is not None else 0
            if logs[db.device_id].last_seq > held:
                own = {"pushed_seq": 0, "head_rev": int(mine_frozen["r"]), "tree": None}
        if not any(op.kind == "session.create" for lg in logs.values() for op in lg.ops) and existing is None:
            if any(p["last_error"] == BEHIND for p in peers):  # (its creator's log under an older key: not damaged)
                raise await creation_not_held(db, sid, peers, fresh=True)
            raise ImportError_(
                "damaged",
                f"the shared logs of session {sid} lack its creation: `sessiond verify {sid} && sessiond sync"
                f" --wait {sid}` on the device that created it pushes its log again; then import the code again",
            )
        # (what tells the code's session this one: the logs read, and this device's own as the store holds it)
        judged = logs if own_log is None or own_log.device_id in logs else {**logs, own_log.device_id: own_log}
        if rejoin and not any(op.kind == "session.create" for lg in judged.values() for op in lg.ops):
            # its creator's log not readable under the code's key yet (away through the rekey, or killed in the
            # middle of its own: its log pushed under the new key at its restart): whether the code's session is the
            # one held here cannot be told yet (was: refused as "a different session", its user told to delete it)
            raise await creation_not_held(db, sid, peers)
        # A session here with no key yet (made here moments ago, its first push not begun, or imported from a
        # file): the code's must be the same one (its very creation), else two conversations would merge under
        # one id; so too for a session under another key (a rejoin).
        if (rejoin or (existing is not None and key_here is None)) and not await same_session(db, sid, judged):
            if await file_copy(db, sid, judged):  # the same conversation to its user: said as what it is
                what = (
                    f"session {sid} on this device is a copy of the code's session imported from a file (`sessiond"
                    f" import-file` of its export, which makes a new session under its id): a separate session,"
                    f" which the code's can neither be merged into nor imported beside under one id. Keep the copy,"
                    f" or, to import the code's (the shared session, with what its devices wrote since the export),"
                )
            else:
                what = (
                    f"a different session with id {sid} already exists on this device (made here, or imported from"
                    f" a file or another code), and the code's cannot be imported beside it: keep this one, or, to"
                    f" import the code's instead,"
                )
            exc = ImportError_(
                "conflict",
                f"{what} save this one first (`sessiond export {sid} -o {sid}.json`, which `sessiond import-file`"
                f' takes back under a new id once its "id" is removed) and delete it here (`sessiond rm {sid}`),'
                f" then import the code again",
                reason="exists",
            )
            path = session_path(sid)
            exc.api = [f"GET {path}/export, then DELETE {path}, then {IMPORT_HERE}"]  # (the export kept by the app)
            raise exc
        checkpoints = sorted(
            (o for lg in logs.values() for o in lg.ops if o.kind == "checkpoint.add"), key=lambda o: o.order
        )
        # A checkpoint covering messages of a device whose log is not here at all (a writer a rekey dropped,
        # or a kept one that has not taken it yet: not in `logs`) cannot be checked against this history;
        # a log that is here but shorter than a checkpoint says (an old head served) still fails the check.
        checkpoints = [o for o in checkpoints if _checkable(o.body, logs)]
        # A proof of a version this sessiond does not know (a newer sessiond's) cannot be checked here: set aside,
        # kept with the log as a pull keeps it (listed whole, verify-proof saying to update), named in the answer.
        # It is an operation of the log of the device that wrote it (kept as that device's checkpoint), which only
        # that device writes: it could as well have left it out
        newer = [o for o in checkpoints if newer_version(o.body)] if existing is None else []
        checkpoints = [o for o in checkpoints if not newer_version(o.body)]
        if existing is None and checkpoints:  # every checkpoint must hold for the history it came with
            pks = {m["head_pk"] for m in members} | {bytes(f["k"]) for f in frozen}

            def check() -> None:
                # messages in the global order (Lamport clock, device, seq); each log is in that order
                parts = [lg.messages for lg in logs.values() if lg.messages]
                rows = parts[0] if len(parts) == 1 else sorted(chain.from_iterable(parts), key=itemgetter(4, 2, 3))
                # the operations that make the session's setting, which a version 2 proof hashes
                ops = [
                    (o.device_id, o.seq, o.lamport, o.kind, o.body)
                    for lg in logs.values()
                    for o in lg.ops
                    if o.kind in SETTING_KINDS
                ]
                slow = _slow_check()
                if slow:  # tests: stands for the checks of a very long session on a slow device
                    time.sleep(slow)
                try:
                    check_proofs([o.body for o in checkpoints], lambda v: prepare_rows(rows, v), pks, ops)
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
        await pause_for_tests("import.fetched")  # (the tests hold imports here: fetched, not yet applied)
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
            # nothing awaited from this look to the switch and the write's start below: a pull that took a rekey
            # since the import looked (was: a rejoin went back over to the code's key, older than the one taken, and
            # its slot: every pull after it failed, the members list under a wrong key) is seen here, and one taking
            # one after it goes on from the code's key (not under the rekey lock: a pull's check of a notice holds
            # that up to the store's timeout, which an import does not wait for)
            held = existing is not None and key_here is not None  # (a key made above, for a session held without)
            now = await self._announce(sid) if held else None
            if held and (keys.session_key(sid), now) != (key_here, _announce_of(remote)):
                raise ImportError_(
                    "busy",
                    f"session {sid} went over to a new key here while the code was imported (a rekey taken): nothing"
                    f" of the code was taken; import it again",
                )
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
                    new_only=existing is None,  # one here now arrived meanwhile: maybe another conversation
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
                err = ImportError_(
                    "store",
                    f"session {sid} was imported, but this device could not add itself to its writers "
                    f"({exc}); import the code again",
                )
                if isinstance(exc, ImportError_):  # the store's own failure, when that was it (store_details)
                    err.failure, err.failures, err.owner_of = exc.failure, exc.failures, exc.owner_of
                elif failing(exc):
                    err.failure = (exc, store.url)
                raise err from None
        log.info("imported", extra={"session": sid, "event": "import"})
        return {
            "session": sid,
            "new": new,
            # what this device has now: a read-only code over a writer's copy leaves it a writer
            "capability": "read-write"
            if access is None and existing and existing["access"] == "write"
            else code.capability,
            "already": existing is not None,
            "devices": len(logs),
            # writers whose logs are still under the key before the latest rekey (away meanwhile)
            "waiting_for": [member_name(p) for p in peers if p["last_error"] == BEHIND],
            # checkpoints of a version this sessiond does not know: kept, not checked
            **({"unchecked_checkpoints": [_named(p) for p in newer]} if newer else {}),
        }

    async def _announce(self, sid: str) -> bytes | None:
        """The announce key of the members slot `sid` is on here (none: not shared, nor imported)."""
        return _announce_of(await self.ctx.db.remote(sid))

    async def _exists(self, sid: str) -> bool:
        try:
            return await self.ctx.db.has_session(sid)
        except Exception:  # (as for `existing` above)
            return False

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
                reason="other_device",
            ) from None
        log.info("took the device id of a restored device key", extra={"session": sid, "event": "import"})


def _named(op: Op) -> dict:
    """A checkpoint set aside (its operation), as the import's answer names it and `checkpoints` lists it: the
    device whose log holds it, its number and version."""
    return {"device": op.device_id, "number": op.body.get("number"), "v": op.body.get("v")}


def _checkable(proof: object, logs: dict) -> bool:
    """Whether a checkpoint's frontier names only devices whose logs an import holds (a malformed one is
    checked, and refused, by check_proofs)."""
    frontier = proof.get("frontier") if isinstance(proof, dict) else None
    if not isinstance(frontier, dict):
        return True
    return all(d in logs for d, upto in frontier.items() if not (isinstance(upto, int) and upto <= 0))
