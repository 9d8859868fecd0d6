"""Content identifiers: S5 blob ids and IPFS CIDv1 (raw, BLAKE3), specified in docs/FORMATS.md.

S5 blob id (raw form):  0x5b 0x82 | 0x1e | blake3(32) | size as u64 little-endian, trailing zero bytes trimmed
Legacy raw form:        0x26 0x1f | blake3(32) | size (same trimming)
Text form:              multibase; we write base32 lower-case without padding ('b'), and read 'b', 'z'
                        (base58btc), 'u' (base64url) and 'f' (base16).
IPFS CIDv1:             0x01 0x55 0x1e 0x20 | blake3(32), written as multibase base32.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

import blake3

MAGIC_BLOB = b"\x5b\x82"
MAGIC_LEGACY = b"\x26"
MH_BLAKE3 = 0x1E
LEGACY_MH_BLAKE3 = 0x1F
CIDV1_RAW_BLAKE3 = b"\x01\x55\x1e\x20"

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58)}


class CIDError(ValueError):
    """A content identifier that cannot be parsed; the message says which part is wrong."""


def digest(data: bytes) -> bytes:
    return blake3.blake3(data, max_threads=blake3.blake3.AUTO if len(data) > (1 << 20) else 1).digest()


def digest_parts(parts: list) -> bytes:
    """digest() of the bytes-like `parts` put together, without putting them together."""
    h = blake3.blake3()
    for part in parts:
        h.update(part)
    return h.digest()


def _b32encode(raw: bytes) -> str:
    return base64.b32encode(raw).decode("ascii").lower().rstrip("=")


def _b32decode(text: str) -> bytes:
    text = text.upper()
    pad = (-len(text)) % 8
    try:
        return base64.b32decode(text + "=" * pad)
    except Exception as exc:  # binascii.Error
        raise CIDError(f"not valid base32: {exc}") from None


def b58encode(raw: bytes) -> str:
    n = int.from_bytes(raw, "big")
    out = []
    while n:
        n, r = divmod(n, 58)
        out.append(_B58[r])
    zeros = len(raw) - len(raw.lstrip(b"\0"))
    return "1" * zeros + "".join(reversed(out))


def b58decode(text: str) -> bytes:
    n = 0
    for ch in text:
        try:
            n = n * 58 + _B58_INDEX[ch]
        except KeyError:
            raise CIDError(f"not valid base58btc: unexpected character {ch!r}") from None
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    zeros = len(text) - len(text.lstrip("1"))
    return b"\0" * zeros + body


def multibase_decode(text: str) -> bytes:
    if not text:
        raise CIDError("empty identifier")
    prefix, body = text[0], text[1:]
    if prefix == "b":
        return _b32decode(body)
    if prefix == "z":
        return b58decode(body)
    if prefix == "u":
        try:
            return base64.urlsafe_b64decode(body + "=" * ((-len(body)) % 4))
        except Exception as exc:
            raise CIDError(f"not valid base64url: {exc}") from None
    if prefix == "f":
        try:
            return bytes.fromhex(body)
        except ValueError as exc:
            raise CIDError(f"not valid base16: {exc}") from None
    raise CIDError(f"unknown multibase prefix {prefix!r} (expected b, z, u or f)")


def _size_bytes(size: int) -> bytes:
    return size.to_bytes(8, "little").rstrip(b"\0")


@dataclass(frozen=True)
class BlobId:
    """The S5 identity of a blob of bytes: its BLAKE3 digest and its size."""

    hash: bytes
    size: int

    @classmethod
    def of(cls, data: bytes) -> BlobId:
        return cls(digest(data), len(data))

    def to_bytes(self) -> bytes:
        return MAGIC_BLOB + bytes([MH_BLAKE3]) + self.hash + _size_bytes(self.size)

    def to_legacy_bytes(self) -> bytes:
        return MAGIC_LEGACY + bytes([LEGACY_MH_BLAKE3]) + self.hash + _size_bytes(self.size)

    def __str__(self) -> str:
        return "b" + _b32encode(self.to_bytes())

    def to_base58(self) -> str:
        return "z" + b58encode(self.to_bytes())

    def to_base64url(self) -> str:
        return "u" + base64.urlsafe_b64encode(self.to_bytes()).decode().rstrip("=")

    def to_base16(self) -> str:
        return "f" + self.to_bytes().hex()

    def ipfs_cid(self) -> str:
        """The IPFS CIDv1 (raw codec, BLAKE3 multihash) of the same bytes."""
        return "b" + _b32encode(CIDV1_RAW_BLAKE3 + self.hash)

    @classmethod
    def from_bytes(cls, raw: bytes) -> BlobId:
        if raw[:2] == MAGIC_BLOB:
            if len(raw) < 3 or raw[2] != MH_BLAKE3:
                raise CIDError("blob id: unsupported hash function (only BLAKE3, 0x1e, is supported)")
            body = raw[3:]
        elif raw[:1] == MAGIC_LEGACY:
            if len(raw) < 2 or raw[1] != LEGACY_MH_BLAKE3:
                raise CIDError("legacy blob id: unsupported hash function (only BLAKE3, 0x1f, is supported)")
            body = raw[2:]
        else:
            raise CIDError(f"not a blob id: unknown magic bytes {raw[:2].hex()!r}")
        if len(body) < 32:
            raise CIDError(f"blob id truncated: {len(body)} of 32 hash bytes")
        size_bytes = body[32:]
        if len(size_bytes) > 8:
            raise CIDError("blob id: size field longer than 8 bytes")
        if size_bytes and size_bytes[-1] == 0:
            raise CIDError("blob id: size field has trailing zero bytes (not canonical)")
        return cls(body[:32], int.from_bytes(size_bytes, "little"))

    @classmethod
    def parse(cls, text: str) -> BlobId:
        text = text.strip()
        return cls.from_bytes(multibase_decode(text))


def parse_ipfs_cid(text: str) -> bytes:
    """Return the BLAKE3 digest inside a CIDv1 raw/BLAKE3 identifier."""
    raw = multibase_decode(text.strip())
    if raw[:4] != CIDV1_RAW_BLAKE3 or len(raw) != 36:
        raise CIDError("not a CIDv1 with raw codec and a 32-byte BLAKE3 multihash")
    return raw[4:]
