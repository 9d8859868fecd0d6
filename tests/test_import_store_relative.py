"""`sessiond import --store FOLDER` with a relative path: the folder is the one relative to where the command runs,
as README says of a plain path (and as `start --store` takes it), not relative to the daemon's own folder."""

from __future__ import annotations

import json
import os

import pytest


@pytest.mark.parametrize("given", ["./shared", "file:shared", "file:./shared"])
def test_a_relative_folder_given_to_import_is_taken_from_where_the_command_runs(
    daemon, tmp_path, monkeypatch, capsys, given
):
    """`import --store ./shared` was sent as given, and the daemon made it absolute from its own current folder (the
    one it was started in), not the user's: another folder, or none, and the refusal named a path the user never
    meant ('there is no store at /where/the/daemon/started/shared'). The CLI makes it absolute where it runs; a
    relative `file:` URL's path too (`file:shared`, which the daemon reads as the folder `shared`: it was sent as
    given, the scheme read as a URL's)."""
    from sessiond.cli.main import main

    c = daemon.client()
    sid = c.create_session(model="echo-1")["id"]
    c.append(sid, "user", "hello")
    code = c.share(sid)["code"]
    here = tmp_path / "here"
    (here / "shared").mkdir(parents=True)
    monkeypatch.chdir(here)
    (here / "code.txt").write_text(code + "\n")
    assert main(["import", "--store", given, "--code-file", "code.txt", "--home", daemon.home, "--json"]) == 1
    message = json.loads(capsys.readouterr()[0])["error"]["message"]
    assert str(here / "shared") in message, (message, os.getcwd())
