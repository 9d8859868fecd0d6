"""An earlier sessiond's storage code, kept in tests/data as the repository's history had it and imported beside the
current one (under a name of its own: the package's imports are relative), to make a database as that sessiond did,
at its schema, for a test of the migrations that come after it. Its storage folder imports nothing outside itself.

Kept as a file, not read from git, so the tests need no history (a shallow clone, an unpacked release); made by
`git archive --format=tar COMMIT storage | gzip -9n > tests/data/storage-COMMIT7.tar.gz`."""

from __future__ import annotations

import atexit
import importlib
import os
import shutil
import sys
import tarfile
import tempfile
from types import ModuleType

# The last commit of schema 19 (before migration 20, a checkpoint's version, and 21, a session's texts out of its row)
SCHEMA_19 = "db4ccb7470b93b704af6aa9704f4cffd1c4cc4d7"
_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
_ROOT = tempfile.mkdtemp(prefix="sessiond-oldcode-")  # (one per test process; the tests' tmp folders are per test)
atexit.register(shutil.rmtree, _ROOT, True)


def old_storage(commit: str = SCHEMA_19) -> ModuleType:
    """The `storage.database` module of sessiond at `commit` (its Database opens and migrates as that code did)."""
    name = f"sessiond_{commit[:12]}"
    if name not in sys.modules:
        with tarfile.open(os.path.join(_DATA, f"storage-{commit[:7]}.tar.gz")) as t:
            t.extractall(os.path.join(_ROOT, name), filter="data")
        open(os.path.join(_ROOT, name, "__init__.py"), "w").close()
        if _ROOT not in sys.path:
            sys.path.insert(0, _ROOT)
    return importlib.import_module(f"{name}.storage.database")
