"""What makes a folder a folder store (stores/file.py), told apart from a folder that merely has its path.

A folder store is made once, at its first use (`FileStore(create=True)`: a home's first start with it,
or `--change-store` to it): its folder, `objects/` and `heads/`, then the marker file MARKER, written
atomically last (the same bytes on every device, so that two devices making the store at once in a
synced folder write the same file). From then on nothing makes the store's folder again: a store folder
that went (a share not mounted, a synced folder removed) or an empty folder in its place (the mount
point of a share not mounted) is the store unreachable until it is back, never a new store on the local
disk that the other devices do not see, and that the share hides once mounted again. Inside a folder
that holds the marker, `objects/`, `heads/` and `objects/<2 hex>/` are made again if they went (a store
emptied by hand). A folder holding `objects/` and `heads/` without the marker is a store an older
version made: a store all the same, and its marker is written at its first write (mark_old_store).
"""

from __future__ import annotations

import errno
import os

from ..storage import fsutil
from ..storage.fsutil import atomic_write, ensure_durable_dir
from .base import StoreError
from .errors import MOVE_STORE, FolderAway, folder_error

MARKER = "sessiond-store"
MARKER_BYTES = b"sessiond folder store, format 1 (docs/FORMATS.md)\n"


def _marked(root: str) -> bool:
    return os.path.isfile(os.path.join(root, MARKER))


def _laid_out(root: str) -> bool:
    return os.path.isdir(os.path.join(root, "objects")) and os.path.isdir(os.path.join(root, "heads"))


def is_store(root: str) -> bool:
    """Whether the folder `root` is a folder store: its marker, or (made by an older version) its layout."""
    return _marked(root) or _laid_out(root)


def create(root: str) -> None:
    """Make the store at `root` if it is not there yet: its folders (and any missing parent), then its
    marker. A folder that is a store already is left as it is (an older one gets its marker)."""
    ensure_durable_dir(root)
    ensure_durable_dir(os.path.join(root, "objects"))
    ensure_durable_dir(os.path.join(root, "heads"))
    if not _marked(root):
        atomic_write(os.path.join(root, MARKER), MARKER_BYTES, 0o600)


def mark_old_store(root: str) -> None:
    """Write the marker into a store an older version made (its layout, no marker), so that the store is
    known by it even if its objects/ or heads/ goes. Nothing in a folder that is not a store."""
    if not _marked(root) and _laid_out(root):
        atomic_write(os.path.join(root, MARKER), MARKER_BYTES, 0o600)


def make_folder(root: str, path: str, *, durable: bool = True) -> None:
    """Make `path`, a folder of the store at `root` (`objects/<2 hex>`, or `objects/` or `heads/`), if it
    is not there, with the folders between them that went: never `root` itself, and `objects/` or
    `heads/` only in a folder holding the marker. FileNotFoundError otherwise, as for a folder missing.
    With `durable`, the new folder's entry is fsynced in its parent (else the caller does it: a batch
    fsyncs objects/ once for the folders it made); a parent made here is made durable in any case."""
    parent = os.path.dirname(path)
    if parent == root and not _marked(root):
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        if not os.path.isdir(path):
            raise
        return
    except FileNotFoundError:
        if parent == root:  # the store's folder itself went
            raise
        make_folder(root, parent)
        os.mkdir(path, 0o700)
    if durable:
        fsutil.fsync_dir(parent)  # (through the module: tests trace it)


def make_failure(root: str, exc: OSError) -> StoreError:
    """The store at `root` not made (create() failed: its first use, tried again at each call until it is
    made) as the failure it is, in folder_error's words: a file where one of its folders goes (EEXIST: a
    path mistyped, a share's mount point taken by a file) is a folder missing or not a folder."""
    if exc.errno == errno.EEXIST:
        exc = NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), exc.filename)
    return folder_error("cannot make the store", root, exc)


def away(root: str) -> StoreError | None:
    """What a look at the folder says of the store at `root`, with no read or write: a folder missing or
    empty (not a store) as a read of it fails (failure()); None if it is a store."""
    if is_store(root):
        return None
    return failure("cannot use the store", root, root, FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT)))


def failure(what: str, root: str, where: str, exc: OSError) -> StoreError:
    """stores/errors.py folder_error for a read or write in `where`, in the store at `root`; a folder
    that is there but holds no store (an empty mount point) is named as such."""
    if exc.errno in (errno.ENOENT, errno.ENOTDIR) and os.path.isdir(root) and not is_store(root):
        return FolderAway(
            f"{what}: the store folder {root} is empty or not a store (it has no {MARKER} file, nor objects/"
            f" and heads/: the mount point of a share not mounted?); mount its disk or share, or put the store"
            f" folder back, then `sessiond sync --wait`; or {MOVE_STORE}"
        )
    return folder_error(what, where, exc)
