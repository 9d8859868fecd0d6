"""`--store-file` (start, daemon, import): a store URL carrying a secret (a relay invite, a password)
read from a file or standard input, never put in argv, where every local user can read it (ps,
/proc/PID/cmdline). README's walkthrough uses it."""

from __future__ import annotations

import json
import os

import pytest

import secretcheck
from conftest import cli_json, run_cli

# The command line read is that of the daemon `sessiond start` started, which start runs as a new program
# wherever it runs itself under the `exec_start` mark (else the suite's `start` forks it: cli/forkstart.py): no
# test here needs the `real_exec` mark (every CLI call a new program).


@pytest.mark.exec_start  # reads the command line of the daemon `start` ran
def test_store_file_keeps_the_invite_out_of_argv_for_start_and_import(invite_relay, secret_homes, tmp_path):
    data, host = invite_relay
    a, b = secret_homes("a"), secret_homes("b")
    fa, fb = tmp_path / "a-store", tmp_path / "b-store"
    invite_a, invite_b = secretcheck.invite(data), secretcheck.invite(data)
    fa.write_text(f"# the relay\ns5+http://{invite_a}@{host}\n")
    fb.write_text(f"s5+http://{invite_b}@{host}\n")
    res = run_cli(a, "start", "--store-file", str(fa))
    assert res.returncode == 0, res.stderr
    assert cli_json(a, "status")["store"] == f"s5+http://***@{host}"
    sid = cli_json(a, "new", "--system", "shared")["id"]
    run_cli(a, "add", sid, "--role", "user", "hi", check=True)
    code = cli_json(a, "share", sid)["code"]
    # b's own store is a folder; the session is on the relay, where b needs an account (its invite)
    assert run_cli(b, "start", "--store", "file://" + str(tmp_path / "b-folder")).returncode == 0
    imp = run_cli(b, "import", "--store-file", str(fb), input=code)
    assert imp.returncode == 0, imp.stderr
    assert "hi" in run_cli(b, "log", sid, check=True).stdout
    assert len(os.listdir(os.path.join(data, "accounts"))) == 2  # both invites spent, by the two daemons
    # '-': the URL on standard input (a home of its own, to start with a fresh invite)
    c = secret_homes("c")
    invite_c = secretcheck.invite(data)
    res = run_cli(c, "start", "--store-file", "-", input=f"s5+http://{invite_c}@{host}\n")
    assert res.returncode == 0, res.stderr
    st = cli_json(c, "status")
    cmdline = secretcheck.cmdline(st["pid"])  # what any local user can read (ps)
    assert "sessiond.cli.main daemon" in cmdline, cmdline  # the daemon's own, `start` ran it as a new program
    for text in (
        json.dumps(st),
        cmdline,
        secretcheck.logs(a),
        secretcheck.logs(b),
        secretcheck.logs(c),
        imp.stdout,
        imp.stderr,
    ):
        for invite in (invite_a, invite_b, invite_c):
            assert invite not in text
    # --help says what --store exposes
    for cmd in ("start", "import", "daemon"):
        assert "--store-file" in run_cli(None, cmd, "--help").stdout
        assert "ps" in " ".join(run_cli(None, cmd, "--help").stdout.split())


def test_an_empty_store_file_is_a_clear_error_that_changes_nothing(secret_homes, tmp_path):
    home = secret_homes("h")
    empty = tmp_path / "empty"
    empty.write_text("# nothing yet\n\n")
    for args in (["start", "--store-file", str(empty)], ["start", "--store-file", str(tmp_path / "missing")]):
        res = run_cli(home, *args)
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
        assert str(args[-1]) in res.stderr, res.stderr
    assert "no store URL" in run_cli(home, "start", "--store-file", str(empty)).stderr
    assert not os.path.exists(home)  # nothing made
