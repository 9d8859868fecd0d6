"""A folder store that fails under the daemon (its folder gone or replaced by a file, its permissions
taken away) is reported as what it is, as the network stores' failures are (stores/errors.py): doctor,
`sync --wait`, status and verify name the folder, the kind of failure and what mends it, never a raw
errno nor an internal error."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from conftest import PY, DaemonProc, cli_json, run_cli, write_config


def _pushed_session(d: DaemonProc) -> str:
    c = d.client()
    sid = c.create_session(name="s")["id"]
    c.append(sid, "user", "first")
    assert c.sync(sid, wait=True, timeout=10)["complete"]
    c.append(sid, "user", "then")  # a change that waits to be pushed
    return sid


def _reports(d: DaemonProc, sid: str) -> dict[str, str]:
    """What doctor, `sync --wait`, status and verify say, as text."""
    doctor = run_cli(d.home, "doctor", "--json")
    assert doctor.returncode != 0, doctor.stdout
    store = [f for f in json.loads(doctor.stdout)["findings"] if f["check"] == "store"]
    sync = run_cli(d.home, "sync", sid, "--wait", "--timeout", "3", "--json")
    assert sync.returncode != 0, sync.stdout
    out = {
        "doctor": json.dumps(store),
        "sync": json.dumps(json.loads(sync.stdout)["sessions"][sid]["last_error"]),
        "status": json.dumps(cli_json(d.home, "status")["sync"][sid]["last_error"]),
        "verify": json.dumps(json.loads(run_cli(d.home, "verify", "--json").stdout)["sessions"][0]["store_failure"]),
    }
    for what, said in out.items():
        assert "internal error" not in said and "Errno" not in said, (what, said)
    return out


def test_a_folder_store_replaced_by_a_file_is_unreachable_naming_the_folder(make_daemon, store_dir):
    d = make_daemon(f"file://{store_dir}")
    write_config(d.home, push_delay=3600)  # only an asked sync pushes: none meanwhile in the folder changed
    d.start()
    sid = _pushed_session(d)
    shutil.rmtree(store_dir)
    with open(store_dir, "w") as f:  # a share mounted wrongly, a folder replaced
        f.write("not a folder")
    try:
        said = _reports(d, sid)
        for what in ("doctor", "sync", "status"):
            assert f"the store folder {store_dir} is missing or not a folder" in said[what], (what, said[what])
        assert "is unreachable" in said["verify"], said["verify"]
        assert "mount" in said["doctor"] and "--change-store" in said["doctor"], said["doctor"]
    finally:
        os.unlink(store_dir)
        os.mkdir(store_dir)
        d.stop()


class UnprivilegedDaemon(DaemonProc):
    """The daemon without the capabilities that let root read and write past a folder's permissions (it
    runs as root in these tests): a folder it may not open is refused it, as to any other user."""

    def _spawn(self, cmd: list[str], ready_fd: int) -> subprocess.Popen:
        drop = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]
        return subprocess.Popen(
            [*drop, PY, "-m", "sessiond.cli.main", *cmd],
            pass_fds=(ready_fd,),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env,
        )


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_a_folder_store_without_permission_says_to_fix_the_folders_permissions(tmp_path, store_dir):
    d = UnprivilegedDaemon(os.path.join(tmp_path, "home"), f"file://{store_dir}")
    write_config(d.home, push_delay=3600)
    d.start()
    sid = _pushed_session(d)
    for sub in ("objects", "heads"):
        os.chmod(os.path.join(store_dir, sub), 0)
    try:
        said = _reports(d, sid)
        for what in ("doctor", "sync", "status"):
            assert "permission denied" in said[what] and store_dir in said[what], (what, said[what])
        assert "fix the folder's permissions" in said["doctor"] and "chmod -R u+rwX" in said["doctor"], said["doctor"]
        assert "is refusing access (permission denied)" in said["verify"], said["verify"]
    finally:
        for sub in ("objects", "heads"):
            os.chmod(os.path.join(store_dir, sub), 0o700)
        d.stop()
