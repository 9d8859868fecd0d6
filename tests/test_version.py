"""`sessiond --version` printed the package's version alone, 0.1.0 at every commit: two devices' users could not
compare what matters between them. It now says the package's version (pyproject.toml's, read from the installed
metadata), the database schema's, and the versions of the wire formats this sessiond writes and reads; the
daemon's status (GET /v1/status) carries the same fields. The expected values are the code's own constants."""

from __future__ import annotations

import json
import tomllib
from importlib.metadata import version
from pathlib import Path

from conftest import run_cli
from sessiond.daemon.formats import JSON_FORMAT
from sessiond.storage.migrations import SCHEMA_VERSION
from sessiond.sync import checkpoint, membersobject, pages, sharecode

ROOT = Path(__file__).resolve().parent.parent


def _expected() -> dict:
    return {
        "version": version("sessiond"),
        "schema": SCHEMA_VERSION,
        "formats": {
            "share_code": {"writes": sharecode.VERSION, "reads": [sharecode.VERSION]},
            "log": {"writes": pages.VERSION, "reads": [pages.VERSION]},
            "page": {"writes": pages.PAGE_VERSION, "reads": [pages.PAGE_VERSION]},
            "members": {"writes": membersobject.MEMBERS_VERSION, "reads": [membersobject.MEMBERS_VERSION]},
            "checkpoint": {"writes": checkpoint.VERSION, "reads": list(checkpoint.VERSIONS)},
            "session_file": {"writes": JSON_FORMAT, "reads": [JSON_FORMAT]},
        },
    }


def test_the_version_is_pyprojects_as_installed():
    with open(ROOT / "pyproject.toml", "rb") as f:
        typed = tomllib.load(f)["project"]["version"]
    assert typed == version("sessiond") == "0.41.0"


def test_version_json_names_the_package_schema_and_wire_format_versions():
    for argv in (["--version", "--json"], ["--json", "--version"]):
        res = run_cli(None, *argv)
        assert res.returncode == 0, res
        assert json.loads(res.stdout) == _expected(), (argv, res.stdout)


def test_version_for_people_names_them_too():
    res = run_cli(None, "--version")
    assert res.returncode == 0, res
    lines = res.stdout.splitlines()
    assert lines[0] == f"sessiond {version('sessiond')}", lines
    said = res.stdout
    assert f"database schema {SCHEMA_VERSION}" in said, said
    assert f"page {pages.PAGE_VERSION}" in said and f"share code {sharecode.VERSION}" in said, said
    assert f"checkpoint {checkpoint.VERSION} (reads {', '.join(map(str, checkpoint.VERSIONS))})" in said, said


def test_the_daemons_status_carries_the_same_versions(daemon):
    status = daemon.client().status()
    assert {k: status[k] for k in ("version", "schema", "formats")} == _expected(), status


def test_the_versions_read_the_package_metadata_once(monkeypatch):
    """GET /v1/status carries versions(), which read the installed package's metadata at every call: ~2 ms of the
    event loop per status (a scan of the environment's distributions, on disk), where the rest of the status
    costs a fraction of that. The package's version is read once a process: it is the running code's."""
    import sessiond.daemon.versions as v

    read: list[str] = []
    real = v.version
    monkeypatch.setattr(v, "version", lambda name: read.append(name) or real(name))
    said = [v.versions() for _ in range(5)]
    assert len(read) <= 1, read
    assert all(s == _expected() for s in said)
