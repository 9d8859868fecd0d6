"""`sessiond serve invite` with a --data it cannot use: a usage error naming the folder (exit 2, a JSON error
with --json), never a traceback."""

from __future__ import annotations

import json
import subprocess

from conftest import PY


def test_serve_invite_with_a_data_folder_it_cannot_use_is_a_clear_error(tmp_path):
    not_a_folder = tmp_path / "relay-data"
    not_a_folder.write_text("a file, not the relay's folder")
    for data in (str(not_a_folder), str(not_a_folder / "under-a-file")):
        res = subprocess.run(
            [PY, "-m", "sessiond.cli.main", "serve", "invite", "--data", data], capture_output=True, text=True
        )
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
        assert f"cannot use the data folder {data}" in res.stderr, res.stderr
        res = subprocess.run(
            [PY, "-m", "sessiond.cli.main", "serve", "invite", "--data", data, "--json"], capture_output=True, text=True
        )
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
        assert f"cannot use the data folder {data}" in json.loads(res.stdout)["error"]["message"]
    assert not_a_folder.read_text() == "a file, not the relay's folder"
