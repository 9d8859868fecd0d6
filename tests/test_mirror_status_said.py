"""`sessiond status` of a mirror shows each store's last error; it was cut to 80 characters, and a folder
store's error begins with the object it could not write ("cannot write object 01dd84...… "), so what failed
and what mends it (the store folder missing, mount it or put it back, then `sessiond sync --wait`) were
never shown: `--json` alone had them. It is shown whole, as a single store's failure is."""

from __future__ import annotations

import shutil

from conftest import cli_json, run_cli, wait_for


def test_status_shows_a_mirror_store_s_last_error_whole(make_daemon, tmp_path):
    local, away = tmp_path / "local", tmp_path / "share"
    d = make_daemon([f"file://{local}", f"file://{away}"]).start()
    sid = cli_json(d.home, "new", "--name", "mirrored")["id"]
    with d.client() as c:
        c.append(sid, "user", "both stores")
        c.sync(sid, wait=True, timeout=30)
        shutil.move(str(away), str(tmp_path / "moved"))  # the share not mounted
        c.append(sid, "user", "only the local store takes this")

    def failing():
        stores = cli_json(d.home, "status")["stores"]
        return next((s for s in stores if s["url"].endswith("/share") and s.get("last_error")), None)

    err = wait_for(failing, timeout=30, what="the share's store failing")["last_error"]
    assert len(err) > 80 and "missing" in err, err  # what the --json says: past the 80 characters shown
    res = run_cli(d.home, "status")
    assert res.returncode == 0, res
    assert "…" not in res.stdout, res.stdout
    assert f"the store folder {away} is missing" in res.stdout and "sync --home" in res.stdout, res.stdout
