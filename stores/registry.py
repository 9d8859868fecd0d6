"""S5 registry entries: signed, versioned mutable pointers (see docs/FORMATS.md, "Mutable heads").

Wire form:  0x07 | pk (0xed | 32-byte Ed25519 public key) | revision u64 LE | len u8 | data | signature (64)
Signed:     0x07 | revision u64 LE | len u8 | data
A higher revision wins; a lower or equal revision is rejected by every store and every reader.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

RECORD_TYPE_REGISTRY_ENTRY = 0x07
KEY_TYPE_ED25519 = 0xED
MAX_DATA = 48
MAX_REVISION = (1 << 64) - 1
# Entries (their wire bytes) whose signature this process made or has checked: the same bytes need not be
# checked again. An Ed25519 check costs ~160 us of CPU on the 2-core bench machine, and a folder store
# checked each head it wrote twice (the new entry, then the stored one read back under the lock before the
# next write) besides its reads of heads this process had just written (profile-load.md, "Signature
# checks"). Exact bytes only, so an entry with any byte changed is checked as before. Bounded: the oldest
# go first.
VERIFIED_KEPT = 4096
_verified: dict[bytes, None] = {}
_verified_lock = threading.Lock()  # the folder store's writer thread and the loop's threads both use it


def _known_good(raw: bytes) -> bool:
    return raw in _verified


def _remember(raw: bytes) -> None:
    with _verified_lock:
        _verified[raw] = None
        while len(_verified) > VERIFIED_KEPT:
            del _verified[next(iter(_verified))]


class RegistryError(ValueError):
    """A registry entry that is malformed, badly signed, or older than the one already known."""


def _signed_bytes(revision: int, data: bytes) -> bytes:
    return bytes([RECORD_TYPE_REGISTRY_ENTRY]) + revision.to_bytes(8, "little") + bytes([len(data)]) + data


@dataclass(frozen=True)
class RegistryEntry:
    pk: bytes  # 33 bytes: 0xed | Ed25519 public key
    revision: int
    data: bytes
    signature: bytes
    # The key that made this entry, when this process made it (RegistryEntry.create): a store whose
    # heads need a signature of their own format (an IPNS record) signs with it. Never compared,
    # printed or serialized.
    signing_key: SigningKey | None = field(default=None, compare=False, repr=False)

    @classmethod
    def create(cls, signing_key: SigningKey, revision: int, data: bytes) -> RegistryEntry:
        if not 0 <= revision <= MAX_REVISION:
            raise RegistryError("revision out of range")
        if len(data) > MAX_DATA:
            raise RegistryError(f"registry data is {len(data)} bytes; at most {MAX_DATA} fit")
        sig = signing_key.sign(_signed_bytes(revision, data)).signature
        entry = cls(bytes([KEY_TYPE_ED25519]) + bytes(signing_key.verify_key), revision, data, sig, signing_key)
        _remember(entry.to_bytes())  # signed just now with the key its pk names: good by construction
        return entry

    def to_bytes(self) -> bytes:
        return (
            bytes([RECORD_TYPE_REGISTRY_ENTRY])
            + self.pk
            + self.revision.to_bytes(8, "little")
            + bytes([len(self.data)])
            + self.data
            + self.signature
        )

    @classmethod
    def from_bytes(cls, raw: bytes) -> RegistryEntry:
        """Parse and verify the signature; raises RegistryError naming what is wrong."""
        if len(raw) < 1 + 33 + 8 + 1 + 64:
            raise RegistryError(f"registry entry truncated ({len(raw)} bytes)")
        if raw[0] != RECORD_TYPE_REGISTRY_ENTRY:
            raise RegistryError(f"not a registry entry (record type {raw[0]:#04x}, expected 0x07)")
        pk = raw[1:34]
        if pk[0] != KEY_TYPE_ED25519:
            raise RegistryError(f"registry key type {pk[0]:#04x} unsupported (expected 0xed, Ed25519)")
        revision = int.from_bytes(raw[34:42], "little")
        n = raw[42]
        if n > MAX_DATA:
            raise RegistryError(f"registry data length {n} exceeds {MAX_DATA}")
        if len(raw) != 43 + n + 64:
            raise RegistryError("registry entry has the wrong length for its data")
        entry = cls(pk, revision, raw[43 : 43 + n], raw[43 + n :])
        entry.verify()
        return entry

    def verify(self) -> None:
        raw = self.to_bytes()
        if _known_good(raw):
            return
        try:
            VerifyKey(self.pk[1:]).verify(_signed_bytes(self.revision, self.data), self.signature)
        except (BadSignatureError, ValueError):
            raise RegistryError("registry entry signature does not verify (forged or damaged head)") from None
        _remember(raw)
