"""What the relay's operator does with its folder while it serves or not (`sessiond serve accounts`,
`sessiond serve revoke`): list the accounts, and revoke one (a lost device) or restore it. Everything
is read from and written to DATA/ (accounts.py's layout); a serving relay reads the same files for every
request and login, so a revocation holds at once."""

from __future__ import annotations

import contextlib
import json
import os

from ..storage.clock import wall
from ..storage.fsutil import atomic_write
from .accounts import LOGINS, TOKEN_TTL, read_json, token_doc
from .follows import DIR as FOLLOWS
from .objects import usage


class NoSuchAccount(LookupError):
    pass


def _accounts(data_dir: str) -> dict[str, dict]:
    folder = os.path.join(data_dir, "accounts")
    out: dict[str, dict] = {}
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else ():
        if name.endswith(".json") and not name.startswith("."):
            doc = read_json(os.path.join(folder, name))
            if doc is not None:
                out[name[: -len(".json")]] = doc
    return out


def _live_tokens(data_dir: str, now: float) -> dict[str, list[tuple[str, dict]]]:
    """account -> [(token file, its doc)] of the tokens not expired."""
    folder = os.path.join(data_dir, "tokens")
    out: dict[str, list[tuple[str, dict]]] = {}
    for name in os.listdir(folder) if os.path.isdir(folder) else ():
        if name.startswith("."):
            continue
        path = os.path.join(folder, name)
        doc = token_doc(path, TOKEN_TTL)
        if doc is not None and doc["expires"] > now:
            out.setdefault(doc["account"], []).append((path, doc))
    return out


def list_accounts(data_dir: str) -> list[dict]:
    """Each account: id, label, created, revoked (a time or None), live tokens, last login (DATA/logins', or,
    for a login an earlier version noted nowhere, the newest live token's issue; None: never), bytes used
    (objects and heads, as the quota counts them) and heads created."""
    now = wall()
    tokens = _live_tokens(data_dir, now)
    objects = usage(os.path.join(data_dir, "pins")) if os.path.isdir(os.path.join(data_dir, "pins")) else {}
    head_root = os.path.join(data_dir, "headpins")
    heads = usage(head_root) if os.path.isdir(head_root) else {}
    out = []
    for acct, doc in _accounts(data_dir).items():
        live = tokens.get(acct, [])
        folder = os.path.join(head_root, acct)
        out.append(
            {
                "id": acct,
                "label": doc.get("label"),
                "created": doc.get("created"),
                "revoked": doc.get("revoked"),
                "tokens": len(live),
                "last_login": _last_login(data_dir, acct, live),
                "used": objects.get(acct, 0) + heads.get(acct, 0),
                "heads": len([n for n in os.listdir(folder) if not n.startswith(".")]) if os.path.isdir(folder) else 0,
            }
        )
    return out


def _last_login(data_dir: str, acct: str, live: list[tuple[str, dict]]) -> int | None:
    noted = (read_json(os.path.join(data_dir, LOGINS, acct)) or {}).get("at")
    times = [int(d.get("issued") or 0) for _, d in live]
    if isinstance(noted, (int, float)) and not isinstance(noted, bool):
        times.append(int(noted))
    return max(times, default=None)


def find_account(data_dir: str, which: str) -> str:
    """The account `which` names: its id, a unique start of it, or its label (unique)."""
    accounts = _accounts(data_dir)
    if which in accounts:
        return which
    by_label = [a for a, doc in accounts.items() if doc.get("label") == which]
    by_prefix = [a for a in accounts if len(which) >= 4 and a.startswith(which.lower())]
    found = by_label or by_prefix
    if len(found) == 1:
        return found[0]
    if not found and 0 < len(which) < 4 and any(a.startswith(which.lower()) for a in accounts):
        raise NoSuchAccount(f"give at least 4 characters of an account's id, not {which!r} (or its label)")
    if not found:
        raise NoSuchAccount(f"no account {which!r} on this relay (sessiond serve accounts lists them)")
    raise NoSuchAccount(f"{which!r} names {len(found)} accounts ({', '.join(found)}): give the id")


def revoke(data_dir: str, acct: str, *, undo: bool = False) -> dict:
    """Mark `acct` revoked and delete its tokens (or, `undo`, lift the mark; its device logs in again
    by itself). The mark is written first, so a login crossing this either sees it or has its token
    deleted here."""
    path = os.path.join(data_dir, "accounts", acct + ".json")
    doc = read_json(path)
    if doc is None:
        raise NoSuchAccount(f"no account {acct!r} on this relay (sessiond serve accounts lists them)")
    if undo:
        doc.pop("revoked", None)
    else:
        doc["revoked"] = doc.get("revoked") or int(wall())
    atomic_write(path, json.dumps(doc).encode(), 0o600)
    deleted = 0
    if not undo:
        with contextlib.suppress(FileNotFoundError):  # what its feed followed (follows.py): metadata, gone
            os.unlink(os.path.join(data_dir, FOLLOWS, acct))
        for token_path, _ in _live_tokens(data_dir, 0).get(acct, []):
            try:
                os.unlink(token_path)
                deleted += 1
            except FileNotFoundError:
                pass
    return {"id": acct, "label": doc.get("label"), "revoked": doc.get("revoked"), "tokens_deleted": deleted}
