"""The device's keys, in files of their own (0600) under <home>/keys.

* device.key: the device's 32-byte Ed25519 seed. Every head this device signs is signed with a key
  derived from it and the session id, so one backup (the mnemonic) restores them all.
* sessions/<session id>.key: the session's random 32-byte key. Deleting it makes every copy of the
  session's snapshots in any store unreadable (crypto-shredding).
"""

from __future__ import annotations

import os
import secrets
from collections import OrderedDict
from typing import Literal, overload

from mnemonic import Mnemonic
from nacl.signing import SigningKey

from ..storage.fsutil import atomic_write, ensure_private_dir
from ..storage.ids import ID_RE
from .crypto import CTX_HEAD_SIGNING, derive

_WORDS = Mnemonic("english")
CACHE_SESSIONS = 1024


class KeyError_(Exception):
    """A key that is missing, malformed, or a backup phrase that does not check out."""


def _read_key(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    if len(data) != 32:
        raise KeyError_(f"key file {path} is damaged ({len(data)} bytes, expected 32)")
    return data


class KeyStore:
    def __init__(self, folder: str):
        self.folder = folder
        self.sessions_dir = os.path.join(folder, "sessions")
        ensure_private_dir(folder)
        ensure_private_dir(self.sessions_dir)
        self.device_path = os.path.join(folder, "device.key")
        seed = _read_key(self.device_path)
        if seed is None:
            seed = secrets.token_bytes(32)
            atomic_write(self.device_path, seed, 0o600)
        self._seed = seed
        # Derived head keys of recently used sessions; idle sessions fall out (least recently used
        # first) and are derived again when needed. Nothing about a session is only in memory.
        self._head_keys: OrderedDict[str, SigningKey] = OrderedDict()

    @property
    def device_public(self) -> bytes:
        return bytes(SigningKey(self._seed).verify_key)

    def head_key(self, sid: str) -> SigningKey:
        """The key that signs this device's head for session `sid`."""
        key = self._head_keys.get(sid)
        if key is None:
            key = SigningKey(derive(CTX_HEAD_SIGNING, self._seed + sid.encode()))
            self._head_keys[sid] = key
            if len(self._head_keys) > CACHE_SESSIONS:
                self._head_keys.popitem(last=False)
        else:
            self._head_keys.move_to_end(sid)
        return key

    def head_pk(self, sid: str) -> bytes:
        return b"\xed" + bytes(self.head_key(sid).verify_key)

    def _session_path(self, sid: str) -> str:
        if not ID_RE.match(sid):
            raise KeyError_(f"not a session id: {sid!r:.80}")
        return os.path.join(self.sessions_dir, sid + ".key")

    @overload
    def session_key(self, sid: str, *, create: Literal[True]) -> bytes: ...
    @overload
    def session_key(self, sid: str, *, create: bool = False) -> bytes | None: ...
    def session_key(self, sid: str, *, create: bool = False) -> bytes | None:
        path = self._session_path(sid)
        key = _read_key(path)
        if key is None and create:
            key = secrets.token_bytes(32)
            atomic_write(path, key, 0o600)
        return key

    @overload
    def write_secret(self, sid: str, *, create: Literal[True]) -> bytes: ...
    @overload
    def write_secret(self, sid: str, *, create: bool = False) -> bytes | None: ...
    def write_secret(self, sid: str, *, create: bool = False) -> bytes | None:
        """The secret that lets a device add itself as a writer of `sid` (held by owners and by devices
        that imported a read-write code)."""
        path = self._session_path(sid)[:-4] + ".write"
        key = _read_key(path)
        if key is None and create:
            key = secrets.token_bytes(32)
            atomic_write(path, key, 0o600)
        return key

    def set_write_secret(self, sid: str, key: bytes) -> None:
        atomic_write(self._session_path(sid)[:-4] + ".write", key, 0o600)

    def session_keys(self, sid: str) -> list[bytes]:
        """The current key first, then every earlier key of the session (kept to read what was written
        before a rekey)."""
        cur = self.session_key(sid)
        if cur is None:
            return []
        try:
            with open(self._session_path(sid)[:-4] + ".old", "rb") as f:
                old = f.read()
        except FileNotFoundError:
            old = b""
        return [cur] + [old[i : i + 32] for i in range(0, len(old) - len(old) % 32, 32)]

    def rotate(self, sid: str, new_key: bytes, new_write: bytes | None) -> None:
        """Make `new_key` the session's key, keeping the old ones (rekey). Safe to repeat after a crash
        part-way (a rekey resumed): a key already current or already kept is not kept twice."""
        base = self._session_path(sid)[:-4]
        keys = self.session_keys(sid)
        if not keys or keys[0] != new_key:
            kept = list(dict.fromkeys(k for k in keys if k != new_key))
            atomic_write(base + ".old", b"".join(kept), 0o600)
            atomic_write(base + ".key", new_key, 0o600)
        if new_write is not None:
            atomic_write(base + ".write", new_write, 0o600)
        else:
            try:
                os.unlink(base + ".write")
            except FileNotFoundError:
                pass

    # A rekey under way: the new keys and what is left to do, written before anything of the rekey
    # reaches the store, so that a crash at any step is finished at the next start (sync/rekey.py).
    def set_rekey_pending(self, sid: str, record: bytes) -> None:
        atomic_write(self._session_path(sid)[:-4] + ".rekey", record, 0o600)

    def rekey_pending(self, sid: str) -> bytes | None:
        try:
            with open(self._session_path(sid)[:-4] + ".rekey", "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def clear_rekey_pending(self, sid: str) -> None:
        try:
            os.unlink(self._session_path(sid)[:-4] + ".rekey")
        except FileNotFoundError:
            pass

    def set_keys(self, sid: str, key: bytes | None, write_secret: bytes | None) -> None:
        """Write a session's key and write secret (either may be None: left as it is), each atomically,
        both durable on return: one fsync of the folder makes both names durable (an import writes both)."""
        if key is not None and len(key) != 32:
            raise KeyError_("a session key is 32 bytes")
        path = self._session_path(sid)
        files = [(p, k) for p, k in ((path, key), (path[:-4] + ".write", write_secret)) if k is not None]
        for i, (p, k) in enumerate(files):
            atomic_write(p, k, 0o600, sync_dir=i == len(files) - 1)

    def set_session_key(self, sid: str, key: bytes) -> None:
        if len(key) != 32:
            raise KeyError_("a session key is 32 bytes")
        atomic_write(self._session_path(sid), key, 0o600)

    def delete_session_key(self, sid: str) -> None:
        path = self._session_path(sid)
        for p in (path, path[:-4] + ".write", path[:-4] + ".old", path[:-4] + ".rekey"):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass

    # ------------------------------------------------------------------ backup as words
    def export_mnemonic(self) -> str:
        return _WORDS.to_mnemonic(self._seed)

    def import_mnemonic(self, phrase: str) -> None:
        seed = mnemonic_to_seed(phrase)
        atomic_write(self.device_path, seed, 0o600)
        self._seed = seed
        self._head_keys.clear()


def mnemonic_to_seed(phrase: str) -> bytes:
    words = phrase.lower().split()
    if len(words) != 24:
        raise KeyError_(f"a key backup is 24 words; got {len(words)}")
    unknown = [w for w in words if w not in _WORDS.wordlist]
    if unknown:
        raise KeyError_(f"not in the word list: {', '.join(unknown[:5])} (check the spelling)")
    if not _WORDS.check(" ".join(words)):
        raise KeyError_("the words fail their checksum: a word is wrong or out of order")
    return bytes(_WORDS.to_entropy(" ".join(words)))
