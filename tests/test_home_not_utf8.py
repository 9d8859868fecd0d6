"""A home whose path is not UTF-8 text (bytes of another encoding in $SESSIOND_HOME, $XDG_DATA_HOME, or the
current folder of a relative --home): refused in one line naming it and the way, nothing made, never a
UnicodeEncodeError traceback."""

from __future__ import annotations

import os
import subprocess

import pytest

from conftest import PY


def _cli(*args: str, env: dict, cwd: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PY, "-m", "sessiond.cli.main", *args], env={**os.environ, **env}, cwd=cwd, capture_output=True, timeout=60
    )


@pytest.mark.parametrize("command", [["status"], ["start"], ["daemon"], ["ls"], ["doctor"]])
def test_a_home_from_the_environment_that_is_not_utf8_is_refused(tmp_path, command):
    home = os.fsdecode(os.fsencode(str(tmp_path)) + b"/lat\xe9")
    env = {"SESSIOND_HOME": home}
    res = _cli(*command, env=env)
    err = res.stderr.decode(errors="replace")
    assert res.returncode == 2 and "Traceback" not in err, err[-1500:]
    assert "not UTF-8" in err and "lat\\xe9" in err and "SESSIOND_HOME" in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert os.listdir(tmp_path) == []  # nothing made


def test_a_relative_home_in_a_folder_whose_name_is_not_utf8_is_refused(tmp_path):
    where = os.fsencode(str(tmp_path)) + b"/dossier-\xe9t\xe9"
    os.mkdir(where)
    res = _cli("start", "--home", "h", env={}, cwd=os.fsdecode(where))
    err = res.stderr.decode(errors="replace")
    assert res.returncode == 2 and "Traceback" not in err, err[-1500:]
    assert "not UTF-8" in err and "--home" in err, err
    assert os.listdir(where) == []


def test_a_utf8_home_in_an_ascii_locale_is_refused_naming_the_locale(tmp_path):
    """LC_ALL=C with UTF-8 mode off: Python reads paths as ASCII, so a UTF-8 home's other bytes come as lone
    surrogates too: refused naming the locale and the way, not as 'not UTF-8'."""
    home = str(tmp_path / "héllo")
    env = {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "SESSIOND_HOME": home}
    res = _cli("status", env=env)
    err = res.stderr.decode(errors="replace")
    assert res.returncode == 2 and "Traceback" not in err, err[-1500:]
    assert "this locale" in err and "PYTHONUTF8=1" in err and "SESSIOND_HOME" in err, err
