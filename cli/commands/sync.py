"""Sync: `sync` (push and pull now), `verify` (the store's copy against this device), `gc` (store objects no
longer referenced). The sharing commands, registered between them, are sharing.py's."""

from __future__ import annotations

from ...storage.clock import wait_said
from .. import time_left
from ..connect import client
from ..errors import EXIT_ERROR
from ..options import YEARS_10, duration_in, seconds_up_to
from ..output import emit, for_home
from ..progress import Progress, StoreWaits
from . import Commands, sharing


def register(commands: Commands) -> None:
    p = commands.add("sync", cmd_sync, "push (and pull) now")
    p.add_argument("id", nargs="?", help="only this session, by its id (default: every one)")
    p.add_argument("--wait", action="store_true", help="wait until everything is pushed")
    p.add_argument(
        "--timeout",
        type=seconds_up_to(3600),
        default=60.0,
        help="how long to wait for the daemon, in seconds from the command's start: 0 to 3600 (default 60; s, m or h "
        "may follow: 5m)",
    )
    p = commands.add("verify", cmd_verify, "check the store's copy of each session against this device")
    p.add_argument("id", nargs="?", help="only this session, by its id (default: every one)")

    sharing.register(commands)  # (here: their place in `sessiond --help`, between `verify` and `gc`)
    p = commands.add("gc", cmd_gc, "free store objects this device's logs no longer reference")
    p.add_argument("--dry-run", dest="dry_run", action="store_true", help="count what would be freed; free nothing")
    p.add_argument(
        "--grace",
        type=duration_in(0, YEARS_10),
        help="only objects let go at least this long ago, with its unit (e.g. 12h, 7d; 0 for all; at most 10 years; "
        "default 24h)",
    )


def _trying_again(left: float) -> str:
    """What `sync --wait` does while a push or a pull fails: `left`, the seconds left of its --timeout."""
    return (
        f"trying again until --timeout ({left:.0f} s left; Ctrl-C stops waiting, the daemon goes on trying by itself)"
    )


def cmd_sync(args) -> int:
    c = client(args)
    if args.wait:  # a first push, or a long one: its progress from the daemon, on a terminal
        # --timeout counts from the command's start, as whoever runs it counts it (its imports took ~0.4 s of it)
        timeout = time_left(args.timeout)
        waits = StoreWaits(c, args.id, timeout, _trying_again)
        res = None
        try:
            with Progress(c, {"push"}, {args.id} if args.id else None):
                # (counted again: opening the progress's and the store's event streams took some of it)
                res = c.sync(args.id, wait=True, timeout=time_left(args.timeout))
        finally:
            waits.close(expected=res is not None and any(st.get("retry_after") for st in res["sessions"].values()))
    else:
        res = c.sync(args.id, wait=False, timeout=args.timeout)
    lines = []
    asked_to_wait = []  # sessions whose store asked (Retry-After) to wait past this command's timeout
    for sid, st in res["sessions"].items():
        waiting = bool(st.get("retry_after") and st["pending"])
        if waiting:
            asked_to_wait.append(st.get("retry_in") or 0)
        lines.append(
            f"{sid}: {st['state']}, revision {st['head_rev']}, {st['pending']} pending"
            + (
                f", last error: {for_home(st['last_error'], args.home)}"
                if st.get("last_error") and st["pending"]
                else ""
            )
            + (f", next try in {wait_said(st.get('retry_in', 0))} as the store asked (Retry-After)" if waiting else "")
            + (f", cannot pull: {for_home(st['pull_error'], args.home)}" if st.get("pull_error") else "")
            + (f", waiting for {', '.join(st['waiting_for'])} (away through a rekey)" if st.get("waiting_for") else "")
        )
    if args.wait and res.get("stopping"):  # cut short by the daemon's stop: not the store's doing
        lines.append(
            "the daemon is stopping: not everything could be "
            + ("pulled" if res["pushed"] else "pushed")
            + " before it stopped; it goes on once the daemon runs again "
            + for_home("(`sessiond start`, then `sessiond sync --wait` to wait for it)", args.home)
        )
    elif args.wait:
        lines.append(
            "all pushed and pulled"
            if res["complete"]
            else "not everything could be pushed: the store asked (Retry-After) to wait "
            f"{wait_said(max(asked_to_wait))} before the next try, past the end of --timeout {args.timeout:g} s; the "
            "daemon tries again then by itself "
            + for_home(f"(or run `sessiond sync --wait --timeout {max(asked_to_wait) + 30:.0f}`)", args.home)
            if not res["pushed"] and asked_to_wait
            else "not everything could be pushed yet (see errors above)"
            if not res["pushed"]
            else "everything is pushed, but not everything could be pulled (see errors above)"
        )
    else:
        lines.append("sync requested")
    emit(args, res, "\n".join(lines))
    return 0 if res["complete"] or not args.wait else EXIT_ERROR


def cmd_verify(args) -> int:
    c = client(args)
    with Progress(c, {"verify"}, {args.id} if args.id else None):
        rep = c.verify(args.id)
    lines = []
    for s in rep["sessions"]:
        if s["ok"] and s["revision"] is None and s.get("devices"):  # no log of its own: a follower's
            n = s["devices"]
            lines.append(
                f"ok      {s['session']}: {s['operations']} operations of {n} other device{'s' * (n != 1)} checked,"
                " none written here"
            )
        elif s["ok"]:
            lines.append(
                f"ok      {s['session']}: revision {s['revision']}, {s['objects']} objects, "
                f"{s['operations']} operations" + (f", {s['unpushed']} not yet pushed" if s["unpushed"] else "")
            )
        elif s.get("store_failure"):  # the store failed: nothing is known of the session, it is not damaged
            lines.append(f"UNCHECKED {s['session']}: {for_home(s['store_failure'], args.home)}")
        else:
            lines.append(f"FAILED  {s['session']}:")
            lines += [f"          {for_home(p, args.home)}" for p in s["problems"]]
            if s.get("repair"):
                lines.append(f"          (to repair: {for_home(s['repair'], args.home)})")
            if s.get("upgrade"):  # written by a newer sessiond: not damaged, this device upgrades
                lines.append(f"          (newer, not damaged: {for_home(s['upgrade'], args.home)})")
        for st in s.get("stores", []):  # a mirror's store that could not be asked whether it holds it all
            if st.get("not_checked"):
                lines.append(f"          store {st['url']} not checked: {for_home(st['not_checked'], args.home)}")
        # another device's log in some of a mirror's stores, not all: each device pushes to the stores it names
        lines += [f"          note: {for_home(n, args.home)}" for n in s.get("notes", ())]
        if s.get("waiting"):  # writers away through a rekey, whose logs are not here to check yet
            lines += [f"          not yet checked: {for_home(w, args.home)}" for w in s["waiting"]]
    if not rep["sessions"]:
        lines.append("no sessions to verify")
    emit(args, rep, "\n".join(lines))
    return 0 if rep["ok"] else EXIT_ERROR


def cmd_gc(args) -> int:
    res = client(args).gc(grace=args.grace, dry_run=args.dry_run)
    verb = "would free" if res["dry_run"] else "freed"
    lines = [f"{verb} {res['objects']} object(s), {res['bytes']} bytes; {res['kept']} kept (young or referenced)"]
    for st in res["stores"]:
        how = st["how"]  # "deleted" or "unpinned": what a real run does; else why the store could not be asked
        if res["dry_run"] and how in ("deleted", "unpinned"):
            how = f"would be {how}"
        lines.append(f"  {st['store']}: {st['objects']} object(s), {st['bytes']} bytes ({how})")
        lines += [f"    {e}" for e in st.get("errors", []) + st.get("held", [])]
    if res.get("kept_in_store"):  # (what deletes here kept for frozen logs: never freed, said at every run)
        lines.append("kept in the store for good by deletes here (never freed):")
        lines += [
            f"  {k['session']}: {k['objects']} object(s) in {k['store']}: {k['why']}" for k in res["kept_in_store"]
        ]
    emit(args, res, "\n".join(lines))
    # a store that failed (its sessions' objects kept, or the store not opened): what was due is not freed, and a
    # script running gc learns it by the exit code, as verify's and doctor's do
    failed = any(st.get("errors") or st["how"].startswith("cannot open") for st in res["stores"])
    return EXIT_ERROR if failed else 0
