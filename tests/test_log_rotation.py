"""The daemon's log (<home>/logs/sessiond.log) over weeks: capped, its older lines kept in a few numbered
files, each 0600, never one without bound."""

from __future__ import annotations

import logging
import os
import stat

from conftest import run_cli
from sessiond.daemon import logs


def _logger(folder: str) -> tuple[logging.Logger, logs.LogFile]:
    handler = logs.LogFile(os.path.join(folder, "sessiond.log"))
    handler.setFormatter(logs.JsonFormatter())
    log = logging.getLogger(f"sessiond.test_rotation.{id(handler)}")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    return log, handler


def test_the_log_is_capped_and_its_older_lines_kept_in_numbered_files(tmp_path, monkeypatch):
    monkeypatch.setattr(logs, "MAX_LOG_BYTES", 64 * 1024, raising=False)
    old = os.umask(0)  # a umask of 000: every file of it 0600 all the same
    try:
        log, handler = _logger(str(tmp_path))
        try:
            for i in range(5000):  # ~100 bytes a line: ~500 KB written, weeks of a daemon in little
                log.info("line %d of a daemon that runs for weeks", i)
        finally:
            handler.close()
    finally:
        os.umask(old)
    names = sorted(os.listdir(tmp_path))
    total = sum(os.path.getsize(tmp_path / n) for n in names)
    assert total <= (getattr(logs, "KEEP_LOGS", 3) + 1) * 64 * 1024, (names, total)
    assert names == ["sessiond.log"] + [f"sessiond.log.{n}" for n in range(1, getattr(logs, "KEEP_LOGS", 3) + 1)], names
    for n in names:
        assert stat.S_IMODE(os.stat(tmp_path / n).st_mode) == 0o600, n
        text = (tmp_path / n).read_text()
        assert text.endswith("\n") and all(line.startswith("{") for line in text.splitlines()), n  # whole lines
    last = (tmp_path / "sessiond.log").read_text().splitlines()[-1]
    assert "line 4999 " in last
    newest_old = (tmp_path / "sessiond.log.1").read_text().splitlines()[-1]
    first_now = (tmp_path / "sessiond.log").read_text().splitlines()[0]
    # in order: .1 ends where the current one begins
    n_old = int(newest_old.split("line ")[1].split()[0])
    n_now = int(first_now.split("line ")[1].split()[0])
    assert n_now == n_old + 1


def test_a_log_already_past_its_cap_is_moved_aside_at_the_start(tmp_path, monkeypatch):
    """A log an older sessiond let grow (or a daemon that starts often): the start does not append to it."""
    monkeypatch.setattr(logs, "MAX_LOG_BYTES", 64 * 1024, raising=False)
    with open(tmp_path / "sessiond.log", "wb") as f:
        f.write(b'{"msg": "old"}\n' * 10000)
    os.chmod(tmp_path / "sessiond.log", 0o600)
    log, handler = _logger(str(tmp_path))
    try:
        log.info("first line of this start")
    finally:
        handler.close()
    assert (tmp_path / "sessiond.log").read_text().count("\n") == 1
    assert os.path.getsize(tmp_path / "sessiond.log.1") == 15 * 10000


def test_start_moves_a_daemon_out_past_the_cap_aside(tmp_path):
    """daemon.out (what a started daemon writes on its standard output and error) is appended to by each
    `sessiond start`: one past the cap is moved aside as daemon.out.1 first, as sessiond.log is."""
    home = str(tmp_path / "home")
    os.makedirs(os.path.join(home, "logs"), mode=0o700)
    os.chmod(home, 0o700)
    out = os.path.join(home, "logs", "daemon.out")
    with open(out, "wb") as f:
        f.truncate(logs.MAX_LOG_BYTES + 1 if hasattr(logs, "MAX_LOG_BYTES") else 10 * 1024 * 1024 + 1)  # (sparse)
    os.chmod(out, 0o600)
    try:
        run_cli(home, "start", check=True)
    finally:
        run_cli(home, "stop")
    assert os.path.getsize(out) < 1024 * 1024
    assert os.path.getsize(out + ".1") > 10 * 1024 * 1024


_OUT_OF_FDS = r"""
import logging, os, resource, sys
from sessiond.daemon import logs
logs.MAX_LOG_BYTES = 4096
handler = logs.LogFile(os.path.join(sys.argv[1], "sessiond.log"))
handler.setFormatter(logs.JsonFormatter())
log = logging.getLogger("sessiond.out_of_fds")
log.propagate = False
log.setLevel(logging.INFO)
log.addHandler(handler)
i = 0
def lines(n):
    global i
    for _ in range(n):
        log.info("line %d of a daemon near its limit of open files", i)
        i += 1
lines(60)  # (sessiond.log.1 there: one rotation done)
while handler.size + 200 < logs.MAX_LOG_BYTES:
    lines(1)
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 256), hard))
held = []
try:
    while True:
        held.append(os.open(os.devnull, os.O_RDONLY))
except OSError:
    pass
lines(10)  # (a rotation due: the log moved aside, the new one cannot be opened)
for fd in held:
    os.close(fd)
lines(10)
handler.close()
print(i)
"""


def test_a_rotation_that_cannot_open_the_new_log_loses_no_line_and_the_log_comes_back(tmp_path):
    # the daemon at its limit of open files (EMFILE) just when its log is to be moved aside: the move done, the
    # new sessiond.log could not be opened. Each line after moved the logs aside again (the one written to
    # shifted to .2, .3, the older ones dropped) and, the file being gone, sessiond.log was never opened again
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-c", _OUT_OF_FDS, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    written = int(res.stdout)
    assert (tmp_path / "sessiond.log").exists(), sorted(os.listdir(tmp_path))
    seen = []
    for name in sorted(os.listdir(tmp_path), reverse=True):  # (.3, .2, .1, then sessiond.log: oldest first)
        for line in (tmp_path / name).read_text().splitlines():
            if "line " in line:
                seen.append(int(line.split("line ")[1].split()[0]))
    assert seen == list(range(written)), (sorted(os.listdir(tmp_path)), seen)
