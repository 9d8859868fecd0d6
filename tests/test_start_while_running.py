"""`sessiond start` beside the daemon already running for the home: what it asked that only a starting daemon
does (another store, `--change-store`, `--reset-device-key`) is refused, saying the running daemon keeps its
store (or key) and how to get what was asked; a plain start, or one naming the store in use, is "already
running", exit 0, as ever."""

from __future__ import annotations

import json

from conftest import DaemonProc, cli_json, run_cli


def test_start_asking_what_only_a_start_does_beside_a_running_daemon_is_refused(home, tmp_path):
    """`start --change-store` beside a running daemon printed "already running" and exited 0: a user who asked
    to move the home (to config.toml's store, or to make a store that went again) believed it done, while the
    daemon went on with its store as it was. Refused now (exit 1, nothing changed), naming the way: stop it,
    then start with the store and --change-store."""
    used = "file://" + str(tmp_path / "used-store")
    other = "file://" + str(tmp_path / "other-store")
    d = DaemonProc(home, used).start()
    try:
        asked = (
            (["--change-store"], f"sessiond start --home {home} --change-store"),
            (["--store", used, "--change-store"], f"sessiond start --home {home} --store {used} --change-store"),
            (["--store", other], f"sessiond start --home {home} --store {other} --change-store"),
            (["--store", other, "--change-store"], f"sessiond start --home {home} --store {other} --change-store"),
            (["--reset-device-key"], f"sessiond start --home {home} --reset-device-key"),
        )
        for argv, again in asked:
            res = run_cli(home, "start", *argv, "--json")
            assert res.returncode == 1, (argv, res)
            message = json.loads(res.stdout)["error"]["message"]
            assert f"pid {d.proc.pid}" in message and "keeps" in message, (argv, message)
            assert f"`sessiond stop --home {home}`" in message and f"`{again}`" in message, (argv, message)
            assert "started" not in res.stdout, (argv, res.stdout)
            res = run_cli(home, "start", *argv)  # and said so to a person, on standard error
            assert res.returncode == 1 and f"`{again}`" in res.stderr and not res.stdout, (argv, res)
        assert cli_json(home, "status")["store"] == used  # nothing changed: the same daemon, its store
        assert cli_json(home, "status")["pid"] == d.proc.pid
        for argv in ([], ["--store", used]):  # nothing asked but a daemon: the one running is it
            res = run_cli(home, "start", *argv)
            assert res.returncode == 0 and "already running" in res.stdout, (argv, res)
            started = cli_json(home, "start", *argv)
            assert started["started"] is False and started["pid"] == d.proc.pid, started
            # a script's `start --json` learns the device id whether it started the daemon or found it running
            assert started["device_id"] == cli_json(home, "status")["device_id"], started
    finally:
        d.stop()
    # and the way it named does what was asked
    run_cli(home, "start", "--store", other, "--change-store", check=True)
    try:
        assert cli_json(home, "status")["store"] == other
    finally:
        run_cli(home, "stop", check=True)
