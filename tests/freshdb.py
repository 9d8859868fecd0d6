"""A fresh database for the property tests, which open one or two an example: a copy of one made once per process,
since opening a copy costs ~3 ms of CPU less than making a new database (its schema created at once:
storage/freshschema.py; before that every migration ran, ~30 ms, most of such a test's time). In memory where the
system has a tmpfs: these tests are about order, not durability."""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import tempfile

from sessiond.storage.database import Database

SHM = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
_TEMPLATE: list[str] = []


async def _template() -> str:
    if not _TEMPLATE:
        folder = tempfile.mkdtemp(prefix="sd-template-", dir=SHM)
        atexit.register(shutil.rmtree, folder, True)
        await (await Database.open(f"{folder}/template.db")).close()  # (closed: its WAL checkpointed in)
        _TEMPLATE.append(f"{folder}/template.db")
    return _TEMPLATE[0]


def fresh_copy(path: str) -> None:
    """A fresh database at `path`, from code outside an event loop."""
    shutil.copyfile(_TEMPLATE[0] if _TEMPLATE else asyncio.run(_template()), path)


async def open_fresh(path: str) -> Database:
    """A fresh database at `path`, opened, from a coroutine."""
    shutil.copyfile(await _template(), path)
    return await Database.open(path)
