"""Every line `sessiond doctor` gives that is not ok says what is wrong and the exact command that fixes it, for
the home in use: with no daemon running, a fix quoting `sessiond start` without `--home` started the default
home's daemon, and a key file that is not a file was a problem with no fix at all."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile

from conftest import run_cli


def test_doctor_without_a_daemon_gives_every_problem_a_fix_for_this_home():
    top = tempfile.mkdtemp(prefix="sd-said-")  # (short: the socket's place is in the home)
    try:
        _check(os.path.join(top, "not-the-default"))
    finally:
        shutil.rmtree(top, ignore_errors=True)


def _check(home: str) -> None:
    assert run_cli(home, "start").returncode == 0
    assert run_cli(home, "stop").returncode == 0
    with open(os.path.join(home, "sessiond.sock"), "w") as f:  # a stray file where the socket goes
        f.write("x")
    os.mkdir(os.path.join(home, "keys", "sessions", "s-stray.key"))  # a folder where a key file goes
    res = run_cli(home, "doctor", "--json")
    rep = json.loads(res.stdout)
    wrong = [f for f in rep["findings"] if f["level"] != "ok"]
    assert {f["check"] for f in wrong} >= {"socket", "keys"}, wrong
    for f in wrong:
        assert f["fix"], f
        for command in re.findall(r"sessiond [a-z-]+[^&;#]*", f["fix"]):
            assert "--home" in command, f
