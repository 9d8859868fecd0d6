"""Encrypted objects in S5's immutable scheme, and the keys behind them (docs/FORMATS.md).

An object's plaintext is padded, cut into 256 KiB chunks, and each chunk is sealed with
XChaCha20-Poly1305 (libsodium, through PyNaCl) under the object's own key, with the chunk index as a
little-endian 24-byte nonce. The ciphertext is the concatenation of the sealed chunks. A reader needs
the *encrypted CID*:

    0xae | 0xa6 (XChaCha20-Poly1305) | 0x12 (chunk size 2^18) | 0x1f | BLAKE3(ciphertext) (32)
         | key (32) | padding u32 LE | plaintext blob id (raw S5 form)

Object keys are never reused for different plaintexts: a data object's key is BLAKE3 keyed with a
secret derived from the session key over the plaintext's BLAKE3 hash (so the same plaintext always
gives the same object and a retried upload is idempotent; and the hash is the one the plaintext blob
id carries anyway, so a page is hashed once, not twice); a head manifest's key is derived from the session key,
the signing key and the revision, and a revision's plaintext is fixed (recorded) before it is uploaded.
"""
from __future__ import annotations

from dataclasses import dataclass

import blake3
from nacl.bindings import (crypto_aead_xchacha20poly1305_ietf_decrypt,
                           crypto_aead_xchacha20poly1305_ietf_encrypt)
from nacl.exceptions import CryptoError

try:
    # PyNaCl's own cffi handle on libsodium. Its public binding allocates a zeroed buffer per call,
    # copies the result into a new bytes object and holds the GIL while doing so: at 256 KiB chunks
    # that halves the speed of the cipher (measured here: 0.55 against 1.2 GB/s). Through the handle,
    # an object is sealed straight into one buffer and the GIL is released for the whole C call. The
    # functions are libsodium's; only the buffer handling is ours. tests/test_formats.py checks both
    # paths give the same bytes.
    from nacl._sodium import ffi as _ffi, lib as _lib

    if _lib.sodium_init() < 0 or _lib.crypto_aead_xchacha20poly1305_ietf_abytes() != 16:
        raise ImportError("libsodium did not initialise")
except (ImportError, AttributeError):  # another PyNaCl layout: the public binding still works
    _ffi = _lib = None

from ..stores.cid import BlobId, CIDError, digest

CID_TYPE_ENCRYPTED = 0xAE
ENCRYPTION_XCHACHA20_POLY1305 = 0xA6
CHUNK_EXPONENT = 0x12
CHUNK_SIZE = 1 << CHUNK_EXPONENT  # 256 KiB
TAG_SIZE = 16
PAD_TO = 256  # plaintext is padded with zeros to a multiple of this, hiding exact sizes

CTX_OBJECT = "sessiond 2026-11 object key v2"
CTX_MANIFEST = "sessiond 2026-11 manifest key v1"
CTX_HEAD_SIGNING = "sessiond 2026-11 head signing key v1"
CTX_ANNOUNCE = "sessiond 2026-11 announce key v1"
CTX_MEMBERS = "sessiond 2026-11 members key v1"


class DecryptError(ValueError):
    """An object that does not decrypt: wrong key, damaged, truncated or forged."""


def derive(context: str, material: bytes) -> bytes:
    return blake3.blake3(material, derive_key_context=context).digest()


def object_key(session_key: bytes, plain_hash: bytes) -> bytes:
    """The key of a data object whose plaintext has BLAKE3 hash `plain_hash` (see BlobId.of)."""
    return blake3.blake3(plain_hash, key=derive(CTX_OBJECT, session_key)).digest()


def manifest_key(session_key: bytes, head_pk: bytes, revision: int) -> bytes:
    return blake3.blake3(head_pk + revision.to_bytes(8, "little"), key=derive(CTX_MANIFEST, session_key)).digest()


def members_key(session_key: bytes, salt: bytes) -> bytes:
    return blake3.blake3(salt, key=derive(CTX_MEMBERS, session_key)).digest()


def _nonce(i: int) -> bytes:
    return i.to_bytes(24, "little")


@dataclass(frozen=True)
class EncryptedCID:
    hash: bytes  # BLAKE3 of the ciphertext (what the store addresses)
    key: bytes
    padding: int
    plain: BlobId  # BLAKE3 and size of the unpadded plaintext

    def to_bytes(self) -> bytes:
        return (bytes([CID_TYPE_ENCRYPTED, ENCRYPTION_XCHACHA20_POLY1305, CHUNK_EXPONENT, 0x1F]) + self.hash
                + self.key + self.padding.to_bytes(4, "little") + self.plain.to_bytes())

    @classmethod
    def from_bytes(cls, raw: bytes) -> "EncryptedCID":
        if len(raw) < 4 + 32 + 32 + 4 + 35:
            raise CIDError(f"encrypted CID truncated ({len(raw)} bytes)")
        if raw[0] != CID_TYPE_ENCRYPTED:
            raise CIDError(f"not an encrypted CID (type {raw[0]:#04x}, expected 0xae)")
        if raw[1] != ENCRYPTION_XCHACHA20_POLY1305:
            raise CIDError(f"unsupported cipher {raw[1]:#04x} (expected 0xa6, XChaCha20-Poly1305)")
        if raw[2] != CHUNK_EXPONENT:
            raise CIDError(f"unsupported chunk size 2^{raw[2]} (expected 2^18)")
        if raw[3] != 0x1F:
            raise CIDError("encrypted CID: unsupported hash of the ciphertext (expected BLAKE3, 0x1f)")
        return cls(raw[4:36], raw[36:68], int.from_bytes(raw[68:72], "little"), BlobId.from_bytes(raw[72:]))

    @property
    def stored_size(self) -> int:
        padded = self.plain.size + self.padding
        chunks = max(1, -(-padded // CHUNK_SIZE))
        return padded + chunks * TAG_SIZE


def encrypt(plaintext: bytes, key: bytes, pad: bool = True) -> tuple[bytes, int]:
    """Return (ciphertext, padding)."""
    padding = (-len(plaintext)) % PAD_TO if pad else 0
    if _lib is None or len(key) != 32:
        return _encrypt_binding(plaintext, key, padding), padding
    n = len(plaintext)
    padded = n + padding
    chunks = max(1, -(-padded // CHUNK_SIZE))
    out = bytearray(padded + chunks * TAG_SIZE)
    dst = _ffi.from_buffer("unsigned char[]", out)
    src = _ffi.from_buffer("unsigned char[]", plaintext)
    for i in range(chunks):
        off = i * CHUNK_SIZE
        size = min(CHUNK_SIZE, padded - off)
        if off + size <= n:
            m = src + off
        else:  # the last chunk, with its padding: a copy of at most one chunk
            m = _ffi.from_buffer("unsigned char[]", bytes(plaintext[off:]) + bytes(off + size - n))
        _lib.crypto_aead_xchacha20poly1305_ietf_encrypt(dst + off + i * TAG_SIZE, _ffi.NULL, m, size, _ffi.NULL, 0,
                                                        _ffi.NULL, _nonce(i), key)
    return bytes(out) if len(out) <= 4096 else out, padding


def _encrypt_binding(plaintext: bytes, key: bytes, padding: int) -> bytes:
    data = plaintext + b"\0" * padding if padding else plaintext
    view = memoryview(data)
    return b"".join(crypto_aead_xchacha20poly1305_ietf_encrypt(bytes(view[off:off + CHUNK_SIZE]), None, _nonce(i), key)
                    for i, off in enumerate(range(0, max(1, len(data)), CHUNK_SIZE)))


def decrypt(ciphertext: bytes, key: bytes, plain_size: int, padding: int) -> bytes:
    padded = plain_size + padding
    chunks = max(1, -(-padded // CHUNK_SIZE))
    if len(ciphertext) != padded + chunks * TAG_SIZE:
        raise DecryptError(f"object is {len(ciphertext)} bytes, expected {padded + chunks * TAG_SIZE} "
                           f"(truncated, extended or a chunk missing)")
    step = CHUNK_SIZE + TAG_SIZE
    if _lib is None or len(key) != 32:
        out = []
        view = memoryview(ciphertext)
        for i in range(chunks):
            try:
                out.append(crypto_aead_xchacha20poly1305_ietf_decrypt(bytes(view[i * step:(i + 1) * step]), None,
                                                                      _nonce(i), key))
            except CryptoError:
                raise DecryptError(f"chunk {i} fails authentication (wrong key, or the object was altered)") from None
        data = out[0] if len(out) == 1 else b"".join(out)
    else:
        buf = bytearray(padded)
        dst = _ffi.from_buffer("unsigned char[]", buf)
        src = _ffi.from_buffer("unsigned char[]", ciphertext)
        for i in range(chunks):
            size = min(step, len(ciphertext) - i * step)
            if _lib.crypto_aead_xchacha20poly1305_ietf_decrypt(dst + i * CHUNK_SIZE, _ffi.NULL, _ffi.NULL,
                                                               src + i * step, size, _ffi.NULL, 0, _nonce(i), key):
                raise DecryptError(f"chunk {i} fails authentication (wrong key, or the object was altered)")
        data = bytes(buf)
    if padding and data[plain_size:].strip(b"\0"):
        raise DecryptError("padding is not zero")
    return data[:plain_size] if padding else data


def open_unpadded(ciphertext: bytes, key: bytes) -> bytes:
    """Decrypt an object sealed with pad=False, whose size only its ciphertext tells."""
    if len(ciphertext) < TAG_SIZE:
        raise DecryptError("object is too short")
    chunks = max(1, -(-len(ciphertext) // (CHUNK_SIZE + TAG_SIZE)))
    return decrypt(ciphertext, key, len(ciphertext) - chunks * TAG_SIZE, 0)


def seal(plaintext: bytes, key: bytes, pad: bool = True, plain: BlobId | None = None) -> tuple[bytes, EncryptedCID]:
    """Encrypt; `plain` is the plaintext's blob id if the caller has it already."""
    ciphertext, padding = encrypt(plaintext, key, pad)
    return ciphertext, EncryptedCID(digest(ciphertext), key, padding, plain or BlobId.of(plaintext))


def open_sealed(ciphertext: bytes, ecid: EncryptedCID) -> bytes:
    """Decrypt and check everything the encrypted CID promises."""
    if digest(ciphertext) != ecid.hash:
        raise DecryptError("ciphertext does not match the hash in its encrypted CID")
    plain = decrypt(ciphertext, ecid.key, ecid.plain.size, ecid.padding)
    if digest(plain) != ecid.plain.hash:
        raise DecryptError("plaintext does not match the blob id in its encrypted CID")
    return plain
