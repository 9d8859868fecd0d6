"""Checkpoints: signed proofs of a conversation's content at a point in time (docs/FORMATS.md §9).

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

from typing import Iterable

import blake3
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from . import dagcbor

PROOF_FIELDS = ("created_at", "device", "frontier", "hash", "messages", "number", "pk", "session", "tokens")


class ProofError(ValueError):
    pass


def prepare(messages: Iterable[tuple]) -> list[tuple]:
    """Encode (device, seq, chat, role, content, tokens) messages once, for checking many proofs."""
    return [(device, seq, dagcbor.encode_ordered([device, seq, chat, role, content]), tok or 0)
            for device, seq, chat, role, content, tok in messages]


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


def _signed(proof: dict) -> bytes:
    body = {k: proof[k] for k in PROOF_FIELDS}
    return dagcbor.encode(body)


def make_proof(session: str, device: str, number: int, messages: list[tuple], frontier: dict[str, int],
               created_at: float, key: SigningKey) -> dict:
    h, n, tokens = conversation_hash(messages, frontier)
    proof = {"created_at": created_at, "device": device, "frontier": dict(frontier), "hash": h.hex(),
             "messages": n, "number": number, "pk": "ed" + bytes(key.verify_key).hex(), "session": session,
             "tokens": tokens}
    proof["signature"] = key.sign(_signed(proof)).signature.hex()
    return proof


def check_proof(proof: dict, messages: list[tuple], known_pks: set[bytes]) -> None:
    """Raise ProofError naming what does not hold: shape, signer, signature, or content."""
    try:
        missing = [k for k in PROOF_FIELDS + ("signature",) if k not in proof]
        if missing:
            raise ProofError(f"proof lacks {', '.join(missing)}")
        pk = bytes.fromhex(proof["pk"])
        sig = bytes.fromhex(proof["signature"])
        frontier = {str(k): int(v) for k, v in proof["frontier"].items()}
    except (TypeError, ValueError, AttributeError) as exc:
        raise ProofError(f"proof is malformed: {exc}") from None
    if pk not in known_pks:
        raise ProofError("proof is signed by a key this session does not know")
    try:
        VerifyKey(pk[1:]).verify(_signed(proof), sig)
    except (BadSignatureError, ValueError, dagcbor.DagCborError):
        raise ProofError("proof signature does not verify (altered or forged proof)") from None
    h, n, tokens = conversation_hash(messages, frontier)
    if h.hex() != proof["hash"] or n != proof["messages"] or tokens != proof["tokens"]:
        raise ProofError(f"the conversation does not match checkpoint {proof['number']} of device {proof['device']}: "
                         f"history was changed ({n} messages here, {proof['messages']} in the proof)")
