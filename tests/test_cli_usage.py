"""Arguments the CLI checks itself: a value out of the daemon's range is a usage error (exit 2, JSON code
"usage") naming the option as typed and its range in words, never the API's field name."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from conftest import cli_json, run_cli


def _usage(res: subprocess.CompletedProcess) -> str:
    """The message of a usage error answered in JSON (exit 2, code "usage")."""
    assert res.returncode == 2, res
    err = json.loads(res.stdout)["error"]
    assert err["code"] == "usage", err
    assert "Traceback" not in res.stderr
    return err["message"]


def _shown(home: str, sid: str) -> dict:
    """The session as `show` gives it, without its sync state (a push may finish meanwhile)."""
    return {k: v for k, v in cli_json(home, "show", sid).items() if k != "sync"}


def test_expiry_and_idle_times_out_of_range_are_usage_errors_in_the_options_words(daemon):
    sid = cli_json(daemon.home, "new", "--name", "kept")["id"]
    before = _shown(daemon.home, sid)
    for option, argv in (
        ("--expires", ["share", sid, "--expires", "0"]),
        ("--expires", ["share", sid, "--expires", "3651d"]),
        ("--expires-in", ["new", "--expires-in", "0"]),
        ("--expires-in", ["new", "--expires-in", "0.5s"]),
        ("--expires-in", ["set", sid, "--expires-in", "3651d"]),
        ("--idle-timeout", ["new", "--idle-timeout", "0s"]),
        ("--idle-timeout", ["set", sid, "--idle-timeout", "0"]),
    ):
        message = _usage(run_cli(daemon.home, *argv, "--json"))
        assert option in message and "at least 1 second and at most 10 years" in message, message
        assert "expires_in" not in message and "idle_timeout" not in message, message
        res = run_cli(daemon.home, *argv)
        assert res.returncode == 2 and option in res.stderr and "usage:" in res.stderr, res
    assert [s["id"] for s in cli_json(daemon.home, "ls")["sessions"]] == [sid]  # nothing made
    assert _shown(daemon.home, sid) == before  # nor changed
    assert cli_json(daemon.home, "shares") == {"shares": []}  # nor a code issued
    # the bounds themselves are taken
    assert cli_json(daemon.home, "new", "--expires-in", "3650d", "--idle-timeout", "1s")["id"]
    assert cli_json(daemon.home, "share", sid, "--expires", "1s")["code"]


def test_sync_timeout_out_of_range_is_a_usage_error(daemon):
    for value in ("-1", "nan", "inf", "3601"):
        message = _usage(run_cli(daemon.home, "sync", "--timeout", value, "--json"))
        assert "--timeout" in message and "3600" in message and "1 hour" in message, message
        assert "must be a finite number" not in message
    message = _usage(run_cli(daemon.home, "gc", "--grace", "3651d", "--dry-run", "--json"))
    assert "--grace" in message and "at most 10 years" in message and "grace must" not in message, message
    assert cli_json(daemon.home, "sync", "--timeout", "0") is not None
    assert cli_json(daemon.home, "sync", "--timeout", "3600") is not None


def test_a_timeout_takes_a_unit_as_every_duration_does(daemon):
    """`sync --wait --timeout 5s` was refused ("not a number of seconds ... '5s'"), while every other duration
    (`--expires 1h`, `--older-than 7d`) must have its unit: a user who learnt the one rule typed the other. A
    --timeout, in seconds, takes s, m or h too (never needs it); out of range or no number is refused as before."""
    assert cli_json(daemon.home, "sync", "--wait", "--timeout", "5s")["complete"] is True
    assert cli_json(daemon.home, "sync", "--timeout", "1h") is not None
    assert cli_json(daemon.home, "status", "--timeout", "2.5s")["pid"]
    message = _usage(run_cli(daemon.home, "sync", "--timeout", "61m", "--json"))
    assert "--timeout" in message and "1 hour" in message and "'61m'" in message, message
    for value in ("5d", "s", "5 s5", "-1s"):
        message = _usage(run_cli(daemon.home, "sync", f"--timeout={value}", "--json"))
        assert "--timeout" in message and "e.g. 15, 2.5 or 5s" in message, message
    message = _usage(run_cli(daemon.home, "status", "--timeout", "0s", "--json"))
    assert "--timeout" in message and "more than 0" in message, message
    message = _usage(run_cli(daemon.home, "stop", "--timeout", "soon", "--json"))
    assert "--timeout" in message and "e.g. 15, 2.5 or 5s" in message, message
    for argv in (["sync"], ["status"], ["stop"]):  # and each --help says so
        said = " ".join(run_cli(daemon.home, *argv, "--help", check=True).stdout.split())
        assert "s, m or h" in said.split(" --timeout ", 1)[1], said


def test_a_timeout_takes_every_number_it_took_before_its_unit():
    """`--timeout` took what Python's float() reads until it took a unit (0.38.0): `1e3`, `5.`, `+5`, ` 5 `, which
    a script computing its wait may pass (`str(1e-05)`, awk's `%g`, a float's `repr`); the unit's pattern took only
    digits and a point, and each was refused as "not a number of seconds". Each is taken again, with its unit
    or without; what is no wait (a sign below zero, nan, inf, past 10 years) is refused as before."""
    from sessiond.cli.parser import ParseError, build_parser

    parser = build_parser(True)
    for value, secs in (("1e3", 1000.0), ("5.", 5.0), ("+5", 5.0), (" 7 ", 7.0), ("2.5e1s", 25.0), ("1E-2", 0.01)):
        assert parser.parse_args(["status", "--timeout", value]).timeout == secs, value
        assert parser.parse_args(["stop", "--timeout", value]).timeout == secs, value
        assert parser.parse_args(["sync", "--timeout", value]).timeout == secs, value
    assert parser.parse_args(["stop", "--timeout", "1e1m"]).timeout == 600.0
    for value in ("-1e3", "nan", "inf", "1e400", "1e9h", "e3", "1e", "0x10", "5 s5"):
        for argv in (["status", "--timeout", value], ["stop", "--timeout", value], ["sync", "--timeout", value]):
            with pytest.raises(ParseError, match="--timeout"):
                parser.parse_args(argv)


def test_usage_exits_say_usage_in_json(daemon):
    sid = cli_json(daemon.home, "new")["id"]
    for argv, says in (
        (["import", "--code-file", "/nonexistent"], "/nonexistent"),
        (["set", sid], "nothing to change"),
        (["new", "--metadata", "{bad"], "--metadata"),
        (["set", sid, "--name", "x", "--unset", "name"], "contradict"),
    ):
        assert says in _usage(run_cli(daemon.home, *argv, "--json")), argv
    res = run_cli(daemon.home, "add", sid, "--role", "user", "-", "--json", input=b"\xff")
    assert "not UTF-8" in _usage(res)


def test_serve_refuses_a_quota_that_holds_nothing(tmp_path):
    for value in ("0", "100", "1023"):
        argv = ["serve", "--listen", "127.0.0.1:0", "--data", str(tmp_path / "r")]
        try:  # the relay it would start serves until stopped: a short timeout, not the usual 120 s
            res = run_cli(None, *argv, "--quota", value, "--json", timeout=20)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"serve --quota {value} started a relay") from None
        message = _usage(res)
        assert "--quota" in message and "at least 1K" in message, message


def test_the_cli_holds_times_to_the_daemons_range():
    from sessiond.api.types import YEARS_10
    from sessiond.cli.options import YEARS_10 as CLI_YEARS_10

    assert CLI_YEARS_10 == YEARS_10


def test_a_value_the_daemon_refuses_is_named_by_the_option_that_gave_it(daemon):
    """Ranges the daemon checks (settings, policy) come back as the option typed, a usage error: not
    "policy.token_quota must be ..." with exit 1. Nothing is created or changed."""
    sid = cli_json(daemon.home, "new", "--name", "kept")["id"]
    before = _shown(daemon.home, sid)
    count = len(cli_json(daemon.home, "ls")["sessions"])
    for option, argv in (
        ("--token-quota", ["new", "--token-quota", "0"]),
        ("--temperature", ["new", "--temperature", "11"]),
        ("--context-margin", ["new", "--context-margin", "2"]),
        ("--max-tokens", ["set", sid, "--max-tokens", "0"]),
        ("--top-p", ["set", sid, "--top-p", "1.5"]),
    ):
        message = _usage(run_cli(daemon.home, *argv, "--json"))
        assert message.startswith(option + " must be"), (argv, message)
        assert "policy." not in message and "settings." not in message, message
    assert _shown(daemon.home, sid) == before
    assert len(cli_json(daemon.home, "ls")["sessions"]) == count


def test_a_new_id_or_initial_messages_the_daemon_refuses_are_named_by_their_option(daemon):
    """`--id` (of `new`, `clone`, `fork` and `chat new`) and `new --initial` are options too: a value the
    daemon refuses is a usage error naming the option, not "session id ..." or "initial_messages[0].role
    ..." with exit 1. Nothing is created."""
    sid = cli_json(daemon.home, "new", "--name", "kept")["id"]
    mid = cli_json(daemon.home, "add", sid, "--role", "user", "hello")["id"]
    count = len(cli_json(daemon.home, "ls")["sessions"])
    for option, argv in (
        ("--id must be", ["new", "--id", "bad id!"]),
        ("--id must be", ["clone", sid, "--id", "bad id!"]),
        ("--id must be", ["fork", sid, "--at", mid, "--id", "bad id!"]),
        ("--id must be", ["chat", "new", sid, "--id", "bad chat!"]),
        *(("--id must be", [*argv, "--id", ""]) for argv in (["new"], ["clone", sid], ["chat", "new", sid])),
        ("--id must be", ["fork", sid, "--at", mid, "--id", ""]),  # (an empty one was taken for none given)
        ("--initial must be a list", ["new", "--initial", "{}"]),
        ("--initial[0].role must be one of", ["new", "--initial", '[{"role": "x", "content": "y"}]']),
        ("--initial[0].role is required", ["new", "--initial", '[{"content": "y"}]']),
    ):
        message = _usage(run_cli(daemon.home, *argv, "--json"))
        assert message.startswith(option), (argv, message)
    assert len(cli_json(daemon.home, "ls")["sessions"]) == count
    assert [c["id"] for c in cli_json(daemon.home, "chat", "ls", sid)["chats"]] == ["main"]
    # a positional session id is not the option: an unknown one is the daemon's error (exit 1)
    res = run_cli(daemon.home, "clone", "no-such", "--id", "fine")
    assert res.returncode == 1 and "no session 'no-such'" in res.stderr, res.stderr


def test_a_passphrase_too_short_is_named_by_its_option(daemon, tmp_path):
    """`share --passphrase-file F` with a passphrase under 8 characters: the daemon refuses it, and the CLI
    says so of the option and its file, a usage error (exit 2), not "passphrase must be ..." with exit 1.
    No code is issued."""
    sid = cli_json(daemon.home, "new", "--name", "kept")["id"]
    short = tmp_path / "short-passphrase"
    short.write_text("secret\n")
    message = _usage(run_cli(daemon.home, "share", sid, "--passphrase-file", str(short), "--json"))
    assert message.startswith("--passphrase-file"), message
    assert str(short) in message and "at least 8 characters" in message, message
    res = run_cli(daemon.home, "share", sid, "--passphrase-file", "-", input="secret\n")
    assert res.returncode == 2 and "--passphrase-file" in res.stderr and "standard input" in res.stderr, res
    assert cli_json(daemon.home, "shares") == {"shares": []}
    long_enough = tmp_path / "passphrase"
    long_enough.write_text("secret-passphrase\n")
    assert cli_json(daemon.home, "share", sid, "--passphrase-file", str(long_enough))["code"]


def test_a_passphrase_or_code_given_as_an_option_is_refused_without_echoing_it(tmp_path):
    """`share ID --passphrase hunter2` or `import --code CODE` (the option a newcomer guesses) was taken by
    argparse as --passphrase-file or --code-file abbreviated, and refused as a file it could not read, quoting the
    passphrase or the whole code in the error ("--passphrase-file hunter2: cannot read it"), which a script's log
    keeps. Each is refused saying how to give it, quoting nothing of it, before anything is read or asked."""
    home = str(tmp_path / "h")
    secret, code = "hunter2-PASSWORD-77", "sessiond1" + "a" * 200
    for argv, way in (
        (["share", "some-id", "--passphrase", secret], "--passphrase-file"),
        (["import", "--passphrase", secret], "--passphrase-file"),
        (["import", "--code", code], "standard input"),
        (["share", "some-id", "--passphrase-file", secret], "--passphrase-file"),  # (the passphrase for its file)
        (["import", "--code-file", code], "standard input"),
    ):
        res = run_cli(home, *argv, "--json")
        message = _usage(res)
        assert way in message and secret not in res.stdout + res.stderr, (argv, message)
        assert "a" * 50 not in res.stdout + res.stderr, (argv, message)
    assert not os.path.exists(home)
    # a file that is there is that file, as the abbreviation took it (`import --code code.txt`)
    (tmp_path / "code.txt").write_text("sessiond1zzzz\n")
    res = run_cli(home, "import", "--code", str(tmp_path / "code.txt"), "--json")  # (read; then no daemon to ask)
    assert res.returncode == 3 and json.loads(res.stdout)["error"]["code"] == "daemon_not_running", res


def test_a_passphrase_holding_a_slash_given_for_its_file_is_not_quoted(tmp_path):
    """`share ID --passphrase-file 'my/pass-phrase'` (the passphrase where its file goes) was refused as a path:
    "--passphrase-file my/pass-phrase: cannot read it: No such file or directory", the passphrase on the terminal
    and in a script's log (only a bare word was taken for one). No file there: said so, quoting none of it,
    before anything is read or asked; a file that is there is still named when it cannot be read."""
    home = str(tmp_path / "h")
    for argv, secret in (
        (["share", "some-id"], "my/pass-phrase-77"),
        (["import"], "/slash-first-pass"),
        (["share", "some-id"], "pass/"),
    ):
        res = run_cli(home, *argv, "--passphrase-file", secret, "--json")
        message = _usage(res)
        assert "no such file" in message and secret not in res.stdout + res.stderr, (argv, message)
        assert "pass-phrase" not in message and "slash-first" not in message, message
    assert not os.path.exists(home)
    folder = tmp_path / "a-folder"
    folder.mkdir()  # (there, and no file: named, as a path that is there is no passphrase)
    message = _usage(run_cli(home, "share", "some-id", "--passphrase-file", str(folder), "--json"))
    assert str(folder) in message and "cannot read it" in message, message


def test_backup_words_given_on_the_command_line_are_refused_without_echoing_them(tmp_path):
    """`sessiond key import WORD1 ... WORD24` (or `--words ...`): argparse refused the words as unrecognized
    arguments, quoting all 24 in the error, and they are the device key itself (whoever has them signs as this
    device). Refused saying to give them on standard input, quoting none of them, nothing made."""
    home = str(tmp_path / "h")
    words = [f"secretword{i}" for i in range(24)]
    for argv in (["key", "import", "--force", *words], ["key", "import", "--words", *words]):
        res = run_cli(home, *argv, "--json")
        message = _usage(res)
        assert "standard input" in message and "secretword" not in res.stdout + res.stderr, (argv, message)
    assert not os.path.exists(home)


def test_a_secret_left_over_as_an_extra_argument_is_not_echoed(tmp_path, capsys):
    """`share ID PASSPHRASE` (or `share ID -p PASSPHRASE`) and `import CODE REST` (a code cut in two by a space, two
    codes pasted): argparse refused the words left over as unrecognized arguments, quoting them, the passphrase or
    the code (the checks that refuse a secret given on the command line without quoting it run after the parse);
    `key WORD...` (`import` left out) quoted the first of the device key's words as the action it did not know.
    Their refusal quotes no word that is no option; an option's name is still quoted (and guessed). In process: the
    parse fails before anything is read or asked."""
    from sessiond.cli.main import main

    home = str(tmp_path / "h")
    code = "sessiond1" + "q" * 60
    for argv in (
        ["share", "some-id", "hunter2-PASSWORD-77"],
        ["share", "some-id", "-p", "hunter2-PASSWORD-77"],
        ["import", code[:30], code[30:]],
        ["key", "hunter2-PASSWORD-77", "ability"],
    ):
        assert main([*argv, "--home", home, "--json"]) == 2, argv
        out, err = capsys.readouterr()
        message = json.loads(out)["error"]["message"]
        assert "PASSWORD" not in out + err and "q" * 20 not in out + err, (argv, message)
        assert "not quoted" in message, (argv, message)
    assert main(["share", "some-id", "--expires=1h", "--qr-code", "--home", home, "--json"]) == 2
    message = json.loads(capsys.readouterr()[0])["error"]["message"]
    assert "--qr-code" in message and "did you mean --qr?" in message, message
    assert not os.path.exists(home)


def test_a_store_url_without_its_scheme_given_to_store_file_is_refused_without_its_secret(tmp_path, capsys):
    """The URL given where --store-file's file goes was refused without its invite only when it had its '://': the
    slips --store refuses as such, the scheme left out (`INVITE@relay.example:5050`, as `serve invite`'s address
    may be copied) or a ':' short (`s5+http//INVITE@HOST:PORT`), were read as a file's name, and its refusal ("cannot
    read it") quoted the invite. In process: refused before anything is made."""
    from sessiond.cli.main import main

    home = str(tmp_path / "h")
    for argv in (
        ["start", "--store-file", "INVITE-SECRET-4@relay.example:5050"],
        ["import", "--store-file", "s5+http//INVITE-SECRET-5@relay.example:5050"],
    ):
        assert main([*argv, "--home", home, "--json"]) == 2, argv
        out, err = capsys.readouterr()
        message = json.loads(out)["error"]["message"]
        assert "SECRET" not in out + err and message.startswith("--store-file"), (argv, message)
    assert not os.path.exists(home)


def test_a_store_url_given_to_store_file_is_refused_naming_the_option_without_its_secret(tmp_path):
    """`start --store-file s5+http://INVITE@HOST:PORT` (the URL where its file goes) was refused as "cannot read
    s5+http://INVITE@HOST:PORT: No such file or directory", the invite (or a password) quoted in the error and no
    option named. It names --store-file, what it takes, and the URL with its credentials hidden; nothing made. And
    an argument the parser does not take (`service install --store-file URL`, which has no such option) is quoted
    in its refusal with a URL's credentials hidden."""
    home = str(tmp_path / "h")
    for argv in (
        ["start", "--store-file", "s5+http://INVITE-SECRET-1@relay.example:5050"],
        ["service", "install", "--store-file", "s5+http://INVITE-SECRET-3@relay.example:5050"],
    ):
        res = run_cli(home, *argv, "--json")
        message = _usage(res)
        assert "SECRET" not in res.stdout + res.stderr and "***@" in message, (argv, message)
        assert argv[0] == "service" or message.startswith("--store-file"), (argv, message)
    assert not os.path.exists(home)


def test_a_duration_that_ends_or_deletes_sessions_needs_its_unit(daemon):
    """`cleanup --older-than 7` (meaning a week) read 7 as seconds and deleted every session idle for more
    than 7 s, nearly all of them; `new`/`set --expires-in 7` and `--idle-timeout 60` likewise ended a session
    within a minute (deleted too with delete_expired). A bare number is refused there now, asking for the unit;
    nothing is deleted, made or changed. (0, the same in any unit, is judged as before.)"""
    sid = cli_json(daemon.home, "new", "--name", "kept")["id"]
    before = _shown(daemon.home, sid)
    for option, argv in (
        ("--older-than", ["cleanup", "--older-than", "7"]),
        ("--expires-in", ["new", "--expires-in", "7"]),
        ("--expires-in", ["set", sid, "--expires-in", "30"]),
        ("--idle-timeout", ["set", sid, "--idle-timeout", "60"]),
        ("--idle-timeout", ["new", "--idle-timeout", "2.5"]),
    ):
        message = _usage(run_cli(daemon.home, *argv, "--json"))
        assert option in message and "has no unit" in message, message
        res = run_cli(daemon.home, *argv)
        assert res.returncode == 2 and "has no unit" in res.stderr, res
    assert [s["id"] for s in cli_json(daemon.home, "ls")["sessions"]] == [sid]  # nothing deleted, nothing made
    assert _shown(daemon.home, sid) == before
    assert cli_json(daemon.home, "cleanup", "--older-than", "7d", "--dry-run")["sessions"] == []


def test_every_duration_option_needs_its_unit(daemon, tmp_path):
    """`share --expires 7` (meaning a week) issued a code that stopped working 7 seconds later, `gc --grace 7`
    freed what was let go 7 seconds ago (a follower mid-read of it broken) and `serve --token-ttl 30` made every
    login last 30 seconds: a bare number was seconds there, refused by --expires-in, --idle-timeout and
    --older-than. One rule for every option that takes a duration: its unit, or a usage error naming the units;
    nothing issued, freed or served. (0, the same in any unit, is judged as before.)"""
    sid = cli_json(daemon.home, "new", "--name", "kept")["id"]
    for option, argv in (
        ("--expires", ["share", sid, "--expires", "7"]),
        ("--expires", ["share", sid, "--write", "--expires", "2.5"]),
        ("--grace", ["gc", "--grace", "7"]),
        ("--grace", ["gc", "--dry-run", "--grace", "3600"]),
    ):
        message = _usage(run_cli(daemon.home, *argv, "--json"))
        assert option in message and "has no unit" in message, message
        assert "7d" in message or "2.5d" in message or "3600d" in message, message  # the units, with its number
        res = run_cli(daemon.home, *argv)
        assert res.returncode == 2 and "has no unit" in res.stderr, res
    assert cli_json(daemon.home, "shares") == {"shares": []}  # no code issued
    argv = ["serve", "--listen", "127.0.0.1:0", "--data", str(tmp_path / "r")]
    try:  # the relay it would start serves until stopped: a short timeout, not the usual 120 s
        res = run_cli(None, *argv, "--token-ttl", "30", "--json", timeout=20)
    except subprocess.TimeoutExpired:
        raise AssertionError("serve --token-ttl 30 started a relay") from None
    message = _usage(res)
    assert "--token-ttl" in message and "has no unit" in message and "30d" in message, message
    # with the unit, each is taken; 0 (gc's grace) needs none
    assert cli_json(daemon.home, "share", sid, "--expires", "7d")["code"]
    assert cli_json(daemon.home, "gc", "--dry-run", "--grace", "0")["objects"] == 0
    assert cli_json(daemon.home, "gc", "--dry-run", "--grace", "12h")["objects"] == 0
    # and each option's --help says so: new's and set's --expires-in and --idle-timeout gave an example only
    for argv, option in (
        (["new"], "--expires-in"),
        (["new"], "--idle-timeout"),
        (["set", sid], "--expires-in"),
        (["set", sid], "--idle-timeout"),
        (["share", sid], "--expires"),
        (["gc"], "--grace"),
        (["serve"], "--token-ttl"),
        (["cleanup", "--older-than", "1d"], "--older-than"),
    ):
        said = " ".join(run_cli(daemon.home, *argv, "--help", check=True).stdout.split()).split(" options: ", 1)[1]
        assert option in said and "with its unit" in said.split(f" {option} ", 1)[1].split(" --", 1)[0], said


def test_a_mistyped_option_names_its_command_and_the_option_meant(tmp_path):
    """`sessiond new --quota 300` said only "unrecognized arguments" under the top-level usage line
    (`sessiond [-h] [--version] COMMAND ...`): the command's own usage, and the option it most likely meant,
    are what a newcomer needs. No daemon is needed: the arguments are refused before anything runs."""
    home = str(tmp_path / "h")
    res = run_cli(home, "new", "--quota", "300")
    assert res.returncode == 2, res
    assert "usage: sessiond new " in res.stderr, res.stderr
    assert "sessiond [-h] [--version] COMMAND" not in res.stderr, res.stderr
    assert "new: unrecognized arguments: --quota 300" in res.stderr, res.stderr
    assert "did you mean --token-quota?" in res.stderr, res.stderr
    assert "sessiond new --help" in res.stderr, res.stderr
    # with --json: the same words, in the usage error's message
    message = _usage(run_cli(home, "new", "--quota", "300", "--json"))
    assert message.startswith("new: unrecognized arguments: --quota 300"), message
    assert "did you mean --token-quota?" in message, message
    # a second-level command (`chat new`) names itself, and an option in a group of either-or options is
    # suggested too
    res = run_cli(home, "chat", "new", "x", "--nmae", "y")
    assert "chat new: unrecognized arguments: --nmae y" in res.stderr and "did you mean --name?" in res.stderr, res
    message = _usage(run_cli(home, "new", "--atuo-compact", "--json"))
    assert "did you mean --auto-compact?" in message, message
    # nothing like it: no guess
    message = _usage(run_cli(home, "new", "--zzzzzz", "--json"))
    assert "did you mean" not in message and "sessiond new --help" in message, message
    assert not os.path.exists(home)


def test_json_given_to_an_option_or_in_a_file_with_a_key_twice_is_refused_naming_it(daemon, tmp_path):
    """`new --metadata '{"a": 1, "a": 2}'` kept the last "a" and dropped the first silently (json.loads),
    and so did `--initial`, `add --call-fields`, and the files of `import-file` and `verify-proof`, where
    the API refuses a body giving a key twice (400 bad_json: JSON readers differ on which one counts). The
    CLI refuses it too now, a usage error naming where the key is given twice; nothing is made or changed."""
    sid = cli_json(daemon.home, "new", "--name", "kept", "--metadata", '{"k": 1}')["id"]
    cli_json(daemon.home, "add", sid, "--role", "user", "hello")
    before = _shown(daemon.home, sid)
    messages = cli_json(daemon.home, "log", sid)["messages"]
    count = len(cli_json(daemon.home, "ls")["sessions"])
    chat = tmp_path / "chat.json"
    chat.write_text('[{"role": "user", "content": "first", "content": "second"}]')
    proof = tmp_path / "proof.json"
    proof.write_text('{"proof": 1, "proof": 2}')
    for where, argv in (
        ("--metadata", ["new", "--metadata", '{"a": 1, "a": 2}']),
        ("--metadata", ["set", sid, "--metadata", '{"k": {"a": 1, "a": 2}}']),
        ("--initial", ["new", "--initial", '[{"role": "user", "content": "x", "content": "y"}]']),
        (
            "--call-fields c1",
            ["add", sid, "--role", "assistant", "--tool-call-with-id", "c1", "f", "{}"]
            + ["--call-fields", "c1", '{"x": 1, "x": 2}'],
        ),
        (str(chat), ["import-file", str(chat), "--format", "openai"]),
        (str(proof), ["verify-proof", sid, str(proof)]),
    ):
        message = _usage(run_cli(daemon.home, *argv, "--json"))
        assert message.startswith(where) and "twice" in message, (argv, message)
    assert _shown(daemon.home, sid) == before
    assert cli_json(daemon.home, "log", sid)["messages"] == messages
    assert len(cli_json(daemon.home, "ls")["sessions"]) == count


def test_an_empty_or_too_long_option_value_the_daemon_refuses_is_named_by_its_option(daemon):
    """`new --id ''` (and `clone`, `fork`, `chat new`: rows of the test above), `new --tag ''`, `set --tag`
    of 101 characters, `ls --tag ''`, `log --chat ''` and `fork --at x` came back as the daemon's words with
    exit 1 ("session id must be ...", "tags[0] must be at least 1 characters", "query parameter chat ...",
    "not a message id"): a value typed for an option is a usage error naming that option, as every other
    option's is. Nothing is made or changed."""
    sid = cli_json(daemon.home, "new", "--name", "kept", "--tag", "t")["id"]
    cli_json(daemon.home, "add", sid, "--role", "user", "hello")
    before = _shown(daemon.home, sid)
    count = len(cli_json(daemon.home, "ls")["sessions"])
    for option, argv in (
        ("--tag '' must not be empty", ["new", "--tag", ""]),
        ("--tag '' must not be empty", ["set", sid, "--tag", "y", "--tag", ""]),
        ("--tag 'xxxxx", ["set", sid, "--tag", "x" * 101]),
        ("--tag must not be empty", ["ls", "--tag", ""]),
        ("--chat must not be empty", ["log", sid, "--chat", ""]),
        ("--chat must not be empty", ["context", sid, "--chat", ""]),
        ("--at: not a message id", ["fork", sid, "--at", "nosuch"]),
        ("--chat must not be empty", ["add", sid, "--role", "user", "hi", "--chat", ""]),
        ("--chat must not be empty", ["ask", sid, "hi", "--chat", ""]),
        ("--provider must not be empty", ["ask", sid, "hi", "--provider", ""]),
        ("--provider must not be empty", ["models", "--provider", ""]),
        ("--chat must not be empty", ["compact", sid, "--chat", "", "--target-tokens", "0"]),
        ("--chat must not be empty", ["uncompact", sid, "--chat", ""]),
        ("--device must not be empty", ["unshare", sid, "--device", ""]),
    ):
        message = _usage(run_cli(daemon.home, *argv, "--json"))
        assert message.startswith(option), (argv, message)
        assert "query parameter" not in message and "tags[" not in message, message
    assert _shown(daemon.home, sid) == before
    assert len(cli_json(daemon.home, "ls")["sessions"]) == count
    assert [c["id"] for c in cli_json(daemon.home, "chat", "ls", sid)["chats"]] == ["main"]


def test_an_empty_session_or_chat_argument_is_a_usage_error_saying_which(daemon):
    """`sessiond show "$ID"` with ID unset (and `rm`, `pause`, `add`, ...) said "no such route: GET
    /v1/sessions/ (see GET /v1/openapi.json)": the daemon's words for a path with no id, which tell a user
    nothing; an empty CHAT said "chat must be at least 1 characters", exit 1. Both are usage errors now,
    naming the argument and where to find one; nothing changes."""
    sid = cli_json(daemon.home, "new", "--name", "kept")["id"]
    cli_json(daemon.home, "add", sid, "--role", "user", "hello")
    before = _shown(daemon.home, sid)
    for what, argv in (
        ("ID", ["show", ""]),
        ("ID", ["rm", ""]),
        ("ID", ["pause", ""]),
        ("ID", ["end", ""]),
        ("ID", ["add", "", "--role", "user", "hi"]),
        ("ID", ["log", ""]),
        ("ID", ["checkpoint", ""]),
        ("ID", ["sync", ""]),
        ("ID", ["stats", ""]),
        ("ID", ["chat", "ls", ""]),
        ("CHAT", ["chat", "switch", sid, ""]),
        ("CHAT", ["chat", "set", sid, "", "--name", "x"]),
        ("-o", ["export", sid, "-o", ""]),  # (printed the export to standard output, as if -o were left out)
    ):
        message = _usage(run_cli(daemon.home, *argv, "--json"))
        assert message.startswith(f"{what} is empty"), (argv, message)
        assert "route" not in message, message
    assert _shown(daemon.home, sid) == before
    assert [s["id"] for s in cli_json(daemon.home, "ls")["sessions"]] == [sid]


def test_a_file_store_url_no_folder_can_have_is_a_usage_error(tmp_path):
    """`start --store file:///x/st%00ore` ended with "the daemon did not start: ValueError: embedded null
    byte" (`daemon`: the traceback of the store's mkdir), and `file:///x/store?a=1` used /x/store, the
    query dropped unsaid. Both are refused before anything starts, naming the URL and what to give."""
    home = str(tmp_path / "h")
    for url, why in (
        (f"file://{tmp_path}/st%00ore", "NUL"),
        (f"file://{tmp_path}/store?a=1", "?query"),
        (f"file://{tmp_path}/store#x", "#fragment"),
    ):
        for command in ("start", "daemon"):
            message = _usage(run_cli(home, command, "--store", url, "--json"))
            assert why in message and "file:///" in message, (command, url, message)
    assert not os.path.exists(tmp_path / "store")
    assert not os.path.exists(home)  # (`daemon` made the home, then refused its --store)


def test_a_store_url_a_slash_or_a_scheme_off_names_the_url_meant(tmp_path):
    """A newcomer's `--store file://tmp/shared` (a slash short) was told to use file:///CWD/tmp/shared, a folder
    under wherever they stood, not /tmp/shared; and `--store http://HOST:5050`, the relay's address as typed in a
    browser (or `s5://HOST`), was told the schemes without the relay's own, s5+http://HOST:PORT. Each usage error
    names the URL most likely meant (a secret in it still hidden), nothing started."""
    home = str(tmp_path / "h")
    for url, meant in (
        ("file://tmp/shared", "file:///tmp/shared"),
        ("http://relay.example:5050", "s5+http://relay.example:5050"),
        ("https://INVITE@relay.example", "s5+https://***@relay.example"),
        ("s5://relay.example:5050", "s5+https://relay.example:5050"),
    ):
        res = run_cli(home, "start", "--store", url, "--json")
        message = _usage(res)
        assert f"did you mean {meant}" in message, (url, message)
        assert url.startswith("file") or "s5+http://HOST:PORT (your relay" in message, message
        assert "INVITE" not in res.stdout + res.stderr, res
    message = _usage(run_cli(home, "start", "--store", "http://127.0.0.1:5001", "--json"))
    assert "ipfs+http://127.0.0.1:5001" in message, message  # (a Kubo node's RPC port: named as the other way)
    assert not os.path.exists(home)


def test_a_relays_address_given_without_its_scheme_is_refused_naming_the_url_meant(tmp_path, monkeypatch):
    """`start --store 127.0.0.1:5050` (the address `sessiond serve` listens on, as it says it) or
    `--store INVITE@relay.example:5050` (the scheme left out) was taken as a folder of that name where the user
    stood: the daemon started on an empty folder store, not the relay, and with the invite its path, shown by
    `status`, kept in the home's store-url and its logs; `s5+http//HOST:PORT` (a ':' short) too. Each is a usage
    error naming the URL meant, the invite hidden, nothing made; a folder of such a name that is there is still
    taken, and one to be made is given as ./NAME."""
    from sessiond.daemon.home import HomeError, normalize_store_url

    monkeypatch.chdir(tmp_path)
    for given, meant in (
        ("127.0.0.1:5050", "s5+http://127.0.0.1:5050"),
        ("relay.example:5050", "s5+http://relay.example:5050"),
        ("INVITE@relay.example:5050/", "s5+http://***@relay.example:5050"),
        ("[::1]:5050", "s5+http://[::1]:5050"),
        ("s5+http//relay.example:5050", "s5+http://relay.example:5050"),
        ("ipfs+http//127.0.0.1:5001", "ipfs+http://127.0.0.1:5001"),
    ):
        with pytest.raises(HomeError) as refused:
            normalize_store_url(given)
        message = str(refused.value)
        assert f"did you mean {meant}?" in message and "INVITE" not in message, (given, message)
    assert not os.listdir(tmp_path)
    (tmp_path / "10.0.0.1:5050").mkdir()  # (a folder that is there: taken as ever)
    assert normalize_store_url("10.0.0.1:5050") == f"file://{tmp_path}/10.0.0.1:5050"
    assert normalize_store_url("./relay.example:5050") == f"file://{tmp_path}/relay.example:5050"
    home = str(tmp_path / "h")
    res = run_cli(home, "start", "--store", "INVITE@relay.example:5050", "--json")
    message = _usage(res)
    assert "s5+http://***@relay.example:5050" in message and "INVITE" not in res.stdout + res.stderr, res
    assert not os.path.exists(home)


def test_a_network_store_url_that_does_not_parse_is_a_usage_error_without_its_secret(tmp_path):
    """`start --store 's5+https://[::1'` (a bracket left open) ended in urlparse's traceback, and a port out
    of range or not a number was found only by the daemon, after it started ("the daemon did not start",
    exit 1). All are usage errors before anything starts, naming the URL with its credentials hidden."""
    home = str(tmp_path / "h")
    for url, why in (
        ("s5+https://INVITE@[::1", "Invalid IPv6 URL"),
        ("s5+https://INVITE@host:99999", "out of range"),
        ("ipfs+http://INVITE@host:abc", "abc"),  # (with no user part, `INVITE:host`: test_store_url_two_slips.py)
    ):
        res = run_cli(home, "start", "--store", url, "--json")
        message = _usage(res)
        assert why in message and "malformed" in message, (url, message)
        assert "INVITE" not in res.stdout + res.stderr, res
    assert not os.path.exists(home)


def test_a_file_over_the_daemons_request_limit_is_refused_saying_how_big_and_what_to_do(daemon, tmp_path):
    """`import-file` of a file past the 256 MiB a request to the daemon may carry (a long-used ChatGPT
    export is) said only "request body too large", exit 1: not which limit, nor what to do. It names the
    file, its size and the limit, and says to split it; nothing is imported."""
    from sessiond.daemon.routes.failures import BODY_LIMIT

    path = tmp_path / "big.json"
    with open(path, "w") as f:
        f.write('[{"role": "user", "content": "' + "x" * BODY_LIMIT + '"}]')
    res = run_cli(daemon.home, "import-file", str(path), "--format", "openai", "--json")
    assert res.returncode == 1, res
    message = json.loads(res.stdout)["error"]["message"]
    assert str(path) in message and "256 MiB" in message and "split" in message, message
    assert f"({os.path.getsize(path) >> 20} MiB)" in message, message  # the file's own size
    assert cli_json(daemon.home, "ls")["sessions"] == []


def test_an_import_store_the_daemon_refuses_is_named_as_the_option(daemon):
    """`import --store bogus://x` (or a URL that does not parse) came back as the daemon's field, "store:
    unsupported store URL scheme ...", exit 1: it is the option's value, a usage error naming --store."""
    sid = cli_json(daemon.home, "new", "--name", "kept")["id"]
    code = cli_json(daemon.home, "share", sid)["code"]
    for url in ("bogus://x", "s5+https://[::1"):
        message = _usage(run_cli(daemon.home, "import", "--store", url, "--json", input=code))
        assert message.startswith("--store: ") and "store: store" not in message, (url, message)
    assert [s["id"] for s in cli_json(daemon.home, "ls")["sessions"]] == [sid]


def test_a_request_line_too_long_for_the_daemon_says_what_was_too_long(daemon):
    """`sessiond search` of a pasted passage (or `ls --user` of a long name) makes a request line past the
    8 KiB aiohttp reads, and said "Got more than 8190 bytes when reading: bytearray(b'/v1/search?q=...')":
    the HTTP parser's words, naming neither the cause nor the way. The clients say it is the request's
    line or a header, too long for the daemon, and to shorten the value given (aiohttp's reason kept)."""
    for argv in (["search", " ".join(["word"] * 2000)], ["ls", "--user", "u" * 9000]):
        res = run_cli(daemon.home, *argv, "--json")
        assert res.returncode == 1, res
        message = json.loads(res.stdout)["error"]["message"]
        assert "8 KiB" in message and "shorten" in message and "bytearray" not in message, message


def test_an_import_given_no_code_says_so(daemon, tmp_path):
    """`sessiond import < /dev/null` (an empty file, a pipe from a command that printed nothing) was answered
    "not a sessiond share code (it should start with 'sessiond1')", exit 1: as if a wrong code had been
    given. No code at all is a usage error saying where the code goes."""
    empty = tmp_path / "code.txt"
    empty.write_text("# only a note\n\n")
    for argv, data in ((["import"], ""), (["import"], "  \n"), (["import", "--code-file", str(empty)], None)):
        message = _usage(run_cli(daemon.home, *argv, "--json", input=data))
        assert message.startswith("no share code"), (argv, message)


def test_a_duration_too_long_to_be_a_number_is_a_usage_error(tmp_path):
    """A duration of more digits than a float holds (400 of them, weeks) was read as infinity and taken: `serve
    --token-ttl` then started a relay whose every login failed (int(inf) for the cookie's Max-Age: 500, the
    token written anyway), and `cleanup --older-than` went to the daemon, whose refusal named its API field. It
    is a usage error naming the option, before anything runs."""
    home = str(tmp_path / "h")
    huge = "9" * 400 + "w"
    message = _usage(run_cli(home, "cleanup", "--older-than", huge, "--json"))
    assert "--older-than" in message and "too long" in message, message
    argv = ["serve", "--listen", "127.0.0.1:0", "--data", str(tmp_path / "r")]
    try:  # the relay it would start serves until stopped: a short timeout
        res = run_cli(None, *argv, "--token-ttl", huge, "--json", timeout=20)
    except subprocess.TimeoutExpired:
        raise AssertionError("serve --token-ttl (400 digits)w started a relay") from None
    message = _usage(res)
    assert "--token-ttl" in message and "too long" in message, message
    assert not os.path.exists(tmp_path / "r")  # no relay's data made


def test_a_value_that_begins_with_a_dash_is_refused_saying_how_to_give_it(daemon):
    """A name, a text or a query that begins with a dash (`--name -draft`, `add ID --role user -x`, `search
    -foo`) is read by the parser as an option: it was refused as argparse words it, "expected one argument"
    (one was given), "the following arguments are required: query" (it was typed), or "unrecognized
    arguments", none saying why or what to write. The refusal says the value begins with a dash, and how to
    give it: OPTION=VALUE, or after `--`. Nothing is made or stored; the ways it names are taken."""
    sid = cli_json(daemon.home, "new", "--name", "kept")["id"]
    before = _shown(daemon.home, sid)
    for argv, value, way in (
        (["new", "--name", "-draft"], "-draft", "--name=-draft"),
        (["set", sid, "--system", "-terse"], "-terse", "--system=-terse"),
        (["gc", "--grace", "-1h"], "-1h", "--grace=-1h"),
        (["add", sid, "--role", "user", "-x"], "-x", "`--`"),
        (["search", "-foo"], "-foo", "`--`"),
    ):
        message = _usage(run_cli(daemon.home, *argv, "--json"))
        assert f"'{value}' begins with a dash" in message and way in message, message
        res = run_cli(daemon.home, *argv)
        assert res.returncode == 2 and way in res.stderr, res
    assert [s["id"] for s in cli_json(daemon.home, "ls")["sessions"]] == [sid]  # nothing made
    assert _shown(daemon.home, sid) == before  # nor changed
    assert cli_json(daemon.home, "log", sid)["messages"] == []  # nor stored
    # the ways the refusals name
    assert cli_json(daemon.home, "new", "--name=-draft")["name"] == "-draft"
    home = {"SESSIOND_HOME": daemon.home}  # (run_cli gives --home last: after `--`, it would be a text)
    res = run_cli(None, "add", sid, "--json", "--role", "user", "--", "-x", env=home, check=True)
    assert json.loads(res.stdout)["content"] == "-x"
    res = run_cli(None, "search", "--json", "--", '"-x"', env=home, check=True)
    assert json.loads(res.stdout)["hits"]


def test_a_daemon_that_did_not_start_is_named_once_as_sessiond(tmp_path):
    """`start` quotes the last line the daemon it spawned wrote, which is itself a `sessiond: ...` line: the
    refusal read "sessiond: the daemon did not start: sessiond: /home/config.toml: unknown setting ...",
    the program named twice, the second time in the middle of the sentence. It is named once."""
    home = str(tmp_path / "home")
    os.makedirs(home, mode=0o700)
    with open(os.path.join(home, "config.toml"), "w") as f:
        f.write("push_dely = 1\n")
    res = run_cli(home, "start")
    assert res.returncode == 1, res
    assert res.stderr.startswith(f"sessiond: the daemon did not start: {home}/config.toml: unknown setting"), res
    assert res.stderr.count("sessiond:") == 1, res.stderr
    res = run_cli(home, "start", "--json")
    message = json.loads(res.stdout)["error"]["message"]
    assert message.startswith(f"the daemon did not start: {home}/config.toml: unknown setting 'push_dely'"), message


def test_an_expiry_time_past_is_refused_in_the_time_the_user_reads(daemon):
    """`--expires-at 2020-01-01T00:00:00Z` was refused as "--expires-at 1577836800.0 (2020-01-01 00:00:00
    UTC) is past", the API's seconds since the epoch first, a number the user never typed, and a way on
    in the API's terms (`POST /v1/sessions/{id}/end`). The CLI's refusal names the time as a date, and
    the command."""
    sid = cli_json(daemon.home, "new")["id"]
    before = _shown(daemon.home, sid)
    for argv in (["new"], ["set", sid]):
        message = _usage(run_cli(daemon.home, *argv, "--expires-at", "2020-01-01T00:00:00Z", "--json"))
        assert message.startswith("--expires-at 2020-01-01 00:00:00 UTC is past: give a time to come"), message
        assert "1577836800" not in message and "POST /v1" not in message, message
        assert "--expires-in" in message and "`sessiond end" in message, message
    assert [s["id"] for s in cli_json(daemon.home, "ls")["sessions"]] == [sid]  # nothing made
    assert _shown(daemon.home, sid) == before  # nor changed


def test_import_refuses_two_stores_before_it_asks_for_the_code(daemon, tmp_path):
    """`import --store URL --store-file F` (two stores: one is taken) read the share code first: with none on
    standard input it was refused as "no share code on standard input", the options' conflict unsaid, and on
    a terminal the user was asked to paste the code, then refused for the options. The options are checked
    first: nothing is read, nothing imported."""
    f = tmp_path / "store"
    f.write_text("file:///tmp/elsewhere\n")
    os.chmod(f, 0o600)
    message = _usage(run_cli(daemon.home, "import", "--store", "file:///tmp/x", "--store-file", str(f), "--json"))
    assert "give one store" in message and "share code" not in message, message
    message = _usage(run_cli(daemon.home, "import", "--passphrase-file", str(tmp_path / "none"), "--json"))
    assert "no such file" in message and "share code" not in message, message  # so a passphrase file missing


def test_initial_that_is_no_list_is_refused_with_an_example(daemon):
    """`new --initial '{"role": "user", "content": "x"}'` (one message, not a list of them) was refused as the
    daemon words it, 'initial_messages: must be a list', with no example of what --initial takes. It is a usage
    error naming the shape with an example (text and --json), and nothing is made."""
    before = cli_json(daemon.home, "ls")
    for extra in ((), ("--json",)):
        res = run_cli(daemon.home, "new", "--initial", '{"role": "user", "content": "x"}', *extra)
        assert res.returncode == 2, res
        said = json.loads(res.stdout)["error"]["message"] if extra else res.stderr
        assert "--initial must be a list: a JSON list of messages" in said and '[{"role": "system"' in said, said
    assert cli_json(daemon.home, "ls") == before


def test_a_file_option_that_cannot_be_read_is_named_by_its_option(daemon, tmp_path):
    """`share ID --passphrase-file F` (and `import --code-file F`) with F missing said "cannot read F: No such
    file or directory", not naming the option it was given to (an import reads three files: which one?), as
    `serve --cert` names its own. The refusal names the option and the file, exit 2, nothing shared or imported;
    a --passphrase-file that names no file, the option alone (what names no file may be the passphrase itself,
    typed where its file goes: test_a_passphrase_holding_a_slash_given_for_its_file_is_not_quoted)."""
    sid = daemon.client().create_session(name="s")["id"]
    missing = str(tmp_path / "none")
    for argv, said in (
        (["share", sid, "--passphrase-file", missing], "--passphrase-file: no such file (its name not quoted"),
        (["import", "--code-file", missing], f"--code-file {missing}: cannot read it: No such file or directory"),
    ):
        message = _usage(run_cli(daemon.home, *argv, "--json"))
        assert message.startswith(said), message
    assert cli_json(daemon.home, "shares")["shares"] == []


def test_a_store_url_a_scheme_off_with_a_secret_mistyped_into_its_host_is_not_echoed(tmp_path):
    """`--store http://INVITE%40relay.example:5050` (the relay's address as a browser takes it, its invite's '@'
    written %40) or `s5://INVITE RELAY` (a space for it): no userinfo is left, the invite is read as the host, and
    the refusal of the scheme quoted the URL and named the URL meant twice over, the invite in full each time (a
    network scheme's URL so mistyped is refused quoting nothing of its host). And `file://USER:PASSWORD@HOST/x`
    named `file:///USER:PASSWORD@HOST/x` as the folder meant, the password in clear. Neither is quoted; the way on
    names the URL's shape."""
    home = str(tmp_path / "h")
    secret = "inv_4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c"
    for url in (
        f"http://{secret}%40relay.example:5050",
        f"https://{secret}%40portal.example",
        f"s5://{secret} relay.example",
        f"file://alice:{secret}@nas.example/sessions",
    ):
        res = run_cli(home, "start", "--store", url, "--json")
        message = _usage(res)
        assert secret not in res.stdout + res.stderr, (url, message)
        if not url.startswith("file"):
            assert "s5+http" in message and "HOST" in message and "'%'" in message, (url, message)
    assert not os.path.exists(home)


def test_a_timeout_too_long_for_a_socket_is_a_usage_error(tmp_path):
    """`status --timeout 300000000h` (or 1000000000000, seconds) was taken, a finite number, and ended in
    OverflowError's traceback when the client set it on the socket ("timestamp out of range for platform
    time_t"): a wait is taken up to 10 years, as every duration is, and past it refused as a usage error."""
    home = str(tmp_path / "h")
    for argv in (["status", "--timeout", "300000000h"], ["status", "--timeout", "1000000000000"]):
        message = _usage(run_cli(home, *argv, "--json"))
        assert "--timeout" in message and "10 years" in message, message
    message = _usage(run_cli(home, "stop", "--timeout", "100000000000", "--json"))
    assert "--timeout" in message and "10 years" in message, message


def test_a_file_store_url_of_a_folder_under_home_a_slash_short_names_that_folder(tmp_path):
    """`--store file://~/shared` (the home's folder, as a shell takes `~/shared`) was named back as file:///~/shared, a
    folder named `~` at the root, or as CWD/~/shared, a folder named `~` where the user stood: neither the one meant,
    and each made there once copied. The guess names the folder under the user's home."""
    home, user = str(tmp_path / "h"), str(tmp_path / "user")
    message = _usage(run_cli(home, "start", "--store", "file://~/shared", "--json", env={"HOME": user}))
    assert f"did you mean file://{user}/shared?" in message, message
    assert "~/shared" not in message.replace("'file://~/shared'", ""), message  # (the URL as typed, quoted only)
    assert not os.path.exists(home)


@pytest.mark.parametrize("given", ["", "\n\n", "# Your device key backup (keep it secret; ...)\n"])
def test_key_import_given_no_words_says_where_they_go(tmp_path, capsys, monkeypatch, given):
    """`sessiond key import < empty-file` (an export that wrote nothing, a pipe from a command that failed) was
    refused as 'a key backup is 24 words; got 0', exit 1, code `error`: as if the words were wrong, not missing,
    and not where they go. `import` given no code says so (exit 2, `usage`, the way on); so does `key import`. Nothing
    is made."""
    import io

    from sessiond.cli.main import main

    home = str(tmp_path / "h")
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(given.encode())))
    code = main(["key", "import", "--home", home, "--json"])
    out, _err = capsys.readouterr()
    error = json.loads(out)["error"]
    assert code == 2 and error["code"] == "usage", (code, error)
    assert "no backup words on standard input" in error["message"], error
    assert "sessiond key import" in error["message"] and "< " in error["message"], error
    assert not os.path.exists(home)


@pytest.mark.parametrize("given, says", [("nan", "not a duration: 'nan'"), ("7", "'7' has no unit")])
def test_cleanup_names_its_option_as_every_duration_is_named(tmp_path, capsys, given, says):
    """`cleanup --older-than nan` said "--older-than not a duration: 'nan'" (the option run into its reason), where
    every other duration's refusal says "argument --expires: not a duration: ...": it is named so too, before any
    daemon is asked."""
    from sessiond.cli.main import main

    code = main(["cleanup", "--older-than", given, "--home", str(tmp_path / "h"), "--json"])
    error = json.loads(capsys.readouterr().out)["error"]
    assert code == 2 and error["message"].startswith(f"argument --older-than: {says}"), error
    assert not os.path.exists(tmp_path / "h")
