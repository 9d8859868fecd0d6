"""`sessiond doctor` in the daemon (GET /v1/doctor): the home's files (doctor_files.py), then what only
the running daemon can see: each store it syncs through (reachable, writes accepted, a small object
written, read back and checked), the clock against a store that reports time, the pushes still to do
and why the last one failed, and the sessions whose stored copy fails `verify`.

Each finding is {"check", "level", "message", "fix"} (doctor_files.finding); the report's `ok` is
false when any finding is a problem.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from ..storage.dbfile import OVERWRITTEN
from ..storage.errors import held_said
from ..storage.redact import shown_url
from ..stores import Store, StoreError
from ..stores.bounded import bounded
from ..stores.cid import digest
from ..stores.errors import LyingServer, NoRelayAccount, SlowAnswer, StoreFull, describe_failure, failing, way_on
from ..sync.errors import describe
from ..sync.locations import relay_account_fix
from ..sync.mirror import MirrorStore
from .doctor_files import check_home, finding
from .doctor_fixes import for_home, lying_head_fix, pull_fix, relay_account, settled_fix
from .doctor_folders import check_folders, daemon_folders

if TYPE_CHECKING:
    from .server import Daemon

# The object the round trip writes: always the same bytes, so checking again and again stores one
# object in all, not one more each time (a store is content-addressed: the write is done all the same).
PROBE = b"sessiond doctor: a round trip through the store\n"
# The most seconds doctor waits for a call of a store's check, whatever store_timeout says (up to 240): doctor
# answers within the CLI's wait (300 s), verify after it
CHECK_WAIT_MAX = 60.0
SKEW_WARN = 30.0  # seconds the clocks may differ before a warning (Date has one-second resolution)
SKEW_PROBLEM = 300.0  # ... before a problem: expiries of share codes and checkpoint times go wrong


async def diagnose(daemon: Daemon, *, verify: bool = True) -> dict:
    findings = check_home(daemon.home.path)
    home = daemon.home
    findings += check_folders(home.path, daemon_folders(home.path, daemon.syncer.ctx.store.url, home.socket))
    lost = await daemon.db.c.file_lost()
    if lost is not None:
        fix = daemon.db.c.file.fix(lost)
        findings.append(finding("database", "problem", daemon.db.c.file.said(lost), fix))
    else:
        version = await daemon.db.schema_version()  # open and in use: checked by its start, not read again here
        findings.append(finding("database", "ok", f"{daemon.db.path} is open (schema version {version})"))
    ctx = daemon.syncer.ctx
    # the database overwritten in place, no read is answered (Connections.refuse_reads): what needs none, and that
    overwritten = daemon.db.c.file.overwritten
    urls = [ctx.store.url] if overwritten else [ctx.store.url, *await daemon.db.remote_store_urls()]
    down: dict[str, str] = {}  # stores that failed their check: verify does not ask them again
    # each store's wait is the daemon's (store_timeout), up to CHECK_WAIT_MAX; the stores are checked at once, so
    # that doctor answers within about one wait however many of them hang (findings in the order of the stores)
    wait = min(ctx.timeout, CHECK_WAIT_MAX)
    stores = [(url, ctx.open_store(url)) for url in dict.fromkeys(urls)]
    checked = await asyncio.gather(
        *(
            check_stores(st, own=url == ctx.store.url, down=down, home=daemon.home.path, timeout=wait)
            for url, st in stores
        )
    )
    for found in checked:
        findings += found
    if overwritten:
        findings.append(unread(daemon))
    else:
        findings += await check_pushes(daemon)
        if verify:
            findings += await check_verify(daemon, down)
    for f in findings:
        f["fix"] = for_home(f["fix"], daemon.home.path)
    return {"ok": not any(f["level"] == "problem" for f in findings), "findings": findings}


def unread(daemon: Daemon) -> dict:
    """doctor's finding of what it did not check with the database overwritten in place: the pushes, the stores of
    shared sessions and verify, which read it."""
    return finding(
        "push",
        "warn",
        f"not checked: the pushes, the stores of shared sessions and verify read {daemon.db.path}, which is not read"
        " while it is overwritten in place (the database finding above)",
        daemon.db.c.file.fix(OVERWRITTEN),
    )


async def check_stores(store: Store, *, own: bool, down: dict[str, str], home: str, timeout: float) -> list[dict]:
    """check_store of `store`, or of each store of a mirror: a write through the mirror succeeds when one of
    its stores takes it (the others' outboxes keep it), so the mirror as a whole would pass with a store
    down. The mirror is put in `down` only when none of its stores answers (verify reads any of them)."""
    if not isinstance(store, MirrorStore):
        return await check_store(store, own=own, down=down, home=home, timeout=timeout) + check_pinning(store)
    out: list[dict] = []
    failed: dict[str, str] = {}
    checked = await asyncio.gather(
        *(check_store(st, own=own, down=failed, home=home, mirror=True, timeout=timeout) for st in store.stores)
    )
    for st, found in zip(store.stores, checked, strict=True):
        out += found + check_pinning(st)
    if failed and len(failed) == len(store.stores):
        down[store.url] = "; ".join(failed.values())
    return out


async def check_store(
    store: Store,
    *,
    own: bool,
    down: dict[str, str] | None = None,
    home: str = "",
    mirror: bool = False,
    timeout: float,
) -> list[dict]:
    """Reachable, writes accepted, the probe object read back verified; then the clock. A store that
    fails to answer is put in `down` (its URL -> what is wrong). `mirror`: `store` is one of a mirror's,
    checked on its own (what it misses waits in its outbox and is sent once it answers). `timeout`: the
    seconds each of its calls may take, as long as the daemon's own (config.toml's store_timeout): a slow
    store the daemon waits for is not said to be down, nor one it gives up on said to answer."""
    url = shown_url(store.url)  # as shown: without its credentials
    if mirror:
        which = "this daemon's mirror store" if own else "a mirror store of shared sessions"
    else:
        which = "this daemon's store" if own else "the store of shared sessions"
    fix_down = (
        "sessiond status  # what it missed waits in its outbox and is sent once it answers again"
        if mirror
        else "sessiond sync --wait  # once the store answers again: pushes what waited"
    )
    try:
        if store.read_only:
            await bounded(store.has(digest(PROBE)), timeout)  # a read: reachable
            out = [
                finding(
                    "store", "ok", f"{which} {url} answers; it is read-only (a gateway), so only reads were checked"
                )
            ]
        else:
            h = await bounded(store.put(PROBE), timeout)  # (an answer still arriving: a SlowAnswer, bounded's)
            lie = settled_fix(LyingServer(""), url, home)
            if h != digest(PROBE):
                return [finding("store", "problem", f"{which} {url} stored the probe under another hash", lie)]
            back = await bounded(store.get(h), timeout)  # get() verifies the bytes against the hash
            if back != PROBE:
                return [finding("store", "problem", f"{which} {url} returned other bytes", lie)]
            out = [finding("store", "ok", f"{which} {url}: a small object written, read back and verified")]
    except TimeoutError:
        if down is not None:
            down[url] = f"the store {url} is not answering (no answer within {timeout:g} s in doctor's check)"
        return [finding("store", "problem", f"{which} {url} did not answer within {timeout:g} s", fix_down)]
    except (StoreError, OSError) as exc:
        if down is not None and failing(exc) and not isinstance(exc, StoreFull):  # a full store still reads
            down[url] = way_on(describe_failure(exc, url), not own)  # (not own: sessions imported through it)
        if not own and isinstance(exc, NoRelayAccount):  # a relay sessions were imported through: the import's fix
            return [
                finding("store", "problem", f"{which} {url}: {describe(exc)}", relay_account(relay_account_fix(url)))
            ]
        said = way_on(describe(exc), not own)  # a move of this device's store does not move imported sessions
        if isinstance(exc, SlowAnswer):  # answering, too slowly for the daemon's wait: a longer one mends it too
            fix_down += "; or give it longer: store_timeout in config.toml, then sessiond stop && sessiond start"
        return [finding("store", "problem", f"{which} {url}: {said}", settled_fix(exc, url, home) or fix_down)]
    return out + [check_clock(store)]


def check_pinning(store: Store) -> list[dict]:
    """The pinning service beside a Kubo store (config.toml's pinning_service): a warning while its last
    try failed. A failing service fails no push (the pins wait for its next success), so nothing else
    would say that the objects are pinned nowhere but the node."""
    pinning = store.service_status().get("pinning")
    if not isinstance(pinning, dict):
        return []
    where = f"the pinning service {pinning['service']}"
    if pinning["last_error"] is None:
        return [finding("pinning", "ok", f"{where}: {pinning['pinned']} pin(s) made, {pinning['pending']} waiting")]
    return [
        finding(
            "pinning",
            "warn",
            f"{where} failed its last try; {pinning['pending']} object(s) wait to be pinned there (the pushes"
            f" go on, pinned in the node alone): {pinning['last_error']}",
            pinning["fix"],
        )
    ]


def check_clock(store: Store) -> dict:
    clock = store.server_clock()
    if clock is None:
        return finding("clock", "ok", f"clock not checked: {shown_url(store.url)} reports no time (a folder store)")
    theirs, ours = clock
    skew = ours - theirs
    ahead = "ahead of" if skew > 0 else "behind"
    msg = f"this machine's clock is {abs(skew):.0f} s {ahead} {shown_url(store.url)}'s"
    if abs(skew) <= SKEW_WARN:
        return finding("clock", "ok", msg + " (within a second or two is normal)")
    fix = "sudo timedatectl set-ntp true  # keep the clock set from the network"
    level = "problem" if abs(skew) > SKEW_PROBLEM else "warn"
    return finding(
        "clock", level, msg + ": session and share-code expiries and message and checkpoint times will be off", fix
    )


async def check_pushes(daemon: Daemon) -> list[dict]:
    states = await daemon.syncer.status()
    home = daemon.home.path
    out = []
    waiting = 0
    unpushed: dict[tuple[str, str | None], list[tuple[str, int]]] = {}  # (last error, fix) -> [(session, pending)]
    for sid, st in sorted(states.items()):
        # the store the session syncs through: the one it was imported from (which a move of this device's own
        # does not leave: the fixes say so), else this daemon's
        imported = None
        if st.get("pull_error") or (st.get("pending") and st.get("last_error")):
            remote = await daemon.db.remote(sid)
            imported = remote["store_url"] if remote else None
        if st.get("pull_error"):
            relay_fix = daemon.syncer.pull_failure_fix(sid)
            failure = daemon.syncer.pull_failure(sid)
            # a store failing in a way waiting does not mend (a revoked account, full, ...): what mends it, as a
            # push's; a relay refusing this device for want of an account there: its invite (pull_fix)
            settled = (
                settled_fix(failure[0], shown_url(imported or failure[1]), home, own=not imported)
                if failure and not relay_fix
                else None
            )
            kind = daemon.syncer.pull_failure_kind(sid)
            out.append(
                finding(
                    "pull",
                    "problem",
                    f"session {sid}: cannot pull what other devices wrote: {st['pull_error']}",
                    settled
                    or pull_fix(
                        kind, sid, relay_fix=relay_fix, own=not imported, fork=daemon.syncer.pull_failure_forks(sid)
                    ),
                )
            )
        if not st.get("pending"):
            continue
        if st.get("last_error"):
            url = shown_url(imported or daemon.syncer.ctx.store.url)
            fix = settled_fix(daemon.syncer.last_failure(sid), url, home, own=not imported)
            unpushed.setdefault((st["last_error"], fix), []).append((sid, st["pending"]))
        else:
            waiting += 1
    # left out of a rekey, holding writes no other device has (a pull error, while there is one, says so)
    for sid, held in sorted((await daemon.db.all_held_here()).items()):
        if not states.get(sid, {}).get("pull_error"):
            said = f"session {sid} was rekeyed without this device, and {held_said(held)}"
            out.append(finding("pull", "problem", said, pull_fix("revoked", sid)))
    # sessions that failed alike (a store down: every one of them) are one finding, naming each
    for (error, fix), failed in unpushed.items():
        if len(failed) == 1:
            ((sid, pending),) = failed
            message = f"session {sid}: {pending} change(s) not pushed; last error: {error}"
            retry = f"sessiond sync --wait {sid}"
        else:
            message = (
                f"{len(failed)} sessions: {sum(p for _, p in failed)} change(s) not pushed; last error: {error}"
                f" (sessions: {', '.join(sid for sid, _ in failed)})"
            )
            retry = "sessiond sync --wait"
        out.append(finding("push", "problem", message, fix or retry))
    out += [mend_finding(sid, mend) for sid, mend in sorted(daemon.syncer.head_mends().items())]
    if waiting:
        out.append(finding("push", "ok", f"{waiting} session(s) have changes being pushed now"))
    if not out:
        out.append(finding("push", "ok", "every session is pushed"))
    return out


def mend_finding(sid: str, mend: dict) -> dict:
    """Doctor's warning of a head a sync's repair published again (Syncer.head_mends), kept until a sync's check
    finds the store holding the log whole; while the checks since left a store unchecked (`deferred`: a mirror's
    store busy with a write at each, or not answering), it says so: no look at the store yet, not a loss found."""
    served = f" (revision {mend['served']})" if mend["served"] is not None else ""
    said = (
        f"session {sid}: the store {shown_url(mend['store'])} served this device's head {mend['how']}{served},"
        f" this device having published revision {mend['published']}; a sync published it again above it"
        " (its host restored a backup, or the store lies: found so again, move to a store you trust)"
    )
    if (deferred := mend.get("deferred")) is None:
        return finding("push", "warn", said, f"sessiond verify {sid}  # checks what the store serves now")
    ago = max(0, round(time.time() - deferred["at"]))
    return finding(
        "push",
        "warn",
        f"{said}; whether the store holds it now is not checked yet: the repair check was deferred at the last"
        f" {deferred['checks']} sync(s), the last {ago} s ago, as {deferred['why']} at {shown_url(deferred['store'])}",
        f"sessiond sync --wait {sid}  # checks again (a write under way waited for, the store timeout at most); "
        f"sessiond verify {sid} checks what the store serves now",
    )


async def check_verify(daemon: Daemon, down: dict[str, str] | None = None) -> list[dict]:
    """Every session verified against its store, except in a store that failed (`down`, from the store
    checks, or found failing on the way): its sessions are one finding, not one "damaged" each."""
    t = time.monotonic()
    reported = set(down or {})
    report = await daemon.syncer.verify(down=dict(down or {}))
    out = []
    notes = []  # another device's log in some of a mirror's stores, not all: no problem (sync/verify.py)
    unchecked: dict[str, list[str]] = {}
    for s in report["sessions"]:
        notes += [finding("verify", "ok", f"session {s['session']}: {n}") for n in s.get("notes", ())]
        if s.get("store_failure"):
            unchecked.setdefault(s["store_failure"], []).append(s["session"])
            continue
        problems = [p for p in s["problems"] if not p.startswith("not pushed yet")]  # the push check says so
        if not problems:
            continue
        fix = f"sessiond sync --wait {s['session']} && sessiond verify {s['session']}"
        if any(p.startswith("revoked:") for p in problems):  # left out of a rekey: a sync pulls nothing new
            fix = pull_fix("revoked", s["session"])
        elif s.get("store_lies"):  # pushed again and lied about again: another sync is no fix
            remote = await daemon.db.remote(s["session"])
            imported = remote["store_url"] if remote else None
            back = s.get("store_lies_how") == "rolled back"
            fix = lying_head_fix(shown_url(s["store_lies"]), own=not imported, rolled_back=back, sid=s["session"])
        elif s.get("elsewhere"):  # a store of a mirror lost what other devices wrote: they send it again
            fix += f"  # and `sessiond sync --wait {s['session']}` on device(s) {', '.join(s['elsewhere'])}"
        out.append(finding("verify", "problem", f"session {s['session']} fails verify: {'; '.join(problems)}", fix))
    for why, sids in unchecked.items():
        url = next(s["store"] for s in report["sessions"] if s.get("store_failure") == why)
        out.append(
            finding(
                "verify",
                "warn" if url in reported else "problem",  # a store check above already counts it
                f"{len(sids)} session(s) not verified, their store failing ({why}): "
                + ", ".join(sids[:5])
                + (", ..." if len(sids) > 5 else ""),
                "sessiond doctor  # again once the store answers",
            )
        )
    if not out:
        n = len(report["sessions"])
        out.append(
            finding("verify", "ok", f"{n} session(s) verified against the store in {time.monotonic() - t:.1f} s")
        )
    return out + notes
