"""A key file whose mode was widened (chmod 644, a copy made with the wrong umask, a restore from a backup tool
that kept no modes): the daemon refuses to start on it, as on a key folder open to others, naming the file and
the command that fixes it, and changes nothing. doctor names it too (tests/test_doctor.py)."""

from __future__ import annotations

import os
import stat

import pytest

from conftest import DaemonProc


def test_a_start_with_a_session_key_file_open_to_others_is_refused_naming_it_and_the_fix(home):
    d = DaemonProc(home).start()
    try:
        with d.client() as c:
            sid = c.create_session(name="shared")["id"]
            c.share(sid, write=True)
    finally:
        assert d.stop() == 0
    key = os.path.join(home, "keys", "sessions", f"{sid}.key")
    os.chmod(key, 0o644)
    d = DaemonProc(home)
    with pytest.raises(RuntimeError) as refused:
        d.start()
        d.stop()  # (started: the test fails, with the daemon stopped)
    said = str(refused.value).strip().splitlines()[-1]
    assert key in said and "0644" in said and f"chmod -R go= {os.path.join(home, 'keys')}" in said, said
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o644  # nothing changed
    os.chmod(key, 0o600)
    d.start()
    assert d.stop() == 0
