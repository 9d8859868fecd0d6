"""Verifying what the store holds of a session against the local database.

This device's own log is read in full (every object reachable from its head, each one checked, all
damage listed, and marked for repair so that `sessiond sync` pushes it again); the logs of the other
devices are compared with what this device applied of them; a device left out of a rekey is told so.
"""

from __future__ import annotations

import contextlib
from typing import Any

from ..storage.redact import shown_url
from ..stores import Store, StoreError
from ..stores.bounded import bounded
from ..stores.errors import HeadRolledBack, describe_failure, failing
from ..stores.registry import RegistryError
from . import dagcbor
from .context import SyncContext
from .crypto import DecryptError
from .errors import NEWER_FIX, ImportError_, describe
from .fetch import BEHIND, ManifestSealed, fetch_log
from .heads import manifest_hash_of, open_manifest
from .manifest import parse_manifest
from .members import LOST, Members
from .membersobject import member_name
from .mirror import MirrorStore
from .mirrorcheck import Reads, lacking, noting
from .pages import LogError, NewerFormat, op_to_cbor
from .pull import LogReader
from .rekey import Rekeyer

HEAD_MISSING = "head: missing from the store (nothing published under this device's key)"


class _StoreFailed(Exception):
    """The store failed to answer (stores/errors.failing) while a session was checked."""

    def __init__(self, url: str, exc: BaseException):
        super().__init__(url)
        self.url, self.exc = url, exc


class Verifier:
    """Checks sessions in the store; marks those whose own log needs a repair (ctx.repair).

    A store that fails (unreachable, hung, refusing our credentials, server errors) says nothing about
    a session: the session is reported as not checked, naming the store's failure and what to do (its
    `store_failure`), never as damaged or missing, and nothing is marked for repair. Within one run
    (`verify`, or doctor's), a store that failed once is not asked again: the sessions after it in
    that store are reported as not checked at once, instead of each waiting out the timeout."""

    def __init__(self, ctx: SyncContext, members: Members, rekeyer: Rekeyer):
        self.ctx = ctx
        self.members = members
        self.rekeyer = rekeyer

    async def verify(self, sid: str | None = None, *, down: dict[str, str] | None = None) -> dict:
        """Every session (or `sid`). `down`: stores already known to fail in this run (URL -> what is
        wrong, e.g. doctor's store check): not asked; filled with those that fail meanwhile."""
        targets = [sid] if sid is not None else await self.ctx.db.session_ids()
        down = {} if down is None else down
        reports = [await self.verify_session(s, down=down) for s in targets]
        return {"ok": all(r["ok"] for r in reports), "sessions": reports}

    async def verify_session(self, sid: str, *, down: dict[str, str] | None = None) -> dict:
        down = {} if down is None else down
        try:
            return await self._verify_session(sid, down)
        except _StoreFailed as failed:
            if failed.url not in down:  # (an ImportError_ of kind "store" has described the failure already)
                exc = failed.exc
                down[failed.url] = str(exc) if isinstance(exc, ImportError_) else describe_failure(exc, failed.url)
            return self._not_checked(sid, failed.url, down[failed.url])

    def _not_checked(self, sid: str, url: str, why: str) -> dict:
        return {
            "session": sid,
            "ok": False,
            "revision": None,
            "manifest": None,
            "objects": 0,
            "operations": 0,
            "unpushed": 0,
            "devices": 0,
            "problems": [f"not checked: {why}"],
            "damaged": [],
            "store": url,
            "store_failure": why,
        }

    async def _verify_session(self, sid: str, down: dict[str, str]) -> dict:
        store = await self.ctx.store_for(sid)
        if store.url in down:  # failed earlier in this run: not asked again
            return self._not_checked(sid, store.url, down[store.url])
        if not isinstance(store, MirrorStore):
            return await self._verify_read(sid, store, {})
        parts: dict[str, Reads] = {}  # what was read, by whose it is (see _each_store)
        report = await self._verify_read(sid, store, parts)
        await self._each_store(sid, store, report, parts)
        return report

    async def _each_store(self, sid: str, store: MirrorStore, report: dict, parts: dict[str, Reads]) -> None:
        """A mirror: whether each of its stores holds what was read through it (a read finds each object
        and head in whichever store has it: a store that lost data never shows in it). `parts`: the reads
        by whose they are, "" this device's log, "members" the members slot, else a device's log.

        Each device pushes its log to the stores it names, not to this device's: another device's log that a
        store of the mirror holds none of, while another store of it holds it whole, is a note (`notes`, and the
        store's `not_held`), not a loss, unless a verify (or a pull) here saw that store hold it before (table
        `logs_seen`, storage/logsseen.py): then the store lost it. One that a store holds part of (its head, not
        all its objects; its head at an older revision) is a loss too, as is one no store holds whole. This
        device's log, and the members slot: every store holds them."""
        ctx = self.ctx
        seen = ctx.db.syncstate.logs_seen
        rows: list[dict] = []
        for name, reads in parts.items():
            rows += [row | {"part": name} for row in await lacking(store, reads, ctx.timeout)]
        for row in rows:  # (noted before they are judged: a store seen holding a log whole now held it before)
            if row["part"] not in ("", "members") and row["ok"]:
                await seen.seen(sid, row["url"], parts[row["part"]].heads)
        stores: dict[str, dict] = {}
        problems, elsewhere = report["problems"], report.setdefault("elsewhere", [])
        notes: list[str] = []
        remote = await ctx.db.remote(sid)
        announced = bool(remote and remote["announced"]) and ctx.keys.write_secret(sid) is not None
        here = False  # whether a store lost what this device wrote (or writes again): its log, the slot
        for row in rows:
            url, name = row["url"], row["part"]
            st = stores.setdefault(url, {"url": url, "ok": True})
            if row.get("not_checked"):
                st["ok"], st["not_checked"] = None, row["not_checked"]
                continue
            if row["ok"]:
                continue
            whole = [r["url"] for r in rows if r["part"] == name and r["ok"]]  # the stores that hold it all
            other = name not in ("", "members")
            held = other and row["none"] and await seen.was_seen(sid, url, parts[name].heads)  # and lost it all
            if other and row["none"] and whole and not held:  # pushed to other stores than this one
                st.setdefault("not_held", []).append(name)
                notes.append(
                    f"device {name}'s log is in {' and '.join(whole)}, not in {url}: {name} pushes to the stores"
                    f" it names (if they include {url}, `sessiond sync` on device {name} sends it there)"
                )
                continue
            st["ok"] = False
            st.setdefault("heads", []).extend(row["heads"])
            st.setdefault("objects", []).extend(row["objects"])
            lost = ", ".join(
                (["its head"] if row["heads"] else []) + ([f"{len(row['objects'])} objects"] * bool(row["objects"]))
            )
            here |= name == "" or (name == "members" and announced)
            if name == "":
                ctx.repair.add(sid)  # (its next push sends the whole log again: to the stores that lack it)
                problems.append(f"store {url} lacks this device's log ({lost}): `sessiond sync` sends it again")
            elif name == "members":
                who = "`sessiond sync`" if announced else "`sessiond sync` on a device that wrote it"
                problems.append(f"store {url} lacks the members slot ({lost}): {who} writes it again")
            else:
                before = ", which it held before" if held else ""
                problems.append(
                    f"store {url} lacks device {name}'s log{before} ({lost}): `sessiond sync` on device {name} sends"
                    " it again"
                )
                if name not in elsewhere:
                    elsewhere.append(name)
        report["stores"] = [stores[s.url] for s in store.stores if s.url in stores]
        if not elsewhere:
            del report["elsewhere"]
        if notes:
            report["notes"] = notes
        if any(st["ok"] is False for st in report["stores"]):
            report["ok"] = False
            fixes = [report.get("repair")]
            if here:
                fixes.append("`sessiond sync` sends what this device wrote again to the stores that lost it")
            if elsewhere:
                fixes.append(f"`sessiond sync` on device(s) {', '.join(elsewhere)} sends what they wrote")
            report["repair"] = "; ".join(f for f in fixes if f)

    async def _head_lies(self, sid: str, store: Store, report: dict) -> None:
        """Whether `store` lies about this device's head of `sid`: found forged, damaged or rolled back (head_lie)
        by verify after a `sessiond sync` of the session (or a push past the revision this device had pushed) since a
        verify found it so already (noted in the database: storage/headlies.py, so that a restart in between forgets
        nothing). Its fix then, `sync --wait` and verify again, did not mend it. Said as a store that lies
        (`store_lies`, how in `store_lies_how`, and the repair said: another store); a head rolled back so is also
        what a store its host restored from a backup again since serves, said as either. Found so again with no
        sync nor push since, it is the same finding: `sync --wait` is still its fix."""
        how = report.pop("head_lie", None)
        lies = self.ctx.db.syncstate.head_lies
        if how is None:
            await lies.clear(sid)
            return
        pushed = (await self.ctx.db.sync_state(sid))["head_rev"]
        first = await lies.found(sid)
        if first is None or first["store_url"] != store.url or not (first["synced"] or pushed > first["head_rev"]):
            if first is None or first["store_url"] != store.url:
                await lies.note(sid, store.url, how, pushed)
            return
        url = shown_url(store.url)
        report["store_lies"], report["store_lies_how"] = store.url, how
        if how == "rolled back":
            report["repair"] = (
                f"the store {url} served this device's head of the session rolled back again, after a sync (this"
                f" device has pushed revision {pushed}): a store that lies does that, and so does one its host"
                " restored from a backup again since; if its host did not, move to a store you trust"
                " (pushing again does not mend a lie); if it did, `sessiond sync --wait` pushes the head again"
            )
            return
        report["repair"] = (
            f"the store {url} served this device's head of the session forged or damaged again, after a sync: it"
            " lies, and pushing again does not mend that; move to a store you trust"
        )

    async def _verify_read(self, sid: str, store: Store, parts: dict[str, Reads]) -> dict:
        """The session's copy as read from `store` (through a mirror, `parts` gets what was read)."""
        ctx = self.ctx
        with self._part(store, parts, ""):
            report = await self._verify_own(sid)
        lost = report.pop("head_unusable", False) or report["problems"][:1] == [HEAD_MISSING]
        # (what a newer sessiond wrote is not damage: pushed again by this one, it would be written over)
        if len(report["problems"]) > len(report.get("newer", ())) and (report["revision"] is not None or lost):
            ctx.repair.add(sid)  # what the store lost of this device's log, `sessiond sync` pushes again
            report["repair"] = "`sessiond sync` pushes this device's whole log of the session again"
        await self._head_lies(sid, store, report)
        report["devices"] = 1 if report["revision"] else 0
        key = ctx.keys.session_keys(sid)
        remote = await ctx.db.remote(sid)
        if remote is None or key is None:
            return report
        my_pk = ctx.keys.head_pk(sid)
        try:  # a device left out of a rekey cannot open the others' new logs: say so, not "damaged"
            with self._part(store, parts, "members"):
                _, members, notice = await self.members.read_members(store, sid, key[0], bytes(remote["announce_pk"]))
            if notice is not None:  # not taken: refused (why, said), this device left out, or the next pull's
                try:
                    with self._part(store, parts, "members"):
                        await self.rekeyer.confirm(sid, notice, store, members)
                except ImportError_ as exc:
                    if exc.kind == "store":
                        raise
                    report["ok"] = False
                    if exc.kind == "revoked":  # (marked so by the check, as a pull's: its writes refused)
                        report["problems"].append(
                            "revoked: the session was rekeyed without this device; it keeps what it "
                            "has, but can neither read nor check what is written from now on (ask "
                            f"for a new share code): {exc}"
                        )
                    else:
                        report["problems"].append(f"rekey refused: {exc}")
                    return report
        except ImportError_ as exc:
            if exc.kind == "store":
                raise _StoreFailed(store.url, exc) from None
            report["problems"].append(f"members: {exc}")
            if exc.kind in LOST:  # lost from the store (its entry, or its object: gone or damaged)
                # a device that wrote the slot writes it again (Members.restore): its sync, or its next pull.
                # A writer not listed yet (a share or a write import cut short before the slot: killed, or
                # the store failing the write) writes a missing slot itself, with its next push
                writer = ctx.keys.write_secret(sid) is not None
                if writer and remote["announced"]:
                    fix = "`sessiond sync` writes the session's members slot again"
                elif writer and exc.kind == "missing":
                    fix = "`sessiond sync` on this device writes the session's members slot, listing it"
                else:
                    fix = "`sessiond sync` on a device that wrote it writes the session's members slot again"
                report["repair"] = "; ".join(f for f in (report.get("repair"), fix) if f)
        for peer in await ctx.db.peers(sid):
            pk = bytes(peer["head_pk"])
            if pk == my_pk:
                continue
            name = member_name(peer)
            try:
                with self._part(store, parts, name):
                    man, ops = await fetch_log(
                        store,
                        sid,
                        key,
                        pk,
                        peer["device_id"],
                        min_rev=peer["rev"],
                        after_seq=0,
                        as_ops=True,
                        timeout=ctx.timeout,
                    )
            except ManifestSealed as exc:
                if peer["applied_seq"]:  # a log read here before went on under a key this device lacks
                    report["problems"].append(f"device {name}: {describe(exc)}")
                else:  # away through the latest rekey: nothing of it here yet, nothing to check (fetch.BEHIND)
                    report.setdefault("waiting", []).append(f"device {name} {BEHIND}")
                continue
            except ImportError_ as exc:
                if exc.kind == "store":
                    raise _StoreFailed(store.url, exc) from None
                report["problems"].append(f"device {name}: {describe(exc)}")
                if exc.log_of is not None:  # damaged, forged, rolled back: its writer pushes it again
                    fix = f"`sessiond verify {sid} && sessiond sync --wait {sid}` on device {name} pushes its log again"
                    report["repair"] = "; ".join(f for f in (report.get("repair"), fix) if f)
                continue
            except Exception as exc:
                if failing(exc):
                    raise _StoreFailed(store.url, exc) from None
                report["problems"].append(f"device {name}: {describe(exc)}")
                continue
            if man is None:
                if peer["rev"]:
                    report["problems"].append(f"device {name}: head missing from the store")
                continue
            report["devices"] += 1
            upto = min(man.last_seq, peer["applied_seq"])
            local = await ctx.db.log_ops(sid, man.device, 0, upto)
            remote_ops = [o for o in ops if o.seq <= upto]
            if [dagcbor.encode(op_to_cbor(o)) for o in local] != [dagcbor.encode(op_to_cbor(o)) for o in remote_ops]:
                report["problems"].append(f"device {name}: the store's log differs from what this device applied")
            report["operations"] += len(ops)
        report["ok"] = not report["problems"]
        return report

    @staticmethod
    @contextlib.contextmanager
    def _part(store: Store, parts: dict[str, Reads], name: str):
        """Note what a mirror reads within the block as `parts[name]` (and nothing for one store)."""
        if not isinstance(store, MirrorStore):
            yield
            return
        with noting() as reads:
            try:
                yield
            finally:
                have = parts.setdefault(name, Reads())
                have.objects |= reads.objects
                for pk, rev in reads.heads.items():
                    have.heads[pk] = max(rev, have.heads.get(pk, 0))

    async def _verify_own(self, sid: str) -> dict:
        """This device's log of `sid` in the store, checked against the local database. The report is
        about one head: it names the revision and the manifest it read (`manifest`, its BLAKE3 hash),
        and every object reachable from that manifest is read and checked (hash, tags, plaintext id,
        decoding) even after another one failed; each one that is damaged or missing is listed in
        `damaged` as {"object": hash, "problem": ...} and named in `problems`."""
        ctx = self.ctx
        db, keys, timeout = ctx.db, ctx.keys, ctx.timeout
        problems: list[str] = []
        damaged: list[dict] = []
        report: dict[str, Any] = {
            "session": sid,
            "ok": False,
            "revision": None,
            "manifest": None,
            "objects": 0,
            "operations": 0,
            "unpushed": 0,
            "problems": problems,
            "damaged": damaged,
        }
        state = await db.sync_state(sid)
        last = await db.last_seq(sid)
        report["unpushed"] = max(0, last - state["pushed_seq"])
        if state["head_rev"] == 0:
            if last:
                problems.append("not pushed yet: run `sessiond sync --wait` and verify again")
            else:
                report["ok"] = True
            return report
        key = keys.session_key(sid)
        if key is None:
            problems.append("the session key is missing from this device's key folder")
            return report
        head_pk = keys.head_pk(sid)
        store = await ctx.store_for(sid)
        try:
            head = await bounded(store.get_head(head_pk), timeout)
        except (TimeoutError, RegistryError, StoreError, OSError) as exc:
            if failing(exc):
                raise _StoreFailed(store.url, exc) from None
            problems.append(f"head: {describe(exc)}")
            report["head_unusable"] = isinstance(exc, RegistryError)  # (damaged or forged: pushed again)
            # (found so again after a push past it: the store lies, _head_lies)
            report["head_lie"] = "rolled back" if isinstance(exc, HeadRolledBack) else "forged"
            return report
        if head is None:
            problems.append(HEAD_MISSING)
            return report
        report["revision"] = head.revision
        if head.revision < state["head_rev"]:
            problems.append(
                f"head: rolled back to revision {head.revision}; this device published revision {state['head_rev']}"
            )
            report["head_lie"] = "rolled back"
            return report
        try:
            mhash = manifest_hash_of(head)
        except RegistryError as exc:
            problems.append(f"head (revision {head.revision}): {describe(exc)}")
            return report
        report["manifest"] = mhash.hex()
        try:
            ct = await bounded(store.get(mhash), timeout)
            report["objects"] += 1
            plain = open_manifest(ct, mhash, keys.session_keys(sid), head_pk, head.revision)
            manifest = parse_manifest(plain, sid=sid, head_pk=head_pk, rev=head.revision)
        except NewerFormat as exc:
            _newer(report, f"manifest {mhash.hex()} (revision {head.revision}): {exc}")
            return report
        except (TimeoutError, StoreError, DecryptError, LogError, OSError) as exc:
            if failing(exc):
                raise _StoreFailed(store.url, exc) from None
            damaged.append({"object": mhash.hex(), "problem": describe(exc)})
            problems.append(f"manifest {mhash.hex()} (revision {head.revision}): {describe(exc)}")
            return report
        if manifest.device != db.device_id:
            problems.append(f"manifest names device {manifest.device}, not this device")
            return report
        reader = LogReader(sid, db.device_id, store, timeout)
        reader.on_page = lambda seq: ctx.progress("verify", sid, seq, manifest.last_seq)
        try:
            remote, bad = await reader.audit(manifest.entries(), stop=failing)
        except (TimeoutError, StoreError, OSError) as exc:  # the store failed: stop asking it (stop=failing)
            raise _StoreFailed(store.url, exc) from None
        for h, e, err in bad:
            if isinstance(err, NewerFormat):
                _newer(report, f"object {h.hex()} (seqs {e.first}..{e.last}): {err}")
                continue
            damaged.append({"object": h.hex(), "problem": describe(err)})
            problems.append(f"object {h.hex()} (seqs {e.first}..{e.last}): {describe(err)}")
        report["objects"] += reader.fetched
        report["operations"] = len(remote)
        local = await db.log_ops(sid, db.device_id, 0, manifest.last_seq)
        if not problems:
            local_enc = [dagcbor.encode(op_to_cbor(o)) for o in local]
            remote_enc = [dagcbor.encode(op_to_cbor(o)) for o in remote]
            if len(local_enc) != len(remote_enc):
                problems.append(
                    f"the store holds {len(remote_enc)} operations up to seq {manifest.last_seq}; "
                    f"this device has {len(local_enc)}"
                )
            else:
                bad_seqs = [o.seq for o, a, b in zip(local, local_enc, remote_enc) if a != b]
                if bad_seqs:
                    problems.append(
                        f"{len(bad_seqs)} operations differ from the local database (first at seq {bad_seqs[0]})"
                    )
        report["ok"] = not problems
        return report


def _newer(report: dict, said: str) -> None:
    """An object of this device's log (`said`: which, and its version) that a newer sessiond wrote (a home used
    by one, then by this older one): not damage, and nothing to push again; this device upgrades (the pull's
    `newer`, sync/errors.newer_format). Named in `problems` and in `newer`, with the fix in `upgrade`."""
    report.setdefault("newer", []).append(said)
    report["problems"].append(said)
    report["upgrade"] = NEWER_FIX
