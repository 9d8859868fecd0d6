"""What a relay stopped mid-write (kill -9, a power cut) leaves in its data folder, put right when it
starts, before it counts any quota. Every write is atomic (a temporary file, fsync, rename, fsync of
the folder) and the order of writes is chosen so that a cut leaves only these:

    `.tmp-*` files      an atomic write cut before its rename (any folder of DATA): deleted
    an object no account pins   an upload cut between the object and its pin (objects.py writes the
                        object first), or a delete cut between the pin and the object: deleted; no
                        quota counted it, and no device was told it was kept
    a head pin without its head a head set cut between its charge and the head itself (registry.py
                        charges first): deleted, so the account is not charged for a head it lacks

Nothing else is touched: a pin, a head, an account or a token is whole or absent."""

from __future__ import annotations

import logging
import os

from ..storage.fsutil import fsync_dir

log = logging.getLogger("sessiond.relay")

TEMP_PREFIX = ".tmp-"  # storage/fsutil.atomic_write's temporary files


def _files(folder: str) -> list[str]:
    try:
        return [n for n in os.listdir(folder) if os.path.isfile(os.path.join(folder, n))]
    except FileNotFoundError:
        return []


def _subfolders(folder: str) -> list[str]:
    try:
        return [os.path.join(folder, n) for n in os.listdir(folder) if os.path.isdir(os.path.join(folder, n))]
    except FileNotFoundError:
        return []


def _files_but(root: str, kept: set[str]) -> list[str]:
    """The files in the folders of `root` (a shard, an account) whose names are not in `kept`."""
    return [os.path.join(f, n) for f in _subfolders(root) for n in _files(f) if n not in kept and not n.startswith(".")]


def _delete(paths: list[str]) -> int:
    folders = set()
    for path in paths:
        try:
            os.unlink(path)
            folders.add(os.path.dirname(path))
        except FileNotFoundError:
            pass
    for folder in folders:
        fsync_dir(folder)
    return len(paths)


def tidy(data_dir: str) -> dict[str, int]:
    """Delete what writes cut short left in `data_dir`; how many of each kind went."""
    folders = [data_dir]
    for name in ("objects", "pins", "headpins"):
        folders += _subfolders(os.path.join(data_dir, name))
    for name in ("objects", "pins", "headpins", "heads", "accounts", "tokens", "invites"):
        folders.append(os.path.join(data_dir, name))
    temp = [os.path.join(f, n) for f in folders for n in _files(f) if n.startswith(TEMP_PREFIX)]
    gone = {"temp_files": _delete(temp)}

    pinned = {n for f in _subfolders(os.path.join(data_dir, "pins")) for n in _files(f)}
    gone["unpinned_objects"] = _delete(_files_but(os.path.join(data_dir, "objects"), pinned))
    heads = set(_files(os.path.join(data_dir, "heads")))
    gone["head_pins_without_head"] = _delete(_files_but(os.path.join(data_dir, "headpins"), heads))
    if any(gone.values()):
        log.warning("relay: put right what writes cut short left in %s: %s", data_dir, gone)
    return gone
