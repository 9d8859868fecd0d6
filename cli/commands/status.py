"""`sessiond status`: what the daemon says of itself, as lines for a person (`--json`: its answer as it is)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...client import Client, ClientError, DaemonNotRunning, UnsafeSocket
from ..errors import stuck
from ..output import emit, for_home, safe, short, table, when

SHOWN = 5  # sessions named by each of status's lists of failures; the others counted, with where to see them


def _more(listed: dict, what: str, home: str | None) -> list[str]:
    """The line that says how many sessions `listed` holds past the SHOWN named, and the command that names all."""
    if len(listed) <= SHOWN:
        return []
    said = f"  and {len(listed) - SHOWN} more session(s) {what}: `sessiond status --sessions`"
    return [for_home(said, home)]


def _store_said(info: Mapping[str, Any], home: str | None) -> list[str]:
    """status's lines on the store, under its `store:` line: a Kubo store's pinning service, and the one store's
    failure (its pushes failing, a folder away); a mirror's stores are said each on its own, after `pushes:`."""
    stores = info.get("stores") or []
    lines = []
    if len(stores) == 1 and stores[0].get("reachable") is False and (err := stores[0].get("last_error")):
        lines.append(f"  failing: {for_home(err, home)}")
    for st in stores:  # a pinning service beside a Kubo store
        if pin := st.get("pinning"):
            lines.append(
                f"pinning:  {pin['service']}: {pin['pinned']} pinned, {pin['pending']} waiting"
                + (f"; last error: {short(for_home(err, home), 80)}" if (err := pin.get("last_error")) else "")
            )
            if fix := pin.get("fix"):  # (the error line cut short: what to do on a line of its own, whole)
                lines.append(f"  fix: {for_home(fix, home)}")
    return lines


def _providers_said(info: Mapping[str, Any]) -> list[str]:
    """status's lines on the providers this device configures and its OpenAI-compatible endpoint (the answer's
    fields beyond the Status model's)."""
    more: dict[str, Any] = dict(info)
    lines = []
    providers = more.get("providers") or {}
    if providers.get("names"):
        lines.append(
            "provider: "
            + ", ".join(f"{n} (default)" if n == providers.get("default") else n for n in providers["names"])
        )
    openai = more.get("openai") or {}
    if openai.get("base_url"):
        lines.append(f"openai:   {openai['base_url']} (key in {openai.get('api_key_file')})")
    return lines


def cmd_status(args) -> int:
    try:  # a status is answered at once: a daemon silent for `--timeout` seconds is stuck, not busy
        info = Client(args.home, timeout=args.timeout).status()
    except (DaemonNotRunning, UnsafeSocket):
        raise
    except ClientError as exc:
        raise stuck(args.home, exc) from None
    counts = info["counts"]
    sync = info.get("sync", {})
    pending = sum(s["pending"] for s in sync.values())
    # the daemon's texts, any command they quote given for this home (the answer itself stays as it is: --json)
    errors = {
        sid: for_home(s["last_error"], args.home) for sid, s in sync.items() if s.get("last_error") and s["pending"]
    }
    pull_errors = {sid: for_home(s["pull_error"], args.home) for sid, s in sync.items() if s.get("pull_error")}
    waiting = {sid: s["waiting_for"] for sid, s in sync.items() if s.get("waiting_for")}
    lost = info.get("database", {}).get("lost")
    lines = [
        f"sessiond {info['version']} (pid {info['pid']}), up {info['uptime']:.0f}s",
        f"socket:   {info['socket']}",
        f"home:     {info['home']}",
        f"store:    {info.get('store')}",
        *_store_said(info, args.home),  # (under the store line: said below the provider's, it read as the provider's)
        f"device:   {info['device_id']}",
        *_providers_said(info),
        *([f"database: PROBLEM: {lost['message']}", f"  fix: {for_home(lost['fix'], args.home)}"] if lost else []),
        (
            f"sessions: {counts['sessions']} ({counts['active']} active, {counts['paused']} paused, "
            f"{counts['ended']} ended), {counts['chats']} chats, {counts['messages']} messages"
            if counts
            else "sessions: not read (the database is not read while it is overwritten in place: above)"
        ),
        (
            f"sync:     {pending} change(s) waiting to be pushed"
            if pending
            else "sync:     nothing waiting to be pushed"
            if pull_errors
            else "sync:     everything pushed"
            if counts  # (none: the database not read, nor what waits in it)
            else "sync:     not read (above)"
        )
        + (f"; {len(pull_errors)} session(s) cannot pull (below)" if pull_errors else "")
        + (f"; {len(waiting)} session(s) wait for a device away through a rekey (below)" if waiting else ""),
    ]
    if "pushes" in info:
        p = info["pushes"]
        lines.append(f"pushes:   {p['started']} started, {p['active_sessions']} session(s) busy, gap {p['gap']:g}s")
    stores = info.get("stores") or []
    if len(stores) > 1:  # a mirror: how each of its stores is doing
        for st in stores:
            reachable = st.get("reachable")
            state = (
                "reachable" if reachable else "not used yet" if reachable is None else st.get("failure") or "failing"
            )
            lines.append(f"  {st['url']}: {state}, {st['pending']} write(s) waiting (objects and heads)")
            if err := st.get("last_error"):  # whole: what failed and what mends it come after the object's id
                lines.append(f"    last error: {safe(for_home(err, args.home))}")
    if args.sessions:
        rows = [
            [
                sid,
                s["state"],
                s["pending"],
                s["head_rev"],
                when(s.get("last_push")),
                short(
                    for_home(
                        s.get("last_error") or (f"pull: {s['pull_error']}" if s.get("pull_error") else ""), args.home
                    ),
                    50,
                ),
            ]
            for sid, s in sync.items()
        ]
        lines.append(table(rows, ["session", "state", "pending", "revision", "last push", "last error"]))
    for sid, err in list(errors.items())[:SHOWN]:
        lines.append(f"  {sid}: {err}")
    lines += _more(errors, "whose push failed", args.home)
    for sid, err in list(pull_errors.items())[:SHOWN]:
        lines.append(f"  {sid}: cannot pull: {err}")
    lines += _more(pull_errors, "that cannot pull", args.home)
    for sid, devices in list(waiting.items())[:SHOWN]:
        said = (
            f"  {sid}: waiting for device(s) {', '.join(devices)}: not yet on the session's latest key; "
            "what they wrote arrives once they are back and have taken it (a device that will not come back: "
            f"`sessiond rekey {sid} --drop DEVICE`, run here or on another writer; one that has its messages "
            "keeps them for everyone)"
        )
        lines.append(for_home(said, args.home))  # the command as it runs here
    lines += _more(waiting, "waiting for a device away through a rekey", args.home)
    emit(args, info, "\n".join(lines))
    return 0
