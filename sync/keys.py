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
# session files (a key, a write secret, earlier keys, a rekey record, or that there is none) kept in memory
FILES_KEPT = 4 * CACHE_SESSIONS


class KeyError_(Exception):
    """A key that is missing, malformed, or a backup phrase that does not check out."""


def _read_file(path: str) -> bytes | None:
    """The whole of a small file, or None if there is none (os.open/read: 3 system calls, not 7)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        parts = []
        while chunk := os.read(fd, 65536):
            parts.append(chunk)
    finally:
        os.close(fd)
    return b"".join(parts)


def _checked(path: str, data: bytes | None) -> bytes | None:
    if data is not None and len(data) != 32:
        raise KeyError_(f"key file {path} is damaged ({len(data)} bytes, expected 32)")
    return data


def _read_key(path: str) -> bytes | None:
    return _checked(path, _read_file(path))


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
        # The session key files of recently used sessions as last read or written here (None: no such
        # file), so that a push, a pull or a share does not open them again: every session key file is
        # written through this object while the daemon runs (the CLI changes only the device key, and
        # only with the daemon stopped). A copy of what is on disk, written only after the file is.
        self._files: OrderedDict[str, bytes | None] = OrderedDict()

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

    # ------------------------------------------------------------------ the session files, cached
    def _load(self, path: str) -> bytes | None:
        files = self._files
        if path in files:
            files.move_to_end(path)
            return files[path]
        data = _read_file(path)
        self._keep(path, data)
        return data

    def _keep(self, path: str, data: bytes | None) -> None:
        self._files[path] = data
        self._files.move_to_end(path)
        while len(self._files) > FILES_KEPT:
            self._files.popitem(last=False)

    def _write(self, path: str, data: bytes, *, sync_dir: bool = True) -> None:
        self._files.pop(path, None)  # a failed write leaves the file as it may be: read it again
        atomic_write(path, data, 0o600, sync_dir=sync_dir)
        self._keep(path, data)

    def _unlink(self, path: str) -> None:
        self._files.pop(path, None)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        self._keep(path, None)

    def _key_file(self, path: str) -> bytes | None:
        return _checked(path, self._load(path))

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
        key = self._key_file(path)
        if key is None and create:
            key = secrets.token_bytes(32)
            self._write(path, key)
        return key

    @overload
    def write_secret(self, sid: str, *, create: Literal[True]) -> bytes: ...
    @overload
    def write_secret(self, sid: str, *, create: bool = False) -> bytes | None: ...
    def write_secret(self, sid: str, *, create: bool = False) -> bytes | None:
        """The secret that lets a device add itself as a writer of `sid` (held by owners and by devices
        that imported a read-write code)."""
        path = self._session_path(sid)[:-4] + ".write"
        key = self._key_file(path)
        if key is None and create:
            key = secrets.token_bytes(32)
            self._write(path, key)
        return key

    def set_write_secret(self, sid: str, key: bytes) -> None:
        self._write(self._session_path(sid)[:-4] + ".write", key)

    def session_keys(self, sid: str) -> list[bytes]:
        """The current key first, then every earlier key of the session (kept to read what was written
        before a rekey)."""
        cur = self.session_key(sid)
        if cur is None:
            return []
        old = self._load(self._session_path(sid)[:-4] + ".old") or b""
        return [cur] + [old[i : i + 32] for i in range(0, len(old) - len(old) % 32, 32)]

    def rotate(self, sid: str, new_key: bytes, new_write: bytes | None) -> None:
        """Make `new_key` the session's key, keeping the old ones (rekey). Safe to repeat after a crash
        part-way (a rekey resumed): a key already current or already kept is not kept twice."""
        base = self._session_path(sid)[:-4]
        keys = self.session_keys(sid)
        if not keys or keys[0] != new_key:
            kept = list(dict.fromkeys(k for k in keys if k != new_key))
            self._write(base + ".old", b"".join(kept))
            self._write(base + ".key", new_key)
        if new_write is not None:
            self._write(base + ".write", new_write)
        else:
            self._unlink(base + ".write")

    # A rekey under way: the new keys and what is left to do, written before anything of the rekey
    # reaches the store, so that a crash at any step is finished at the next start (sync/rekey.py).
    def set_rekey_pending(self, sid: str, record: bytes) -> None:
        self._write(self._session_path(sid)[:-4] + ".rekey", record)

    def rekey_pending(self, sid: str) -> bytes | None:
        return self._load(self._session_path(sid)[:-4] + ".rekey")

    def clear_rekey_pending(self, sid: str) -> None:
        self._unlink(self._session_path(sid)[:-4] + ".rekey")

    def set_keys(self, sid: str, key: bytes | None, write_secret: bytes | None) -> None:
        """Write a session's key and write secret (either may be None: left as it is), each atomically,
        both durable on return: one fsync of the folder makes both names durable (an import writes both)."""
        if key is not None and len(key) != 32:
            raise KeyError_("a session key is 32 bytes")
        path = self._session_path(sid)
        files = [(p, k) for p, k in ((path, key), (path[:-4] + ".write", write_secret)) if k is not None]
        for i, (p, k) in enumerate(files):
            self._write(p, k, sync_dir=i == len(files) - 1)

    def set_session_key(self, sid: str, key: bytes) -> None:
        if len(key) != 32:
            raise KeyError_("a session key is 32 bytes")
        self._write(self._session_path(sid), key)

    def delete_session_key(self, sid: str) -> None:
        path = self._session_path(sid)
        for p in (path, path[:-4] + ".write", path[:-4] + ".old", path[:-4] + ".rekey"):
            self._unlink(p)

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
