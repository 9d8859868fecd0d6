"""A file-size limit (RLIMIT_FSIZE, `ulimit -f`, a service's LimitFSIZE=) on a real daemon: a write past it fails
in the kernel with EFBIG (CPython ignores SIGXFSZ, whose default would kill the daemon), which SQLite reports as
a disk I/O error. The request is refused saying which limit and what to do, nothing of it is stored, the daemon
stays up, and once the limit is raised the same request goes through."""

from __future__ import annotations

import os
import resource

import pytest

from conftest import DaemonProc
from sessiond.client import ApiError
from sessiond.storage.errors import RAISE_FILE_SIZE_LIMIT

LIMIT = 1_000_000  # bytes: below the WAL the daemon keeps allocated ahead, so its next frames pass it


def _limit(pid: int, soft: int, hard: int) -> None:
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (soft, hard))


def test_an_append_past_the_file_size_limit_is_refused_naming_it_and_goes_through_once_raised(home):
    d = DaemonProc(home).start()
    try:
        with d.client() as c:
            _limit(d.proc.pid, LIMIT, resource.RLIM_INFINITY)
            sid = c.create_session(name="limited")["id"]
            acknowledged = [c.append(sid, role="user", content="before")["content"]]  # (below the limit still)
            big = os.urandom(150_000).hex()  # (random: no compression brings it under the limit)
            with pytest.raises(ApiError) as refused:
                for i in range(40):  # the WAL's first frames may still fit below the limit
                    c.append(sid, role="user", content=f"{i} {big}")
                    acknowledged.append(f"{i} {big}")
            err = refused.value
            assert err.status == 507 and err.code == "file_size_limit", (err.status, err.code, err.message)
            assert f"{LIMIT} bytes" in err.message and "ulimit -f" in err.message, err.message
            assert "nothing of this request was stored" in err.message, err.message
            assert err.details["owner"] == [RAISE_FILE_SIZE_LIMIT], err.details  # its owner's way, for an app
            assert d.proc.poll() is None  # still up
            assert [m["content"] for m in c.messages(sid)["messages"]] == acknowledged
            _limit(d.proc.pid, resource.RLIM_INFINITY, resource.RLIM_INFINITY)
            c.append(sid, role="user", content=f"again {big}")
            assert [m["content"] for m in c.messages(sid)["messages"]] == [*acknowledged, f"again {big}"]
    finally:
        assert d.stop() == 0
