"""Checkpoints: signed proofs of a conversation's content at a point in time (docs/FORMATS.md §8).

The conversation hash is a BLAKE3 chain over the session's messages in their global order
(Lamport clock, device id, seq), restricted to the checkpoint's *frontier* (for each device, the
highest sequence number it covers), so that every device computes the same hash whatever arrived
since:

    h0 = 32 zero bytes;  h(i) = BLAKE3(h(i-1) | DAG-CBOR([device, seq, chat, role, content]))

A proof is {"created_at", "device", "frontier", "hash", "messages", "number", "pk", "session",
"tokens", "signature"} (hex for bytes), signed with the device's head key over the DAG-CBOR of
everything but the signature.
"""

from __future__ import annotations

import itertools
from bisect import bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import blake3
import cbor2
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from . import dagcbor

PROOF_FIELDS = ("created_at", "device", "frontier", "hash", "messages", "number", "pk", "session", "tokens")


class ProofError(ValueError):
    pass


class UnknownSigner(ProofError):
    """A proof signed by a head key not among those given: `pk` (0xed | public key)."""

    def __init__(self, message: str, pk: bytes):
        super().__init__(message)
        self.pk = pk


class OtherHistory(ProofError):
    """A proof whose conversation hash, count or tokens differ from those of the messages given."""


def prepare(messages: Iterable[tuple]) -> list[tuple]:
    """Encode (device, seq, chat, role, content, tokens) messages once, for checking many proofs."""
    dumps = cbor2.dumps  # a list of text and integers: DAG-CBOR as cbor2 writes it
    return [
        (device, seq, dumps([device, seq, chat, role, content]), tok or 0)
        for device, seq, chat, role, content, tok in messages
    ]


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


def prepare_rows(rows: list[tuple]) -> list[tuple]:
    """prepare() straight from message insert rows (Database RemoteLog.messages), in one pass."""
    dumps = cbor2.dumps
    return [(r[2], r[3], dumps([r[2], r[3], r[1], r[5], r[6]]), r[7] or 0) for r in rows]


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


def extend(chain: Chain | None, frontier: dict[str, int], rows: list[tuple]) -> Chain | None:
    """`chain` (None: the empty one) carried on to `frontier`. `rows` are the messages the frontier
    covers and the chain does not, as (lamport, device, seq, chat, role, content, tokens) in global
    order. Returns None when one of them sorts before the chain's last message (it arrived late from
    another device): the hash is then not a continuation, and must be computed from the start.

    This is what makes a checkpoint cost O(new messages) rather than O(session): a session checkpoints
    every few messages (every 1,000 tokens by default)."""
    chain = chain or Chain({})
    if rows and chain.last and rows[0][:3] <= chain.last:
        return None
    h, dumps, tokens = chain.hash, cbor2.dumps, 0
    for _, device, seq, chat, role, content, tok in rows:
        h = blake3.blake3(h + dumps([device, seq, chat, role, content])).digest()
        tokens += tok
    return Chain(
        dict(frontier), h, chain.messages + len(rows), chain.tokens + tokens, rows[-1][:3] if rows else chain.last
    )


def _signed(proof: dict) -> bytes:
    body = {k: proof[k] for k in PROOF_FIELDS}
    return dagcbor.encode(body)


def make_proof(
    session: str,
    device: str,
    number: int,
    messages: list[tuple],
    frontier: dict[str, int],
    created_at: float,
    key: SigningKey,
) -> dict:
    h, n, tokens = conversation_hash(messages, frontier)
    return proof_of(session, device, number, Chain(dict(frontier), h, n, tokens), created_at, key)


def proof_of(session: str, device: str, number: int, chain: Chain, created_at: float, key: SigningKey) -> dict:
    proof = {
        "created_at": created_at,
        "device": device,
        "frontier": dict(chain.frontier),
        "hash": chain.hash.hex(),
        "messages": chain.messages,
        "number": number,
        "pk": "ed" + bytes(key.verify_key).hex(),
        "session": session,
        "tokens": chain.tokens,
    }
    proof["signature"] = key.sign(_signed(proof)).signature.hex()
    return proof


_SHAPES = {"pk": "hex text", "signature": "hex text", "frontier": "an object of device ids and whole numbers"}


def _read(proof: dict, field: str, read: Callable[[Any], Any]) -> Any:
    """A proof's field read as `read` reads it, or a ProofError naming the field (not Python's words)."""
    try:
        return read(proof[field])
    except (TypeError, ValueError, AttributeError):
        raise ProofError(
            f"proof is malformed: its {field} is not {_SHAPES[field]} (a proof is a checkpoint as"
            f" `sessiond checkpoints --json` lists it, unchanged)"
        ) from None


def check_proof(proof: dict, messages: list[tuple], known_pks: set[bytes]) -> None:
    """Raise ProofError naming what does not hold: shape, signer, signature, or content."""
    check_proofs([proof], messages, known_pks)


def check_proofs(proofs: list[dict], messages: list[tuple], known_pks: set[bytes]) -> None:
    """check_proof for many proofs of one session, with one pass over its messages for all of them."""
    frontiers = []
    for proof in proofs:
        missing = [k for k in PROOF_FIELDS + ("signature",) if k not in proof]
        if missing:
            raise ProofError(f"proof lacks {', '.join(missing)}")
        pk = _read(proof, "pk", bytes.fromhex)
        sig = _read(proof, "signature", bytes.fromhex)
        frontiers.append(_read(proof, "frontier", lambda f: {str(k): int(v) for k, v in f.items()}))
        if pk not in known_pks:
            raise UnknownSigner("proof is signed by a key this session does not know", pk)
        try:
            VerifyKey(pk[1:]).verify(_signed(proof), sig)
        except (BadSignatureError, ValueError, dagcbor.DagCborError):
            raise ProofError("proof signature does not verify (altered or forged proof)") from None
    if proofs and not (isinstance(messages, list) and messages and len(messages[0]) == 4):
        messages = prepare(messages)
    for proof, (h, n, tokens) in zip(proofs, conversation_hashes(messages, frontiers)):
        if h.hex() != proof["hash"] or n != proof["messages"] or tokens != proof["tokens"]:
            raise OtherHistory(
                f"the conversation does not match checkpoint {proof['number']} of device "
                f"{proof['device']}: history was changed ({n} messages here, {proof['messages']} "
                f"in the proof)"
            )
