"""An S5 portal account, as stores/s5.py logs in to it: the base64url fields of the portal's JSON, this
device's account key on each portal, and the signed answer to a login or registration challenge
(s5-dev/lib5 sign_challenge.dart; the facts are listed at the top of stores/s5.py)."""

from __future__ import annotations

import base64

import blake3
from nacl.signing import SigningKey

from .errors import AuthRefused

CHALLENGE_REGISTER = 1
CHALLENGE_LOGIN = 2
ACCOUNT_KEY_CONTEXT = "sessiond 2026-11 s5 portal account key v1"


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def unb64url(text: str) -> bytes:
    if not isinstance(text, str):
        raise ValueError("not a string")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def account_key(device_seed: bytes, authority: str) -> SigningKey:
    """The Ed25519 key of this device's account on the portal at `authority`: a different key on
    every portal (BLAKE3 keyed by a key derived from the device seed), so portals cannot link a
    user's accounts, and the same key on every run, so the account survives a lost token."""
    root = blake3.blake3(device_seed, derive_key_context=ACCOUNT_KEY_CONTEXT).digest()
    return SigningKey(blake3.blake3(authority.lower().encode("utf-8"), key=root).digest())


def challenge_response(key: SigningKey, kind: int, challenge: bytes, authority: str) -> tuple[bytes, bytes]:
    if len(challenge) != 32:
        raise AuthRefused(f"the portal sent a challenge of {len(challenge)} bytes (expected 32)")
    response = bytes([kind]) + challenge + blake3.blake3(authority.encode("utf-8")).digest()
    return response, key.sign(response).signature
