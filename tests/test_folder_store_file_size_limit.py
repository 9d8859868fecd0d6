"""A folder store's write past a file-size limit (EFBIG: RLIMIT_FSIZE, `ulimit -f`, a service's LimitFSIZE=) is
reported as that limit, with what to do, not as a failing disk: the daemon's own database writes say it so
already (test_file_size_limit.py). The limit is real: set in a child process, which then puts objects as a push
does (one at a time, and a batch), the kernel refusing the write past it."""

from __future__ import annotations

import json
import subprocess

from conftest import PY

LIMIT = 20_000  # bytes: an object of 50,000 cannot be written whole

CHILD = """
import asyncio, json, os, resource, sys
from sessiond.stores import FileStore
from sessiond.stores.errors import describe_failure, failing, failure_fix, settled
from sessiond.daemon.doctor_fixes import settled_fix

resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, resource.RLIM_INFINITY))

async def main():
    store = FileStore(sys.argv[1])
    await store.put(b"small")  # (below the limit: the folder laid out)
    out = []
    for put in (lambda d: store.put(d), lambda d: store.put_many([d, os.urandom(60_000)])):
        try:
            await put(os.urandom(50_000))
        except Exception as exc:
            out.append({{"class": type(exc).__name__, "failing": failing(exc), "settled": settled(exc),
                        "said": describe_failure(exc, "file://" + sys.argv[1]),
                        "fix": settled_fix(exc, "file://" + sys.argv[1], sys.argv[2]), "short": failure_fix(exc)}})
        else:
            out.append(None)
    await store.close()
    print(json.dumps(out))

asyncio.run(main())
"""


def test_a_folder_store_write_past_the_file_size_limit_names_the_limit_not_a_failing_disk(tmp_path):
    run = subprocess.run(
        [PY, "-c", CHILD.format(limit=LIMIT), str(tmp_path / "store"), str(tmp_path / "home")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    for got in json.loads(run.stdout):
        assert got is not None  # refused
        said = got["said"]
        assert got["class"] == "FolderFileTooLarge", got
        assert got["failing"] and got["settled"], got  # the store failed to take it; waiting does not mend it
        assert f"file-size limit, {LIMIT} bytes" in said and "ulimit -f" in said, said  # which limit
        assert "restart the daemon with the limit raised" in said, said  # what to do
        assert "failing" not in said and "disk" not in said, said  # not a failing disk
        # doctor's and status's fix (settled_fix) says the same: it said to move to another store, which the
        # daemon's limit holds to as well (and its database with it)
        assert "ulimit -f" in got["fix"] and "change-store" not in got["fix"], got["fix"]
        assert "move" not in got["short"], got["short"]


def test_a_file_system_that_takes_no_file_this_large_is_said_to_need_another_store():
    """EFBIG with no file-size limit of the daemon's in force: the file system's own limit, which another store
    mends (as its message and doctor say)."""
    import errno

    from sessiond.daemon.doctor_fixes import settled_fix
    from sessiond.stores.errors import FolderFileTooLarge, failure_fix, folder_error

    exc = folder_error("cannot write object", "/mnt/fat", OSError(errno.EFBIG, "File too large"))
    assert isinstance(exc, FolderFileTooLarge) and "takes no file this large" in str(exc), exc
    assert "change-store" in (settled_fix(exc, "file:///mnt/fat", "/home") or "")
    assert "another store" in failure_fix(exc), failure_fix(exc)
