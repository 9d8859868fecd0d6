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

import hashlib
from dataclasses import dataclass

import blake3
from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_decrypt, crypto_aead_xchacha20poly1305_ietf_encrypt
from nacl.exceptions import CryptoError

from ..stores.cid import BlobId, CIDError, digest, digest_parts

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
        return (
            bytes([CID_TYPE_ENCRYPTED, ENCRYPTION_XCHACHA20_POLY1305, CHUNK_EXPONENT, 0x1F])
            + self.hash
            + self.key
            + self.padding.to_bytes(4, "little")
            + self.plain.to_bytes()
        )

    @classmethod
    def from_bytes(cls, raw: bytes) -> EncryptedCID:
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


# Through PyNaCl's public binding, one call per 256 KiB chunk; each call takes bytes and returns a new
# bytes object (a zeroed buffer, the cipher with the GIL released, a copy out). What costs beside the
# cipher is memory traffic, so this makes no copy it can avoid: a chunk is cut straight from the
# plaintext (the binding takes no views), or the plaintext is made as its chunks in the first place
# (chunks_of: a long push's pages), only the last one is padded, a one-chunk object that needs no
# padding is passed as it is, and the sealed chunks can be written unjoined (encrypt_chunks). Measured
# against libsodium called directly into one buffer: bench/push.py and bench/results/push.json.
_ZEROS = bytes(PAD_TO)


def chunks_of(parts: list) -> list[bytes]:
    """The bytes-like `parts` (in order) put together as the pieces a plaintext is sealed in: CHUNK_SIZE
    bytes each but the last (at least one, maybe empty). One copy of each byte, as one join would make,
    and none more: `encrypt_chunks` takes the pieces as they are, where a joined plaintext is cut into
    copies of its chunks (a long push's pages, 1 MiB each, are made so)."""
    out: list[bytes] = []
    group: list = []
    room = CHUNK_SIZE
    for part in parts:
        n = len(part)
        while n > room:  # the part crosses a chunk's end: a view of each side
            view = memoryview(part)
            group.append(view[:room])
            out.append(b"".join(group))
            part, n, group, room = view[room:], n - room, [], CHUNK_SIZE
        group.append(part)
        room -= n
    if group or not out:
        out.append(b"".join(group))
    return out


def encrypt_chunks(chunks: list[bytes], key: bytes, pad: bool = True) -> tuple[list[bytes], int]:
    """Seal a plaintext given as its pieces (chunks_of's: CHUNK_SIZE bytes each but the last): (the
    sealed chunks, padding). Joined, the sealed chunks are the object's ciphertext (encrypt's); a
    store can write them as they are (Store.put_in_background), without the copy a join makes."""
    n = sum(map(len, chunks))
    padding = (-n) % PAD_TO if pad else 0
    if padding:  # only the last chunk is padded (padding < PAD_TO, which divides CHUNK_SIZE)
        chunks = [*chunks[:-1], b"".join((chunks[-1], _ZEROS[:padding]))]
    return [crypto_aead_xchacha20poly1305_ietf_encrypt(m, None, _nonce(i), key) for i, m in enumerate(chunks)], padding


def encrypt(plaintext: bytes, key: bytes, pad: bool = True) -> tuple[bytes, int]:
    """Return (ciphertext, padding)."""
    if type(plaintext) is not bytes:
        plaintext = bytes(plaintext)  # the binding takes bytes only
    n = len(plaintext)
    # cut straight from the plaintext (the binding takes no views); one chunk is passed as it is
    chunks = [plaintext[i : i + CHUNK_SIZE] for i in range(0, n, CHUNK_SIZE)] if n > CHUNK_SIZE else [plaintext]
    sealed, padding = encrypt_chunks(chunks, key, pad)
    return sealed[0] if len(sealed) == 1 else b"".join(sealed), padding


def decrypt(ciphertext: bytes, key: bytes, plain_size: int, padding: int) -> bytes:
    padded = plain_size + padding
    chunks = max(1, -(-padded // CHUNK_SIZE))
    if len(ciphertext) != padded + chunks * TAG_SIZE:
        raise DecryptError(
            f"object is {len(ciphertext)} bytes, expected {padded + chunks * TAG_SIZE} "
            f"(truncated, extended or a chunk missing)"
        )
    step = CHUNK_SIZE + TAG_SIZE
    out = []
    for i in range(chunks):
        sealed = (
            ciphertext if chunks == 1 and type(ciphertext) is bytes else bytes(ciphertext[i * step : (i + 1) * step])
        )
        try:
            out.append(crypto_aead_xchacha20poly1305_ietf_decrypt(sealed, None, _nonce(i), key))
        except CryptoError:
            raise DecryptError(f"chunk {i} fails authentication (wrong key, or the object was altered)") from None
    last = out[-1]
    if 0 < padding <= len(last):  # as sealed here (padding < PAD_TO): checked and cut in the last chunk alone
        if last[len(last) - padding :].strip(b"\0"):
            raise DecryptError("padding is not zero")
        out[-1] = last[: len(last) - padding]
    elif padding:  # an encrypted CID that claims more padding than one chunk
        data = b"".join(out)
        if data[plain_size:].strip(b"\0"):
            raise DecryptError("padding is not zero")
        return data[:plain_size]
    return out[0] if chunks == 1 else b"".join(out)


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


def seal_chunks(chunks: list[bytes], key: bytes, plain: BlobId) -> tuple[list[bytes], EncryptedCID]:
    """seal() of a padded object given as its pieces (chunks_of's), whose blob id `plain` the caller has:
    the ciphertext as its sealed chunks (encrypt_chunks), hashed piece by piece."""
    sealed, padding = encrypt_chunks(chunks, key)
    return sealed, EncryptedCID(digest_parts(sealed), key, padding, plain)


def open_sealed(ciphertext: bytes, ecid: EncryptedCID) -> bytes:
    """Decrypt and check everything the encrypted CID promises."""
    if digest(ciphertext) != ecid.hash:
        raise DecryptError("ciphertext does not match the hash in its encrypted CID")
    plain = decrypt(ciphertext, ecid.key, ecid.plain.size, ecid.padding)
    if digest(plain) != ecid.plain.hash:
        raise DecryptError("plaintext does not match the blob id in its encrypted CID")
    return plain


def key_fingerprint(key: bytes) -> bytes:
    """A keyed one-way hash of a session key: tells whether a recorded share code still opens the current key
    (a rekey changes it) without keeping anything that opens the session (share.py, rekeyfreeze.py)."""
    return hashlib.blake2b(key, digest_size=16, person=b"sessiond-sharefp").digest()
