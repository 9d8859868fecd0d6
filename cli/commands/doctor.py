"""`doctor`: what is wrong with this home, and the command that fixes each thing.

With a daemon running, it answers GET /v1/doctor (the home's files, then each store, the clock, the
pushes and every session's stored copy). Without one, the CLI checks what needs no daemon itself (the
home's permissions and key files, daemon/doctor_files.py; a home an older sessiond used that cannot start
without --store, daemon/storerecord.py) and says what it could not check. Either way
the CLI adds the service's unit, which it wrote (service.py unit_store: one that names a store, or runs python
without -P)."""

from __future__ import annotations

import os
from typing import Any

from ...api.locate import socket_path
from ...client import DaemonNotRunning
from ...daemon.doctor_files import check_database, check_home, check_wal_of_another, finding
from ...daemon.doctor_folders import check_folders, daemon_folders, writable_folders
from ...daemon.home import Config, Home, HomeError, resolve_home
from ...daemon.storerecord import store_not_recorded
from ..connect import client
from ..errors import EXIT_ERROR
from ..output import emit, for_home, safe
from . import Commands
from .service import unit_folders, unit_store

MARK = {"ok": "ok     ", "warn": "WARN   ", "problem": "PROBLEM"}


def register(commands: Commands) -> None:
    p = commands.add("doctor", cmd_doctor, "check permissions, keys, stores, clock, pushes and sessions; say the fix")
    p.add_argument(
        "--no-verify", dest="verify", action="store_false", help="skip verifying every session against the store"
    )


def _store_record(home: str) -> list[dict]:
    """A problem if a start without --store would be refused: the home's sessions were pushed to a store an
    older sessiond did not record (daemon/storerecord.py)."""
    try:
        wanted = Config.load(home).store
    except HomeError:
        return []  # a config.toml the start refuses: that refusal says what is wrong with it
    why = store_not_recorded(Home(home), wanted)
    if why is None:
        return []
    return [
        finding("store", "problem", why, f"sessiond start --home {home} --store URL (the store it was started with)")
    ]


def _folders(home: str) -> list[dict]:
    """doctor_folders' check with no daemon: the store the home remembers (else its config's), the socket's folder."""
    try:
        store = Home(home).remembered_store() or Config.load(home).store or Home(home).default_store
    except HomeError:
        store = None  # (a damaged store-url or config.toml: the start's refusal says so)
    try:
        socket: str | None = socket_path(home)
    except HomeError:
        socket = None
    return check_folders(home, daemon_folders(home, store, socket))


def cmd_doctor(args) -> int:
    home = resolve_home(args.home)
    report: dict[str, Any]
    try:
        report = {**client(args).doctor(verify=args.verify), "daemon": True}
    except DaemonNotRunning:
        findings = check_home(home) + _folders(home)
        if os.path.isdir(home):
            findings += check_wal_of_another(home) + check_database(home) + _store_record(home)
        findings.append(
            finding(
                "daemon",
                "warn",
                "no daemon is running: only the home's files were checked (not the stores, the clock, "
                "the pushes or the sessions)",
                f"sessiond start --home {home}",
            )
        )
        report = {"ok": not any(f["level"] == "problem" for f in findings), "findings": findings, "daemon": False}
    units = writable_folders(unit_folders(home))  # the unit's folder, which the CLI made: checked here too
    if units:
        report["findings"] = [f for f in report["findings"] if (f["check"], f["level"]) != ("folders", "ok")] + units
        report["ok"] = False
    stale = unit_store(home)  # the service's unit, which the CLI wrote: checked here, daemon or not
    if stale is not None:
        report["findings"].append(stale)
        report["ok"] = report["ok"] and stale["level"] != "problem"
    lines = []
    width = max((len(f["check"]) for f in report["findings"]), default=0)  # each message in one column
    for f in report["findings"]:
        lines.append(
            f"{MARK.get(f['level'], f['level'])}  {f['check']:<{width}} {safe(for_home(f['message'], args.home))}"
        )
        if f["fix"] and f["level"] != "ok":
            lines.append(f"{'':{width + 11}}fix: {safe(f['fix'])}")
    problems = sum(f["level"] == "problem" for f in report["findings"])
    warnings = sum(f["level"] == "warn" for f in report["findings"])
    lines.append(
        ("no problems found" if not problems else f"{problems} problem(s) found")
        + (f"; {warnings} warning(s)" if warnings else "")
    )
    emit(args, report, "\n".join(lines))
    return 0 if report["ok"] else EXIT_ERROR
