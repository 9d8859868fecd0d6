"""doctor with no daemon opens sessions.db by an SQLite URI: a home whose path holds a '?' or '#' (which a
URI reads as its query or fragment) was a PROBLEM, 'cannot open ... (unable to open database file)', with
`chmod 600` its fix, for a database that is well formed. The path is quoted in the URI."""

from __future__ import annotations

import json
import os

from conftest import run_cli


def test_doctor_reads_the_database_of_a_home_named_with_uri_characters(tmp_path):
    home = os.path.join(str(tmp_path), "what? #1 100%", "home")
    run_cli(home, "start", check=True)
    run_cli(home, "stop", check=True)
    res = run_cli(home, "doctor", "--json")
    found = [f for f in json.loads(res.stdout)["findings"] if f["check"] == "database"]
    assert [f["level"] for f in found] == ["ok"], found
    assert "well formed" in found[0]["message"], found
