"""`sessiond rekey ID` ends with "Make new codes with `sessiond share`", and `unshare ID --device D` with "give
those you keep a new code with `sessiond share`" and "until `sessiond gc` frees them": run as printed (README: a
hint of a command's output carries --home and runs as printed), `share` was refused, needing the session's
id, and unshare's commands named no --home (run so, they acted on the default home's daemon). The hints name
the session and the home: run as printed, `share` prints the new code, `gc` frees."""

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


def test_unshare_s_hints_run_as_printed(make_daemon, tmp_path):
    a = make_daemon(f"file://{tmp_path / 'store'}").start()
    b = make_daemon(f"file://{tmp_path / 'store'}").start()
    sid = cli_json(a.home, "new")["id"]
    run_cli(b.home, "import", input=run_cli(a.home, "share", sid, "--write", check=True).stdout, check=True)
    device = cli_json(b.home, "status")["device_id"]
    out = run_cli(a.home, "unshare", sid, "--device", device, check=True).stdout
    hints = re.findall(r"`(sessiond (?:share|gc)[^`]*)`", out)
    assert len(hints) == 2, out
    for hint in hints:
        res = run_cli(None, *shlex.split(hint)[1:])
        assert res.returncode == 0 and f"--home {a.home}" in hint, (hint, res)
