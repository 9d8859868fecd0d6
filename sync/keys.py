"""The device's keys, in files of their own (0600) under <home>/keys.

* device.key: the device's 32-byte Ed25519 seed. Every head this device signs is signed with a key
  derived from it and the session id, so one backup (the mnemonic) restores them all.
* sessions/<session id>.key: the session's random 32-byte key. Deleting it makes every copy of the
  session's snapshots in any store unreadable (crypto-shredding).

The daemon makes a session's key files with `make_session_key`, `make_write_secret` and `store_keys`:
each file is written and fsynced in a worker thread, so that the event loop does not wait out the
fsyncs (two per file: 5-30 ms of a stalled loop per new session on a busy disk, every request waiting).
A key being made is made once, whoever else asks for it meanwhile.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Literal, overload

from mnemonic import Mnemonic
from nacl.signing import SigningKey

from ..storage.fsutil import atomic_write, ensure_durable_dir, read_small, remove_leftover_temp_files
from ..storage.ids import ID_RE
from .crypto import CTX_ANNOUNCE, CTX_HEAD_SIGNING, derive

_WORDS = Mnemonic("english")
DEVICE_KEY = "device.key"  # in the key folder: the device's seed
CACHE_SESSIONS = 1024
# session files (a key, a write secret, earlier keys, a rekey record, or that there is none) kept in memory
FILES_KEPT = 4 * CACHE_SESSIONS
SESSION_FILES = ("key", "write", "old", "rekey")  # a session's files: sessions/<session id>.<one of these>


class KeyError_(Exception):
    """A key that is missing, malformed, or a backup phrase that does not check out."""


def _read_file(path: str) -> bytes | None:
    """The whole of a small file, or None if there is none (storage/fsutil.read_small: four system calls
    and buffers no larger than the file)."""
    try:
        return read_small(path)
    except FileNotFoundError:
        return None


def _checked(path: str, data: bytes | None) -> bytes | None:
    if data is not None and len(data) != 32:
        raise KeyError_(f"key file {path} is damaged ({len(data)} bytes, expected 32)")
    return data


def _read_key(path: str) -> bytes | None:
    return _checked(path, _read_file(path))


def _session_file(name: str) -> str | None:
    """The session whose file `name` (in a key folder's sessions/) is, or None for a name none of ours has."""
    sid, dot, suffix = name.rpartition(".")
    return sid if dot and suffix in SESSION_FILES and ID_RE.match(sid) else None


def key_files(folder: str) -> list[str]:
    """The paths of the key files in the key folder `folder`, as this sessiond names them: the device key and
    the sessions' files (none of another name, such as a note left there). Reads only."""
    out = [os.path.join(folder, DEVICE_KEY)] if os.path.lexists(os.path.join(folder, DEVICE_KEY)) else []
    sessions_dir = os.path.join(folder, "sessions")
    try:
        names = sorted(os.listdir(sessions_dir))
    except FileNotFoundError:
        return out
    return out + [os.path.join(sessions_dir, n) for n in names if _session_file(n)]


def sessions_with_files(sessions_dir: str) -> set[str]:
    """The sessions that have files in `sessions_dir` (a key folder's sessions/: a key, a write secret, earlier
    keys, a rekey record); none if it is not there. Reads only: no key folder is made or changed."""
    try:
        names = os.listdir(sessions_dir)
    except FileNotFoundError:
        return set()
    return {sid for sid in map(_session_file, names) if sid}


class KeyStore:
    def __init__(self, folder: str):
        self.folder = folder
        self.sessions_dir = os.path.join(folder, "sessions")
        ensure_durable_dir(folder)  # (the device key and the sessions' keys in them are acknowledged once written)
        ensure_durable_dir(self.sessions_dir)
        self.device_path = os.path.join(folder, DEVICE_KEY)
        seed = _read_key(self.device_path)
        if seed is None:
            seed = secrets.token_bytes(32)
            atomic_write(self.device_path, seed, 0o600)
        self._seed = seed
        # Derived head keys of recently used sessions; idle sessions fall out (least recently used
        # first) and are derived again when needed. Nothing about a session is only in memory.
        self._head_keys: OrderedDict[str, SigningKey] = OrderedDict()
        self._pk_sids: OrderedDict[bytes, str] = OrderedDict()  # head public key -> its session (recent ones)
        # The session key files of recently used sessions as last read or written here (None: no such
        # file), so that a push, a pull or a share does not open them again: every session key file is
        # written through this object while the daemon runs (the CLI changes only the device key, and
        # only with the daemon stopped). A copy of what is on disk, written only after the file is.
        self._files: OrderedDict[str, bytes | None] = OrderedDict()
        # Key files being made in a worker thread (make_session_key, make_write_secret): whoever asks for
        # one meanwhile waits for that one, and no second random key is made for the same file.
        self._making: dict[str, asyncio.Task[dict[str, bytes]]] = {}

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
        pk = b"\xed" + bytes(self.head_key(sid).verify_key)
        self._pk_sids[pk] = sid
        self._pk_sids.move_to_end(pk)
        if len(self._pk_sids) > FILES_KEPT:
            self._pk_sids.popitem(last=False)
        return pk

    async def own_head_key(self, pk: bytes, session_ids: Callable[[], Awaitable[list[str]]]) -> SigningKey | None:
        """The key of this device's head `pk` (0xed | public key), or of a members slot it can sign (a
        session's announce key, from its write secret), or None: for a head that must be signed again in
        another format when it is sent later (an IPNS record, from a mirror's outbox, which keeps only the
        entry). A head not seen since the start is looked for among `session_ids()` (a derivation or two
        each, yielding to the loop now and then)."""
        sid = self._pk_sids.get(pk)
        if sid is not None:
            return self.head_key(sid)
        for i, s in enumerate(await session_ids()):
            if self.head_pk(s) == pk:
                return self.head_key(s)
            ws = self.write_secret(s)  # a members slot's head is signed by the session's announce key
            if ws is not None:
                announce = SigningKey(derive(CTX_ANNOUNCE, ws))
                if b"\xed" + bytes(announce.verify_key) == pk:
                    return announce
            if i % 256 == 255:
                await asyncio.sleep(0)
        return None

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
            self._not_making(path)
            key = secrets.token_bytes(32)
            self._write(path, key)
        return key

    async def make_session_key(self, sid: str) -> bytes:
        """The session's key, made (random) and written durably first if it has none, off the event loop."""
        return await self._made(self._session_path(sid))

    def session_key_early(self, sid: str) -> tuple[bytes | None, asyncio.Task[dict[str, bytes]] | None]:
        """The session's key without waiting for its file: (the key on disk, None); or, if it has none,
        (a new key, the task writing it durably, just begun in a worker thread, as make_session_key); or,
        if another caller is making it, (None, that task). Whoever seals with a key not yet on disk
        awaits the task (shielded) before anything names what it sealed: a first push reads and seals
        meanwhile (the file's two fsyncs were 1.5-13 ms at the start of each first push)."""
        path = self._session_path(sid)
        key = self._key_file(path)
        if key is not None:
            return key, None
        if path in self._making:
            return None, self._making[path]
        key = secrets.token_bytes(32)
        return key, self._start_writing([(path, key, True)])

    async def make_write_secret(self, sid: str) -> bytes:
        """The session's write secret, made (random) and written durably first if it has none, off the loop."""
        return await self._made(self._session_path(sid)[:-4] + ".write")

    async def _made(self, path: str) -> bytes:
        key = self._key_file(path)
        if key is not None:
            return key
        task = self._making.get(path) or self._start_writing([(path, secrets.token_bytes(32), True)])
        return (await asyncio.shield(task))[path]  # a caller cancelled does not cancel what others wait for

    def _start_writing(self, files: list[tuple[str, bytes, bool]]) -> asyncio.Task[dict[str, bytes]]:
        """Write `files` ((path, bytes, fsync the folder after it)) in a worker thread; until they are
        written, whoever asks for one of them waits for this write (`_made`)."""
        for p, _, _ in files:
            self._not_making(p)
            self._files.pop(p, None)  # a failed write leaves the file as it may be: read it again
        task = asyncio.ensure_future(self._write_off_loop(files))
        for p, _, _ in files:
            self._making[p] = task
        return task

    async def _write_off_loop(self, files: list[tuple[str, bytes, bool]]) -> dict[str, bytes]:
        me = asyncio.current_task()

        def write() -> None:
            for p, k, sync_dir in files:
                atomic_write(p, k, 0o600, sync_dir=sync_dir)

        try:
            await asyncio.to_thread(write)
        finally:
            dropped = [p for p, _, _ in files if self._making.get(p) is not me]
            for p, _, _ in files:
                if p not in dropped:
                    del self._making[p]
        for p, k, _ in files:
            if p in dropped:  # the session's keys were deleted meanwhile (delete_session_key): so is this
                if _read_file(p) == k:
                    self._unlink(p)
            else:
                self._keep(p, k)
        if dropped:
            raise KeyError_(f"the key file {os.path.basename(dropped[0])} was deleted while it was being written")
        return {p: k for p, k, _ in files}

    def _not_making(self, path: str) -> None:
        if path in self._making:  # a second random key for the same file would replace the one being made
            raise KeyError_(f"the key file {os.path.basename(path)} is being made; wait for make_*()")

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
            self._not_making(path)
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
        for p, k, sync_dir in self._key_files(sid, key, write_secret):
            self._write(p, k, sync_dir=sync_dir)

    async def store_keys(self, sid: str, key: bytes | None, write_secret: bytes | None) -> None:
        """`set_keys`, with the files written and fsynced in a worker thread (an import's), not on the loop."""
        files = self._key_files(sid, key, write_secret)
        if files:
            await asyncio.shield(self._start_writing(files))

    def _key_files(self, sid: str, key: bytes | None, write_secret: bytes | None) -> list[tuple[str, bytes, bool]]:
        """(path, bytes, fsync the folder after it) of the files `set_keys` writes: the folder once, last."""
        if key is not None and len(key) != 32:
            raise KeyError_("a session key is 32 bytes")
        path = self._session_path(sid)
        files = [(p, k) for p, k in ((path, key), (path[:-4] + ".write", write_secret)) if k is not None]
        return [(p, k, i == len(files) - 1) for i, (p, k) in enumerate(files)]

    def set_session_key(self, sid: str, key: bytes) -> None:
        if len(key) != 32:
            raise KeyError_("a session key is 32 bytes")
        self._write(self._session_path(sid), key)

    def sessions_with_files(self) -> set[str]:
        """The sessions that have files here (a key, a write secret, earlier keys, a rekey record)."""
        return sessions_with_files(self.sessions_dir)

    def remove_leftover_temp_files(self, before: float) -> list[str]:
        """Removes the files a write into the key folder or the sessions' folder left when the process
        writing them died before renaming them (atomic_write's temporary files: a key each, the device key,
        the store credentials), last changed before `before` (wall-clock seconds: the daemon's start, so
        that none of them is a write under way); returns their names."""
        return [
            name for folder in (self.folder, self.sessions_dir) for name in remove_leftover_temp_files(folder, before)
        ]

    def delete_session_key(self, sid: str) -> None:
        path = self._session_path(sid)
        for p in (path[:-3] + suffix for suffix in SESSION_FILES):
            self._making.pop(p, None)  # one being made is removed when it is written (_make)
            self._unlink(p)

    # ------------------------------------------------------------------ backup as words
    def export_mnemonic(self) -> str:
        return _WORDS.to_mnemonic(self._seed)

    def import_mnemonic(self, phrase: str) -> None:
        seed = mnemonic_to_seed(phrase)
        atomic_write(self.device_path, seed, 0o600)
        self._seed = seed
        self._head_keys.clear()


def device_key_problem(folder: str) -> str | None:
    """What is wrong with the device key file in the key folder `folder`: None if it is there and well
    formed, else "missing" or "damaged (N bytes, expected 32)". Makes nothing (a KeyStore makes a key)."""
    data = _read_file(os.path.join(folder, DEVICE_KEY))
    if data is None:
        return "missing"
    if len(data) != 32:
        return f"damaged ({len(data)} bytes, expected 32)"
    return None


def restore_device_key(folder: str, phrase: str) -> None:
    """Write the seed of the 24 backup words `phrase` as the device key (atomically, 0600), whatever
    the file held before (nothing, a damaged key, another key): the caller decides whether it may."""
    seed = mnemonic_to_seed(phrase)
    ensure_durable_dir(folder)
    atomic_write(os.path.join(folder, DEVICE_KEY), seed, 0o600)


def mnemonic_to_seed(phrase: str) -> bytes:
    words = phrase.lower().split()
    if len(words) != 24:
        raise KeyError_(f"a key backup is 24 words; got {len(words)}")
    # The words are the key: an error names a wrong word by its place, never quotes it (a typo is most often
    # a letter off the real word, and errors end up in scrollbacks and CI logs).
    unknown = [i for i, w in enumerate(words, 1) if w not in _WORDS.wordlist]
    if unknown:
        raise KeyError_(f"{_places(unknown)} not in the BIP-39 English word list (check the spelling there)")
    if not _WORDS.check(" ".join(words)):
        raise KeyError_(
            "the words fail their checksum: each is in the word list, but one is wrong or they are out of order"
        )
    return bytes(_WORDS.to_entropy(" ".join(words)))


def _places(positions: list[int]) -> str:
    """'word 5 is', 'word 5 and word 9 are', 'words 1, 5 and 9 are': where the wrong words are, not what."""
    if len(positions) == 1:
        return f"word {positions[0]} is"
    if len(positions) == 2:
        return f"word {positions[0]} and word {positions[1]} are"
    return f"words {', '.join(map(str, positions[:-1]))} and {positions[-1]} are"
