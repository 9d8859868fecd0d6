"""Checkpoints: signed proofs of a conversation's content at a point in time (docs/FORMATS.md §8).

The conversation hash is a BLAKE3 chain over the session's messages in their global order
(Lamport clock, device id, seq), restricted to the checkpoint's *frontier* (for each device, the
highest sequence number it covers), so that every device computes the same hash whatever arrived
since. Version 1 (a proof without `v`, made by sessiond before version 2):

    h0 = 32 zero bytes;  h(i) = BLAKE3(h(i-1) | DAG-CBOR([device, seq, chat, role, content]))

Version 2 (`"v": 2`, what this sessiond makes) hashes each message's name, tool call id, tool calls and
their call fields too, and the session's setting as the frontier's operations left it (its system prompt,
initial messages and each chat's own prompt) ahead of the messages:

    m0 = 32 zero bytes;  m(i) = BLAKE3(m(i-1) | DAG-CBOR([device, seq, chat, role, content, fields]))
    hash = BLAKE3(BLAKE3(DAG-CBOR(setting)) | m(n))

A proof is {"created_at", "device", "frontier", "hash", "messages", "number", "pk", "session",
"tokens", "signature"} and, from version 2, "v" (hex for bytes), signed with the device's head key over
the DAG-CBOR of everything but the signature.
"""

from __future__ import annotations

import itertools
import json
from bisect import bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import blake3
import cbor2
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from . import dagcbor

PROOF_FIELDS = ("created_at", "device", "frontier", "hash", "messages", "number", "pk", "session", "tokens")
VERSION = 2  # the version of the proofs this sessiond makes
VERSIONS = (1, 2)  # those it verifies (a proof without `v` is of version 1)
# What version 2 hashes of a message beyond device, seq, chat, role and content: its extra fields (FORMATS §4)
# that are the conversation (who spoke, which tools the model called with what, which call a tool answers)
HASHED_FIELDS = ("name", "tool_call_id", "tool_calls", "call_fields")
# The operations that make a session's setting (its system prompt, initial messages and chats' prompts)
SETTING_KINDS = ("session.create", "session.update", "chat.create", "chat.update")
NO_FIELDS: dict = {}  # a version 2 item's fields when the message has none (never changed)


class ProofError(ValueError):
    pass


AS_LISTED = "give the checkpoint as `sessiond checkpoints --json` lists it, unchanged"


class MalformedProof(ProofError):
    """A proof that cannot be read as one (a field missing, or not of its shape): the request's error."""


class UnknownSigner(ProofError):
    """A proof signed by a head key not among those given: `pk` (0xed | public key)."""

    def __init__(self, message: str, pk: bytes):
        super().__init__(message)
        self.pk = pk


class OtherHistory(ProofError):
    """A proof whose conversation hash, count or tokens differ from those of the messages given."""


class UnknownVersion(ProofError):
    """A proof of a version this sessiond does not know (a newer sessiond made it)."""


def newer_version(proof: object) -> bool:
    """Whether `proof` is of a well-formed version past those this sessiond verifies (a newer sessiond's)."""
    v = proof.get("v", 1) if isinstance(proof, dict) else 1
    return type(v) is int and v > max(VERSIONS)


def version_of(proof: dict) -> int:
    """A proof's version: 1 without `v`; a ProofError naming it if this sessiond does not know it."""
    v = proof.get("v", 1)
    if type(v) is not int or v < 1:
        raise MalformedProof(
            f"proof is malformed: its v (version) is {v!r:.40}, not a whole number from 1: {AS_LISTED}"
        )
    if v not in VERSIONS:
        raise UnknownVersion(
            f"checkpoint {proof.get('number')!r:.40} of device {proof.get('device')!r:.40} is a proof of version"
            f" {v}, which this sessiond does not know (it verifies versions {', '.join(map(str, VERSIONS))}):"
            f" update sessiond on this device to verify it"
        )
    return v


def hashed_fields(extra: Any) -> dict:
    """The fields of a message's extra (a map, its JSON text, or None) that version 2 hashes."""
    if not extra:
        return {}
    if isinstance(extra, (str, bytes)):
        extra = json.loads(extra)
    return {k: extra[k] for k in HASHED_FIELDS if k in extra}


def item(device: str, seq: int, chat: str, role: str, content: str, extra: Any, version: int) -> bytes:
    """The DAG-CBOR item a message adds to the chain of `version`."""
    if version == 1:
        return cbor2.dumps([device, seq, chat, role, content])  # text and integers: DAG-CBOR as cbor2 writes it
    fields = hashed_fields(extra)
    if not fields:
        return cbor2.dumps([device, seq, chat, role, content, NO_FIELDS])
    return dagcbor.encode([device, seq, chat, role, content, fields])


def prepare(messages: Iterable[tuple], version: int = 1) -> list[tuple]:
    """Encode (device, seq, chat, role, content, tokens[, extra]) messages once, for checking many proofs."""
    return [
        (m[0], m[1], item(m[0], m[1], m[2], m[3], m[4], m[6] if len(m) > 6 else None, version), m[5] or 0)
        for m in messages
    ]


def setting(ops: Iterable[tuple], frontier: dict[str, int]) -> dict:
    """The session's setting as the operations the frontier covers left it: its system prompt, initial
    messages and each chat's own system prompt. ops: (device, seq, lamport, kind, body) of SETTING_KINDS
    (others are passed over), in any order; each field last-writer-wins by (lamport, device), as
    storage/apply.py applies them."""
    out: dict[str, Any] = {"system_prompt": None, "initial_messages": [], "chats": {}}
    stamps: dict[Any, tuple] = {}

    def put(where: dict, key: str, value: Any, stamp: tuple) -> None:
        if stamp > stamps.get((id(where), key), ()):
            stamps[(id(where), key)] = stamp
            where[key] = value

    chats = out["chats"]
    for device, seq, lamport, kind, body in sorted(ops, key=itemgetter(2, 0, 1)):
        if seq > frontier.get(device, 0) or kind not in SETTING_KINDS:
            continue
        stamp = (lamport, device)
        if kind == "session.create":
            put(out, "system_prompt", body.get("system_prompt"), stamp)
            put(out, "initial_messages", body.get("initial_messages") or [], stamp)
            for chat in body.get("chats") or ():
                put(chats, chat["id"], chat.get("system_prompt"), stamp)
        elif kind == "session.update":
            for k in ("system_prompt", "initial_messages"):
                if k in body:
                    put(out, k, body[k] if k == "system_prompt" else body[k] or [], stamp)
        elif kind == "chat.create":
            put(chats, body["id"], body.get("system_prompt"), stamp)
        elif body.get("chat") in chats and "system_prompt" in body:  # chat.update
            put(chats, body["chat"], body["system_prompt"], stamp)
    return out


def covered(ops: Iterable[tuple], frontier: dict[str, int]) -> tuple:
    """Which of `ops` (as setting() takes them) the frontier covers: (device, seq) each, in order; two
    frontiers covering the same ones have the same setting."""
    return tuple(sorted((o[0], o[1]) for o in ops if o[1] <= frontier.get(o[0], 0) and o[3] in SETTING_KINDS))


def setting_digest(ops: Iterable[tuple], frontier: dict[str, int]) -> bytes:
    """BLAKE3 of the DAG-CBOR of the setting(): what a version 2 hash puts ahead of its messages."""
    return blake3.blake3(dagcbor.encode(setting(ops, frontier))).digest()


def sealed(setting_hash: bytes, messages_hash: bytes) -> bytes:
    """A version 2 conversation hash: the setting's digest ahead of the messages' chain."""
    return blake3.blake3(setting_hash + messages_hash).digest()


def conversation_hash(messages: Iterable[tuple], frontier: dict[str, int]) -> tuple[bytes, int, int]:
    """messages: (device, seq, chat, role, content, tokens) in global order, or prepare()d.
    Returns (hash, count, tokens)."""
    items = messages if isinstance(messages, list) and messages and len(messages[0]) == 4 else prepare(messages)
    h = b"\x00" * 32
    n = tokens = 0
    for device, seq, enc, tok in items:
        if seq > frontier.get(device, 0):
            continue
        h = blake3.blake3(h + enc).digest()
        n += 1
        tokens += tok
    return h, n, tokens


def prepare_rows(rows: list[tuple], version: int = 1) -> list[tuple]:
    """prepare() straight from message insert rows (Database RemoteLog.messages), in one pass."""
    if version == 1:
        dumps = cbor2.dumps
        return [(r[2], r[3], dumps([r[2], r[3], r[1], r[5], r[6]]), r[7] or 0) for r in rows]
    dumps = cbor2.dumps
    return [
        (
            r[2],
            r[3],
            dumps([r[2], r[3], r[1], r[5], r[6], NO_FIELDS])
            if r[9] is None
            else item(r[2], r[3], r[1], r[5], r[6], r[9], version),
            r[7] or 0,
        )
        for r in rows
    ]


def conversation_hashes(messages: list[tuple], frontiers: list[dict[str, int]]) -> list[tuple[bytes, int, int]]:
    """conversation_hash for many frontiers (prepare()d messages in global order). A frontier whose
    messages are the first n of the global order (the usual case: a checkpoint covers all its device
    had, and nothing that sorts earlier arrived later) is read off one shared pass; any other gets a
    pass of its own. So checking the many checkpoints of a long session costs about one pass."""
    seqs: dict[str, list[int]] = {}
    where: dict[str, list[int]] = {}
    for i, (device, seq, _, _) in enumerate(messages):
        seqs.setdefault(device, []).append(seq)
        where.setdefault(device, []).append(i)
    ordered = all(all(a < b for a, b in itertools.pairwise(s)) for s in seqs.values())
    out: list = [None] * len(frontiers)
    prefix: dict[int, list[int]] = {}
    for k, frontier in enumerate(frontiers):
        n, last = 0, -1
        for device, upto in frontier.items():
            c = bisect_right(seqs.get(device, ()), upto)
            if c:
                n += c
                last = max(last, where[device][c - 1])
        if ordered and last == n - 1:
            prefix.setdefault(n, []).append(k)
        else:
            out[k] = conversation_hash(messages, frontier)
    if prefix:
        h, tokens = b"\x00" * 32, 0
        for k in prefix.pop(0, []):
            out[k] = (h, 0, 0)
        end = max(prefix, default=0)
        for i in range(end):
            h = blake3.blake3(h + messages[i][2]).digest()
            tokens += messages[i][3]
            for k in prefix.get(i + 1, ()):
                out[k] = (h, i + 1, tokens)
    return out


@dataclass(frozen=True)
class Chain:
    """Where a conversation hash stands: the frontier it covers, the hash, how many messages and
    tokens are in it, and the global-order key (lamport, device, seq) of its last message."""

    frontier: dict
    hash: bytes = b"\x00" * 32
    messages: int = 0
    tokens: int = 0
    last: tuple = ()


def extend(chain: Chain | None, frontier: dict[str, int], rows: list[tuple], version: int = VERSION) -> Chain | None:
    """`chain` (None: the empty one) carried on to `frontier`. `rows` are the messages the frontier
    covers and the chain does not, as (lamport, device, seq, chat, role, content, tokens, extra) in global
    order; `hash` is then the chain of `version`'s message items (version 2's without its setting).
    Returns None when one of them sorts before the chain's last message (it arrived late from another
    device): the hash is then not a continuation, and must be computed from the start.

    This is what makes a checkpoint cost O(new messages) rather than O(session): a session checkpoints
    every few messages (every 1,000 tokens by default)."""
    chain = chain or Chain({})
    if rows and chain.last and rows[0][:3] <= chain.last:
        return None
    h, tokens, dumps, hasher = chain.hash, 0, cbor2.dumps, blake3.blake3
    for _, device, seq, chat, role, content, tok, extra in rows:
        if extra is None and version > 1:  # most messages: item()'s encoding, without its call (a hot loop)
            h = hasher(h + dumps([device, seq, chat, role, content, NO_FIELDS])).digest()
        else:
            h = hasher(h + item(device, seq, chat, role, content, extra, version)).digest()
        tokens += tok
    return Chain(
        dict(frontier), h, chain.messages + len(rows), chain.tokens + tokens, rows[-1][:3] if rows else chain.last
    )


def _signed(proof: dict) -> bytes:
    """What a proof's signature is over: its fields but the signature (`v` from version 2 on)."""
    body = {k: proof[k] for k in PROOF_FIELDS}
    if version_of(proof) > 1:
        body["v"] = proof["v"]
    return dagcbor.encode(body)


def make_proof(
    session: str,
    device: str,
    number: int,
    messages: list[tuple],
    frontier: dict[str, int],
    created_at: float,
    key: SigningKey,
    *,
    version: int = VERSION,
    ops: Iterable[tuple] = (),
) -> dict:
    """A proof of `messages` ((device, seq, chat, role, content, tokens[, extra]) in global order) as far as
    `frontier`, of `version`; `ops` (version 2): the session's operations that make its setting."""
    h, n, tokens = conversation_hash(_prepared(messages, version), frontier)
    chain = Chain(dict(frontier), h, n, tokens)
    return proof_of(
        session, device, number, chain, created_at, key, setting_digest(ops, frontier) if version > 1 else None
    )


def proof_hash(
    messages: Iterable[tuple], frontier: dict[str, int], ops: Iterable[tuple] = (), version: int = VERSION
) -> tuple[bytes, int, int]:
    """(hash, messages, tokens) as a proof of `version` as far as `frontier` has them, from scratch: messages
    as make_proof takes them, ops the session's operations that make its setting (version 2)."""
    h, n, tokens = conversation_hash(prepare(messages, version), frontier)
    return (sealed(setting_digest(ops, frontier), h) if version > 1 else h), n, tokens


def proof_of(
    session: str,
    device: str,
    number: int,
    chain: Chain,
    created_at: float,
    key: SigningKey,
    setting_hash: bytes | None,
) -> dict:
    """A signed proof of `chain`: of version 2 with `setting_hash` (the setting_digest() of the session's
    setting as far as the chain's frontier; `chain` then version 2's), of version 1 with None."""
    h = chain.hash if setting_hash is None else sealed(setting_hash, chain.hash)
    proof = {
        "created_at": created_at,
        "device": device,
        "frontier": dict(chain.frontier),
        "hash": h.hex(),
        "messages": chain.messages,
        "number": number,
        "pk": "ed" + bytes(key.verify_key).hex(),
        "session": session,
        "tokens": chain.tokens,
    }
    if setting_hash is not None:
        proof["v"] = VERSION
    proof["signature"] = key.sign(_signed(proof)).signature.hex()
    return proof


_SHAPES = {"pk": "hex text", "signature": "hex text", "frontier": "an object of device ids and whole numbers"}


def _read(proof: dict, field: str, read: Callable[[Any], Any]) -> Any:
    """A proof's field read as `read` reads it, or a ProofError naming the field (not Python's words)."""
    try:
        return read(proof[field])
    except (TypeError, ValueError, AttributeError):
        raise MalformedProof(f"proof is malformed: its {field} is not {_SHAPES[field]}: {AS_LISTED}") from None


def check_proof(proof: dict, messages: Any, known_pks: set[bytes], ops: Iterable[tuple] = ()) -> None:
    """Raise ProofError naming what does not hold: shape, version, signer, signature, or content."""
    check_proofs([proof], messages, known_pks, ops)


def check_proofs(proofs: list[dict], messages: Any, known_pks: set[bytes], ops: Iterable[tuple] = ()) -> None:
    """check_proof for many proofs of one session, with one pass over its messages for each version among
    them. messages: (device, seq, chat, role, content, tokens, extra) in global order, or a function of a
    version answering them prepare()d for it (a list already prepare()d serves version 1 only). ops: the
    session's operations that make its setting, as setting() takes them (for version 2)."""
    frontiers: dict[int, list] = {}
    for proof in proofs:
        missing = [k for k in PROOF_FIELDS + ("signature",) if k not in proof]
        if missing:
            raise MalformedProof(f"proof is malformed: it lacks {', '.join(missing)}: {AS_LISTED}")
        version = version_of(proof)
        pk = _read(proof, "pk", bytes.fromhex)
        sig = _read(proof, "signature", bytes.fromhex)
        frontier = _read(proof, "frontier", lambda f: {str(k): int(v) for k, v in f.items()})
        frontiers.setdefault(version, []).append((proof, frontier))
        if pk not in known_pks:
            raise UnknownSigner("proof is signed by a key this session does not know", pk)
        try:
            VerifyKey(pk[1:]).verify(_signed(proof), sig)
        except (BadSignatureError, ValueError, dagcbor.DagCborError):
            raise ProofError("proof signature does not verify (altered or forged proof)") from None
    ops = list(ops) if 2 in frontiers else []
    settings: dict[tuple, bytes] = {}  # by the operations a frontier covers: each setting hashed once
    for version, these in sorted(frontiers.items()):
        prepared = _prepared(messages, version)
        for (proof, frontier), (h, n, tokens) in zip(these, conversation_hashes(prepared, [f for _, f in these])):
            if version > 1:
                made = covered(ops, frontier)
                if made not in settings:
                    settings[made] = setting_digest(ops, frontier)
                h = sealed(settings[made], h)
            if h.hex() != proof["hash"] or n != proof["messages"] or tokens != proof["tokens"]:
                raise OtherHistory(
                    f"the conversation does not match checkpoint {proof['number']} of device "
                    f"{proof['device']}: history was changed ({n} messages here, {proof['messages']} "
                    f"in the proof"
                    + (
                        ""
                        if version == 1
                        else "; a version 2 proof covers the system prompt, "
                        "initial messages, chats' prompts, names and tool calls too"
                    )
                    + ")"
                )


def _prepared(messages: Any, version: int) -> list[tuple]:
    if callable(messages):
        return messages(version)
    if isinstance(messages, list) and messages and len(messages[0]) == 4:
        if version != 1:
            raise ValueError("messages prepare()d for version 1 cannot check a proof of another version")
        return messages
    return prepare(messages, version)
