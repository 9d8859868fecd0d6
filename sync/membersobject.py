"""The members object's format (docs/FORMATS.md §6): its entries, the fields a newer sessiond wrote kept as
read, and its sealing under the cap every reader holds it to. sync/members.py reads and writes the slot."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from ..storage.errors import session_path
from . import dagcbor
from .crypto import DecryptError, encrypt, members_key, open_unpadded
from .errors import ImportError_
from .frozen import is_frozen

log = logging.getLogger("sessiond.sync")

T_MEMBERS = "sessiond/members"
MEMBERS_VERSION = 1  # a members object's "v" (fields are added under it: docs/FORMATS.md §6)
SALT_LEN = 14
# A members object's cap, sealed (docs/FORMATS.md §6): ~4,000 writers with device ids of ~20 characters
# (an entry is ~60 bytes), far past any session's; a quarter of a stored object's 1 MiB. Every device reads
# the object whole and keeps what it lists, and any writer can write it: past the cap, a device refuses to
# write it (members_full) and a reader refuses it unread, as damage.
MEMBERS_MAX_BYTES = 256 << 10
SEQ_MAX = (1 << 63) - 1  # a log's seqs are SQLite integers: a seq past this names no log's end


def seal_small(plain: bytes, key: bytes) -> bytes:
    return encrypt(plain, key, pad=False)[0]


def seal_members(
    sid: str, plain: bytes, key: bytes, writers: int, *, kept: int | None = None, frozen: int | None = None
) -> bytes:
    """A members object of `writers` writers (`plain`, encoded) sealed under `key`; refused (members_full),
    nothing written, if it would be past MEMBERS_MAX_BYTES, which every reader refuses. `kept`: it is a rekey's
    notice, with a box for each of `kept` writers kept (sync/rekey.py), which the refusal names; `frozen`: it is
    the new slot a rekey will write, its writers and `frozen` frozen logs (rekey.py measures it first)."""
    ct = seal_small(plain, key)
    if len(ct) > MEMBERS_MAX_BYTES:
        # the way on the message names, in API terms (details.api): the writers listed, then some dropped (the body
        # JSON once DEVICE is filled in, as every way on's: more devices in the list as the app chooses)
        drop = f'GET {session_path(sid, "devices")}, then POST {session_path(sid, "rekey")} {{"drop": [DEVICE]}}'
        cap = f"more than the {MEMBERS_MAX_BYTES >> 10} KiB a members list may be"
        if frozen is not None:
            raise ImportError_(
                "members_full",
                f"the new members list of this rekey of session {sid} ({writers:,} writers, and {frozen:,} frozen"
                f" logs: what each writer it drops, and each one dropped before, wrote) would be {len(ct):,} bytes,"
                f" {cap}: nothing was written",
                f"sessiond devices {sid}  # lists its writer devices; then drop fewer of those that wrote (one kept"
                f" is an entry of ~50 bytes, one dropped a frozen log of ~130): sessiond rekey {sid} --drop DEVICE"
                f" ...; or go on in a new session holding the conversation: sessiond fork {sid} --at MESSAGE",
                reason="frozen_logs",
                api=[drop, f'POST {session_path(sid, "fork")} {{"at": MESSAGE_ID}}'],
            )
        if kept is not None:
            raise ImportError_(
                "members_full",
                f"the notice of this rekey of session {sid} (its members list of {writers:,} writers, with the new"
                f" key sealed for each of the {kept:,} kept) would be {len(ct):,} bytes, {cap}: nothing was written",
                f"sessiond devices {sid}  # lists its writer devices; then drop more of them in the rekey, each a"
                f" sealed key fewer: sessiond rekey {sid} --drop DEVICE --drop DEVICE ...; or sessiond unshare {sid}",
                reason="sealed_keys",
                api=[drop, f"POST {session_path(sid, 'unshare')}"],
            )
        raise ImportError_(
            "members_full",
            f"the members list of session {sid} would be {len(ct):,} bytes with {writers:,} writers, {cap} (about"
            f" 4,000 writers): nothing was written",
            f"sessiond devices {sid}  # lists its writer devices; then drop those no longer used: sessiond rekey"
            f" {sid} --drop DEVICE",
            reason="writers",
            api=[drop],
        )
    return ct


def open_members(ct: bytes, keys: Sequence[bytes], salt: bytes) -> bytes:
    """A members object (`ct`, its slot's `salt`) opened under the first of `keys` that opens it (a reader of the
    slot: its session key; gc: each of the session's keys, the current one first, as a rekey switching here
    rotates the keys before it names the new slot). DecryptError if none does: the last key's, of one key."""
    failed = DecryptError("the members object opens under none of the session's keys")
    for key in keys:
        try:
            return open_unpadded(ct, members_key(key, salt))
        except DecryptError as exc:
            failed = exc if len(keys) == 1 else failed
    raise failed


def member_device(d: object) -> str | None:
    """A members entry's device id ("d"), or None when the entry has none: null (its writer did not know it:
    a member whose log it never read), left out, or the text "None", which sessiond wrote in place of null
    when it wrote such an entry again (docs/FORMATS.md §6): slots in stores still carry it."""
    return d if isinstance(d, str) and d and d != "None" else None


def member_name(member: dict) -> str:
    """A member ({"head_pk", "device_id"}) as this device names it to people (`sessiond devices`, rekey,
    errors): its device id, or the first 16 hex digits of its head key when the id is not known."""
    return member["device_id"] or bytes(member["head_pk"]).hex()[:16]


def member_entries(members: Iterable[dict]) -> list[dict]:
    """Members ({"head_pk", "device_id"}) as a members object lists them: {"d": device id, null when not
    known, "k": head public key}."""
    return [{"d": member_device(m["device_id"]), "k": m["head_pk"]} for m in members]


def members_object(sid: str, members: Iterable[dict], frozen: Sequence[dict] = ()) -> dict:
    """The members object (docs/FORMATS.md §6) listing `members` ({"head_pk", "device_id"}, in that order) as
    the writers of `sid`, with `frozen`, the frozen logs (its "f": absent when there are none, so a members
    object without any is byte for byte as before)."""
    obj: dict = {"m": member_entries(members), "s": sid, "v": MEMBERS_VERSION, "ty": T_MEMBERS}
    if frozen:
        obj["f"] = list(frozen)
    return obj


# the members object's fields this sessiond knows (docs/FORMATS.md §6): any other is a newer sessiond's
KNOWN_FIELDS = frozenset({"m", "s", "v", "ty", "f", "rekey", "c"})


def unknown_of(m: dict) -> dict:
    """The fields of members object `m` this sessiond does not know (a newer one's): the object's own, and
    each member entry's by its head key (under "m")."""
    out = {k: v for k, v in m.items() if k not in KNOWN_FIELDS}
    entries = {
        bytes(e["k"]): extra
        for e in m.get("m", [])
        if isinstance(e, dict)
        and isinstance(e.get("k"), bytes)
        and (extra := {k: v for k, v in e.items() if k not in ("d", "k")})
    }
    if entries:
        out["m"] = entries
    return out


def encoded_keeping(obj: dict, unknown: dict) -> bytes:
    """The members object `obj` as DAG-CBOR, with the fields of the slot's object this sessiond does not
    know (a newer one's: unknown_of) beside its own, as they were read, the object's and each member's still
    listed; without them if they do not encode again."""
    if unknown:
        entries = unknown.get("m", {})
        kept = {k: v for k, v in unknown.items() if k != "m"}
        members = [{**entries.get(bytes(e["k"]), {}), **e} for e in obj["m"]]
        try:
            return dagcbor.encode({**kept, **obj, "m": members})
        except (TypeError, ValueError):
            log.warning("a members object's unknown fields do not encode again: written without them")
    return dagcbor.encode(obj)


def parse_members(m: dict) -> tuple[list[dict], dict | None, list[dict]]:
    """The members (head key, device id or None), the rekey notice and the frozen logs of a members object,
    decoded. An object holding a notice has no frozen logs of its own: its "f", if any, is not read. That object
    is the old slot's, which every writer of the old generation can sign, a writer the rekey drops too, and no
    sessiond writes an "f" beside a notice (its rekey's freezes are in the notice's own "f", which its author
    claims: sync/rekey.py): one there is a dropped writer's, adding its own log frozen past the rekey's freeze,
    which a kept device taking the notice would carry into the new generation (docs/FORMATS.md §6)."""
    members = []
    for item in m.get("m", []):
        if isinstance(item, dict) and isinstance(item.get("k"), bytes) and len(item["k"]) == 33:
            members.append({"head_pk": item["k"], "device_id": member_device(item.get("d"))})
    notice = m.get("rekey")
    if isinstance(notice, dict):
        return members, notice, []
    frozen = [f for f in m.get("f", []) if is_frozen(f)] if isinstance(m.get("f"), list) else []
    return members, None, frozen


def _carried_entry(e: object) -> bool:
    """An entry of a notice slot's "c" (docs/FORMATS.md §6, "Carried past the notice": sync/rekeycarried.py):
    {"g": 64-byte signature, "k": head key, "p": head key, "s": seq from 0 to SEQ_MAX}, no other field."""
    return (
        isinstance(e, dict)
        and set(e) == {"g", "k", "p", "s"}
        and isinstance(e["g"], bytes)
        and len(e["g"]) == 64
        and all(isinstance(e[f], bytes) and len(e[f]) == 33 and e[f][0] == 0xED for f in ("k", "p"))
        and isinstance(e["s"], int)
        and not isinstance(e["s"], bool)
        and 0 <= e["s"] <= SEQ_MAX
    )


def parse_carried(m: dict) -> list[dict]:
    """The well-formed entries of a members object's "c" (none if it has none, or it is not a list): what a kept
    writer carried of a dropped writer's log past the notice the object holds, each still to be verified."""
    c = m.get("c")
    return [dict(e) for e in c if _carried_entry(e)] if isinstance(c, list) else []
