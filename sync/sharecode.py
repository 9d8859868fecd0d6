"""Share codes (docs/FORMATS.md, "Share codes").

    text  = "sessiond1" + base32(body | checksum)          (lower case, no padding)
    body  = version (0x01) | flags | payload
    flags = bit 0: the payload is passphrase-protected
    payload (plain)      = DAG-CBOR map (see below)
    payload (protected)  = opslimit (u8) | log2(memlimit) (u8) | salt (16) | nonce (24)
                           | XChaCha20-Poly1305(key = Argon2id(passphrase, salt), DAG-CBOR map)
    checksum = first 5 bytes of BLAKE3("sessiond share code v1" | body)

The map: {"a": announce public key (32), "c": "r" | "w", "k": session key (32), "l": where the session
lives, "s": session id, "w": write secret (32, write codes only), "x": expiry (unix seconds, optional)}.
"l" is a list of {"n": network ("relay", "s5", "ipfs", "folder"), "h": hint (optional: a URL to try)};
codes made before it carry "u" (the sharer's store URL) instead, and still read (`places`).
"""

from __future__ import annotations

import base64
import os
import re
import time
import unicodedata
from dataclasses import dataclass

import blake3
from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_decrypt, crypto_aead_xchacha20poly1305_ietf_encrypt
from nacl.exceptions import CryptoError
from nacl.pwhash import argon2id

from ..storage.clock import wall
from ..storage.ids import ID_RE
from . import dagcbor

PREFIX = "sessiond1"
VERSION = 1
FLAG_PASSPHRASE = 0x01
CHECKSUM_LEN = 5
CHECKSUM_CONTEXT = b"sessiond share code v1"
OPSLIMIT = 3  # Argon2id passes
MEMLIMIT_LOG2 = 27  # 128 MiB
MAX_EXPIRY = 1 << 40  # unix seconds: year 36812; anything beyond (or before 1970) is not a real expiry
MAX_PLACES = 8  # locations in one code
NETWORK_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")  # "relay", "s5", "ipfs", "folder"; others are future ones


class ShareCodeError(ValueError):
    """A code that cannot be used; `kind` is one of malformed, checksum, version, passphrase_required,
    passphrase, expired."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass
class ShareCode:
    session_id: str
    session_key: bytes
    announce_pk: bytes
    store_url: str | None = None
    write_secret: bytes | None = None
    expires_at: int | None = None
    # where the session lives: (network, hint URL or None); codes made before this have store_url ("u")
    locations: tuple[tuple[str, str | None], ...] = ()

    def places(self) -> list[tuple[str, str | None]]:
        """The code's locations; an old code's store URL as its one location."""
        if self.locations:
            return list(self.locations)
        if self.store_url:
            return [(network_of_url(self.store_url), self.store_url)]
        return []

    @property
    def capability(self) -> str:
        return "read-write" if self.write_secret else "read-only"

    def _map(self) -> dict:
        m: dict = {
            "a": self.announce_pk,
            "c": "w" if self.write_secret else "r",
            "k": self.session_key,
            "s": self.session_id,
        }
        if self.store_url:
            m["u"] = self.store_url
        if self.locations:
            m["l"] = [{"n": n, **({"h": h} if h else {})} for n, h in self.locations]
        if self.write_secret:
            m["w"] = self.write_secret
        if self.expires_at is not None:
            m["x"] = int(self.expires_at)
        return m

    def encode(self, passphrase: str | None = None, *, _salt: bytes | None = None, _nonce: bytes | None = None) -> str:
        payload = dagcbor.encode(self._map())
        flags = 0
        if passphrase is not None:
            if not passphrase:
                raise ShareCodeError("passphrase", "an empty passphrase protects nothing")
            salt = _salt or os.urandom(16)
            nonce = _nonce or os.urandom(24)
            key = _kdf(passphrase, salt, OPSLIMIT, MEMLIMIT_LOG2)
            payload = (
                bytes([OPSLIMIT, MEMLIMIT_LOG2])
                + salt
                + nonce
                + crypto_aead_xchacha20poly1305_ietf_encrypt(payload, bytes([VERSION, FLAG_PASSPHRASE]), nonce, key)
            )
            flags |= FLAG_PASSPHRASE
        body = bytes([VERSION, flags]) + payload
        raw = body + _checksum(body)
        return PREFIX + base64.b32encode(raw).decode().lower().rstrip("=")


def _checksum(body: bytes) -> bytes:
    return blake3.blake3(CHECKSUM_CONTEXT + body).digest()[:CHECKSUM_LEN]


def _kdf(passphrase: str, salt: bytes, ops: int, mem_log2: int) -> bytes:
    if not 1 <= ops <= 10 or not 20 <= mem_log2 <= 30:
        raise ShareCodeError("malformed", "share code asks for Argon2id parameters out of the allowed range")
    # the text a person types, whatever its Unicode spelling: "café" composed (NFC) or decomposed (NFD)
    # is one passphrase (for ASCII, NFC changes nothing, so codes made before this keep working)
    text = unicodedata.normalize("NFC", passphrase)
    return argon2id.kdf(32, text.encode(), salt, opslimit=ops, memlimit=1 << mem_log2)


def network_of_url(url: str) -> str:
    """The network a store URL is on, as far as its URL tells (a relay speaks the S5 API: "s5")."""
    scheme = url.partition("://")[0] if "://" in url else ""
    if scheme.startswith("s5+"):
        return "s5"
    if scheme.startswith("ipfs+"):
        return "ipfs"
    return "folder"


def _locations(value: object) -> tuple[tuple[str, str | None], ...]:
    if not isinstance(value, list) or len(value) > MAX_PLACES:
        raise ValueError(f"locations must be a list of at most {MAX_PLACES}")
    out = []
    for item in value:
        if not isinstance(item, dict) or set(item) - {"n", "h"}:
            raise ValueError("a location is a map of n (network) and h (hint)")
        n, h = item.get("n"), item.get("h")
        if not isinstance(n, str) or not NETWORK_RE.match(n):
            raise ValueError("bad network name")
        if h is not None and (not isinstance(h, str) or not 0 < len(h) <= 2048 or not h.isprintable()):
            raise ValueError("bad location hint")
        out.append((n, h))
    return tuple(out)


def needs_passphrase(text: str) -> bool:
    return bool(_unwrap(text)[1] & FLAG_PASSPHRASE)


def _unwrap(text: str) -> tuple[bytes, int]:
    t = "".join(text.split()).lower().replace("-", "")
    if not t.startswith(PREFIX):
        raise ShareCodeError("malformed", f"not a sessiond share code (it should start with {PREFIX!r})")
    data = t[len(PREFIX) :]
    if not data:
        raise ShareCodeError("malformed", "share code is only its prefix: the rest is missing")
    if any(ch not in "abcdefghijklmnopqrstuvwxyz234567" for ch in data):
        raise ShareCodeError(
            "malformed",
            "share code has characters that cannot appear in a code "
            "(only a-z and 2-7 after the prefix); check it was copied whole",
        )
    try:
        raw = base64.b32decode(data.upper() + "=" * ((-len(data)) % 8))
    except Exception:
        raise ShareCodeError(
            "checksum", "share code is truncated or mistyped (its length is impossible): copy it again, whole"
        ) from None
    if len(raw) < 2 + CHECKSUM_LEN:
        raise ShareCodeError("checksum", "share code is truncated (shorter than any code): copy it again, whole")
    body, check = raw[:-CHECKSUM_LEN], raw[-CHECKSUM_LEN:]
    if _checksum(body) != check:
        raise ShareCodeError(
            "checksum", "share code fails its checksum: it is mistyped or truncated (copy it again, whole)"
        )
    if body[0] != VERSION:
        raise ShareCodeError(
            "version",
            f"share code version {body[0]} is not supported by this sessiond "
            f"(it reads version {VERSION}); upgrade sessiond",
        )
    return body, body[1]


def decode(text: str, passphrase: str | None = None, *, now: float | None = None) -> ShareCode:
    body, flags = _unwrap(text)
    payload = body[2:]
    if flags & ~FLAG_PASSPHRASE:
        raise ShareCodeError("version", "share code uses features this sessiond does not know; upgrade sessiond")
    if flags & FLAG_PASSPHRASE:
        if passphrase is None:
            raise ShareCodeError(
                "passphrase_required",
                # (the API's request's field: the CLI says its own option instead, cli/commands/sharing.py)
                "this share code is protected by a passphrase: give it in the import's `passphrase`",
            )
        if len(payload) < 2 + 16 + 24 + 16:
            raise ShareCodeError("malformed", "protected share code is too short")
        ops, mem, salt, nonce, ct = payload[0], payload[1], payload[2:18], payload[18:42], payload[42:]
        try:
            payload = crypto_aead_xchacha20poly1305_ietf_decrypt(ct, body[:2], nonce, _kdf(passphrase, salt, ops, mem))
        except CryptoError:
            raise ShareCodeError(
                "passphrase",
                "wrong passphrase for this share code (the code itself is whole): check the passphrase with whoever"
                " made the code, exactly as they sent it: spaces and case count",
            ) from None
    try:
        m = dagcbor.decode(payload)
        code = ShareCode(
            session_id=m["s"],
            session_key=m["k"],
            announce_pk=m["a"],
            store_url=m.get("u"),
            write_secret=m.get("w"),
            expires_at=m.get("x"),
            locations=_locations(m.get("l", [])),
        )
        if m["c"] not in ("r", "w") or (m["c"] == "w") != (code.write_secret is not None):
            raise ValueError("capability does not match the keys it carries")
        if not isinstance(code.session_id, str) or not ID_RE.match(code.session_id):
            raise ValueError("bad session id")
        for k in (code.session_key, code.announce_pk) + ((code.write_secret,) if code.write_secret else ()):
            if not isinstance(k, bytes) or len(k) != 32:
                raise ValueError("a key is not 32 bytes")
        if code.store_url is not None and not isinstance(code.store_url, str):
            raise ValueError("bad store hint")
        if code.expires_at is not None and (
            not isinstance(code.expires_at, int)
            or isinstance(code.expires_at, bool)
            or not 0 <= code.expires_at < MAX_EXPIRY
        ):
            raise ValueError("bad expiry")
    except (dagcbor.DagCborError, KeyError, TypeError, ValueError) as exc:
        raise ShareCodeError("malformed", f"share code content is malformed: {exc}") from None
    t = now if now is not None else wall()
    if code.expires_at is not None and t > code.expires_at:
        # (judged by this device's clock: one that is ahead refuses a code early, so the refusal says what it
        # reads, and how to set it, lest a wrong clock be taken for a late code)
        raise ShareCodeError(
            "expired",
            f"this share code expired at {_utc(code.expires_at)} by this device's clock, which reads {_utc(t)}; "
            "ask for a new one (if this clock is wrong, set it from the network: sudo timedatectl set-ntp true)",
        )
    return code


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))
