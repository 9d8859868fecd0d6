"""`sessiond rekey ID` ends with "Make new codes with `sessiond share`": the command its hint names, run as
printed (README: a hint of a command's output carries --home and runs as printed), was refused, `share` needing
the session's id. The hint names the session: run as printed, it prints the new code."""

from __future__ import annotations

import re
import shlex

from conftest import cli_json, run_cli


def test_rekey_s_hint_runs_as_printed(daemon):
    sid = cli_json(daemon.home, "new")["id"]
    run_cli(daemon.home, "share", sid, check=True)
    out = run_cli(daemon.home, "rekey", sid, check=True).stdout
    [hint] = re.findall(r"`(sessiond share[^`]*)`", out)
    argv = shlex.split(hint)[1:]
    res = run_cli(None, *argv)
    assert res.returncode == 0 and res.stdout.startswith("sessiond1"), (hint, res)
