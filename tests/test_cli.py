"""The `sessiond` command line, as a person and a script would use it."""

from __future__ import annotations

import itertools
import json
import os
import select
import shlex
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from conftest import cli_json, popen_cli, run_cli
from sessiond.client import ApiError
from terminal import on_terminal


def test_start_new_add_log_stop(home):
    res = run_cli(home, "start")
    assert res.returncode == 0, res.stderr
    assert "started" in res.stdout
    try:
        again = run_cli(home, "start")
        assert again.returncode == 0 and "already running" in again.stdout
        st = run_cli(home, "status", check=True).stdout
        assert "socket:" in st and "device:" in st and "sessions: 0" in st
        sid = run_cli(
            home,
            "new",
            "--name",
            "cli",
            "--system",
            "Be kind.",
            "--model",
            "m1",
            "--user",
            "u1",
            "--tag",
            "a",
            "--tag",
            "b",
            "--temperature",
            "0.3",
            check=True,
        ).stdout.strip()
        assert sid
        run_cli(home, "add", sid, "--role", "user", "hello there", check=True)
        run_cli(home, "add", sid, "--role", "assistant", "-", input="from stdin\nsecond line", check=True)
        log = run_cli(home, "log", sid, check=True).stdout
        assert "hello there" in log and "from stdin\nsecond line" in log
        # what `echo` pipes in ends with its line end: not part of the message (it was stored with it)
        run_cli(home, "add", sid, "--role", "user", "-", input="echoed\n", check=True)
        run_cli(home, "add", sid, "--role", "user", "-", input="two blank lines after\n\n\r\n", check=True)
        data = cli_json(home, "log", sid)
        assert [m["content"] for m in data["messages"]] == [
            "hello there",
            "from stdin\nsecond line",
            "echoed",
            "two blank lines after\n\n",
        ]
        show = cli_json(home, "show", sid)
        assert show["system_prompt"] == "Be kind." and show["settings"] == {"temperature": 0.3}
        assert show["tags"] == ["a", "b"] and show["message_count"] == 4
        ls = run_cli(home, "ls", check=True).stdout
        assert sid in ls and "cli" in ls
        assert [s["id"] for s in cli_json(home, "ls", "--user", "u1")["sessions"]] == [sid]
        assert cli_json(home, "ls", "--user", "nobody")["sessions"] == []
        chat = run_cli(home, "chat", "new", sid, "--name", "second", "--switch", check=True).stdout.strip()
        chats = cli_json(home, "chat", "ls", sid)["chats"]
        assert [c["current"] for c in chats] == [False, True] and chats[1]["id"] == chat
        run_cli(home, "chat", "switch", sid, "main", check=True)
        assert cli_json(home, "show", sid)["current_chat"] == "main"
        assert cli_json(home, "pause", sid)["status"] == "paused"
        res = run_cli(home, "add", sid, "--role", "user", "nope")
        assert res.returncode == 1 and "resume" in res.stderr
        assert cli_json(home, "resume", sid)["status"] == "active"
        assert cli_json(home, "set", sid, "--name", "renamed")["name"] == "renamed"
        assert cli_json(home, "end", sid)["status"] == "ended"
        run_cli(home, "rm", sid, check=True)
        res = run_cli(home, "show", sid)
        assert res.returncode == 1 and "no session" in res.stderr
    finally:
        stop = run_cli(home, "stop")
    assert stop.returncode == 0 and "stopped" in stop.stdout
    assert run_cli(home, "stop").returncode == 0  # stopping a stopped daemon is not an error


def test_no_daemon_says_how_to_start_one(home):
    res = run_cli(home, "ls")
    assert res.returncode == 3
    assert "no sessiond daemon" in res.stderr and "sessiond start" in res.stderr
    res = run_cli(home, "status", "--json")
    assert res.returncode == 3 and json.loads(res.stdout)["error"]["code"] == "daemon_not_running"


def test_home_from_environment(daemon):
    res = run_cli(None, "new", "--id", "via-env", env={"SESSIOND_HOME": daemon.home})
    assert res.returncode == 0 and res.stdout.strip() == "via-env"


def test_errors_from_the_daemon_exit_nonzero_with_json(daemon):
    res = run_cli(daemon.home, "show", "missing", "--json")
    assert res.returncode == 1
    assert json.loads(res.stdout)["error"]["code"] == "not_found"
    res = run_cli(daemon.home, "new", "--id", "bad id!")  # an option's value the daemon refuses: a usage error
    assert res.returncode == 2 and "--id must be" in res.stderr
    res = run_cli(daemon.home, "new", "--metadata", "{oops")
    assert res.returncode == 2 and "--metadata is not valid JSON" in res.stderr
    res = run_cli(daemon.home, "add", "x", "--role", "user", "-", input=b"\xff\xfe")
    assert res.returncode == 2 and "UTF-8" in res.stderr


def test_a_session_id_mistyped_cut_short_or_given_as_its_name_is_refused_naming_the_one_meant(daemon):
    """A newcomer's `sessiond log "trip plans"` (the name `ls` shows beside the id), an id with one character
    mistyped, or the start of one copied short was refused with "no session ... (see `sessiond ls`)" alone,
    leaving them to find it in a listing. The refusal (still not_found, exit 1, nothing done) names the session
    meant; an id like none names none."""
    sid = cli_json(daemon.home, "new", "--name", "trip plans")["id"]
    other = cli_json(daemon.home, "new", "--name", "other")["id"]
    typo = sid[:10] + ("x" if sid[10] != "x" else "y") + sid[11:]
    for typed, says in (
        ("trip plans", f"the session named 'trip plans' is {sid}"),
        (typo, f"did you mean {sid}?"),
        (sid[:12], f"did you mean {sid}?"),
    ):
        for args in (["log", typed], ["add", typed, "--role", "user", "x"], ["show", typed]):
            res = run_cli(daemon.home, *args, "--json")
            assert res.returncode == 1, res
            err = json.loads(res.stdout)["error"]
            assert err["code"] == "not_found" and says in err["message"], (args, err)
            assert says in run_cli(daemon.home, *args).stderr
    assert cli_json(daemon.home, "log", sid)["messages"] == []  # nothing added to the one meant
    res = run_cli(daemon.home, "show", "zzzzzzzzzzzz", "--json")
    message = json.loads(res.stdout)["error"]["message"]
    assert "did you mean" not in message and "named" not in message and other not in message, message
    cli_json(daemon.home, "new", "--name", "trip plans")  # two of that name: both named, for the user to choose
    message = json.loads(run_cli(daemon.home, "show", "trip plans", "--json").stdout)["error"]["message"]
    assert "2 sessions are named 'trip plans'" in message and sid in message, message


def test_a_share_code_given_where_a_session_id_goes_is_named_as_one_and_not_echoed(daemon):
    """A newcomer given a share code runs `sessiond show CODE` (or `ask CODE ...`) before `sessiond import`: the
    refusal quoted the code whole ("no session 'sessiond1...'"), in the error a script's log or a pasted bug report
    keeps, and whoever sees a code can read its session. It says what was given and the way on, quoting none of it;
    an id longer than any can be is not quoted either."""
    sid = cli_json(daemon.home, "new")["id"]
    code = cli_json(daemon.home, "share", sid)["code"]
    for args in (["show", code], ["ask", code, "hi"], ["add", code, "--role", "user", "x"], ["log", code]):
        res = run_cli(daemon.home, *args, "--json")
        assert res.returncode == 1, res
        err = json.loads(res.stdout)["error"]
        assert err["code"] == "not_found" and "share code" in err["message"], (args, err)
        assert "`sessiond import" in err["message"], err
        assert code[9:40] not in res.stdout + res.stderr, (args, res)
    long = "a" + "b" * 200
    res = run_cli(daemon.home, "show", long, "--json")
    assert res.returncode == 1 and json.loads(res.stdout)["error"]["code"] == "not_found", res
    assert "b" * 100 not in res.stdout + res.stderr and "128" in res.stderr, res
    # given as a new session's id (`new --id CODE`, or a clone's): named as a code, the way on `sessiond import`
    res = run_cli(daemon.home, "new", "--id", code, "--json")
    err = json.loads(res.stdout)["error"]
    assert res.returncode == 2 and err["code"] == "usage" and "share code" in err["message"], res
    assert "`sessiond import" in err["message"] and code[9:40] not in res.stdout + res.stderr, res
    for make in (lambda: daemon.client().clone(sid, new_id=code), lambda: daemon.client().create_session(id=long)):
        with pytest.raises(ApiError) as e:
            make()
        assert e.value.status == 422 and code[9:40] not in e.value.message and "b" * 60 not in e.value.message, e
    from sessiond.api import types
    from sessiond.storage import ids
    from sessiond.sync import sharecode

    assert (
        ids._SHARE_CODE == types._SHARE_CODE == sharecode.PREFIX
        and ids.ID_RE.match("a" * 128)
        and not ids.ID_RE.match("a" * 129)
    )


def test_every_command_has_json(daemon):
    sid = cli_json(daemon.home, "new")["id"]
    for args in (
        ["status"],
        ["ls"],
        ["show", sid],
        ["chat", "ls", sid],
        ["log", sid],
        ["sync", "--wait"],
        ["verify"],
        ["add", sid, "--role", "user", "x"],
        ["key", "export"],
    ):
        res = run_cli(daemon.home, *args, "--json")
        assert res.returncode == 0, (args, res.stderr)
        json.loads(res.stdout)


def test_help_lists_commands(home):
    res = run_cli(None, "--help")
    assert res.returncode == 0
    for name in (
        "daemon",
        "start",
        "stop",
        "status",
        "new",
        "ls",
        "show",
        "rm",
        "chat",
        "add",
        "log",
        "sync",
        "verify",
        "key",
    ):
        assert name in res.stdout


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    argv=st.lists(
        st.one_of(
            st.sampled_from(
                [
                    "new",
                    "add",
                    "log",
                    "import",
                    "share",
                    "export",
                    "import-file",
                    "verify-proof",
                    "cleanup",
                    "--json",
                    "--role",
                    "user",
                    "-",
                    "--older-than",
                    "--format",
                    "chatgpt",
                    "key",
                    "import",
                    "--at",
                ]
            ),
            st.text(max_size=12),
        ),
        max_size=6,
    ),
    stdin=st.binary(max_size=64),
)
def test_cli_survives_garbage(home, argv, stdin, monkeypatch):
    """Arbitrary arguments and standard input: an exit code and a message, never a traceback."""
    import io
    import sys as _sys

    from sessiond.cli.main import main

    monkeypatch.setattr(_sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), errors="strict"))
    code = main([*argv, "--home", home] if argv and not argv[0].startswith("-") else argv)
    assert isinstance(code, int)


# ------------------------------------------------------------------ issue 19: CLI errors and output
def _no_traceback(res):
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout, res.stderr
    assert len(res.stderr.strip().splitlines()) <= 2, res.stderr  # a message (and perhaps usage), not a dump


def test_home_that_is_a_file_is_a_clear_error(tmp_path):
    f = tmp_path / "file"
    f.write_text("not a folder")
    for args in (["start"], ["daemon"], ["ls"], ["stop"], ["key", "export"], ["key", "import"]):
        res = run_cli(str(f), *args)
        assert res.returncode != 0 and "not a folder" in res.stderr, (args, res.stderr)
        _no_traceback(res)
        res = run_cli(str(f), *args, "--json")
        assert res.returncode != 0 and "not a folder" in json.loads(res.stdout)["error"]["message"], args
    assert f.read_text() == "not a folder"


def _long_home(base) -> str:
    return os.path.join(str(base), "x" * 60, "y" * 60, "home")


def test_long_runtime_dir_still_gives_a_socket(tmp_path):
    """A long home puts its socket under XDG_RUNTIME_DIR; if that is long too, the daemon still starts."""
    base = tempfile.mkdtemp(prefix="sd-")
    home = _long_home(base)
    runtime = tmp_path / ("r" * 120)
    runtime.mkdir(mode=0o700)
    env = {"XDG_RUNTIME_DIR": str(runtime)}
    try:
        res = run_cli(home, "start", env=env)
        _no_traceback(res)
        assert res.returncode == 0, res.stderr
        st = cli_json(home, "status", env=env)
        assert len(st["socket"].encode()) <= 100
        assert cli_json(home, "new", "--id", "long", env=env)["id"] == "long"
    finally:
        stop = run_cli(home, "stop", env=env)
        shutil.rmtree(base, ignore_errors=True)
    assert stop.returncode == 0 and "stopped" in stop.stdout


def test_clients_find_the_socket_from_the_home_not_their_environment(tmp_path):
    base = tempfile.mkdtemp(prefix="sd-")
    home = _long_home(base)
    mine, theirs = tempfile.mkdtemp(prefix="sd-rt-"), tempfile.mkdtemp(prefix="sd-rt-")
    try:
        assert run_cli(home, "start", env={"XDG_RUNTIME_DIR": mine}).returncode == 0
        other = {"XDG_RUNTIME_DIR": theirs}
        st = run_cli(home, "status", "--json", env=other)
        assert st.returncode == 0, st.stderr
        assert json.loads(st.stdout)["socket"].startswith(mine)
        assert run_cli(None, "ls", env={**other, "SESSIOND_HOME": home}).returncode == 0
        stop = run_cli(home, "stop", env=other)
        assert stop.returncode == 0 and "stopped" in stop.stdout, stop
        assert run_cli(home, "status", env={"XDG_RUNTIME_DIR": mine}).returncode == 3
    finally:
        run_cli(home, "stop")
        for d in (base, mine, theirs):
            shutil.rmtree(d, ignore_errors=True)


def test_stop_kills_a_hung_daemon_after_a_bounded_wait(daemon):
    pid = daemon.proc.pid
    os.kill(pid, signal.SIGSTOP)  # hung: neither answers on its socket nor acts on SIGTERM
    try:
        t0 = time.monotonic()
        res = run_cli(daemon.home, "stop", "--timeout", "1")
        took = time.monotonic() - t0
    finally:
        if daemon.proc.poll() is None:
            os.kill(pid, signal.SIGCONT)
    _no_traceback(res)
    assert res.returncode == 0 and "killed" in res.stderr and f"pid {pid}" in res.stderr, res
    assert took < 30
    assert daemon.proc.wait(timeout=10) == -signal.SIGKILL
    # the next start works, and what was acknowledged before is there
    daemon.start()
    assert daemon.client().status()["pid"] == daemon.proc.pid


def test_stop_refuses_a_timeout_that_is_no_wait(daemon):
    """`stop --timeout -1` (or nan) is a mistake, not "kill it now": refused, the daemon left running."""
    for bad in ("-1", "nan", "inf"):
        res = run_cli(daemon.home, "stop", "--timeout", bad, "--json")
        assert res.returncode == 2 and "--timeout" in json.loads(res.stdout)["error"]["message"], res
    assert daemon.proc.poll() is None and daemon.client().status()["pid"] == daemon.proc.pid


def test_a_limit_below_one_is_refused_by_the_cli(daemon):
    """`log --limit 0` printed "no messages" for a session that has some; `ls --limit 0` answered with
    the socket API's "query parameter limit must be between 1 and 1000" (ls itself takes more)."""
    sid = cli_json(daemon.home, "new")["id"]
    run_cli(daemon.home, "add", sid, "--role", "user", "hi", check=True)
    for argv in (["log", sid], ["ls"]):
        for bad in ("0", "-1"):
            res = run_cli(daemon.home, *argv, "--limit", bad, "--json")
            assert res.returncode == 2, res
            assert "--limit" in json.loads(res.stdout)["error"]["message"] and "1 or more" in res.stderr
    assert len(cli_json(daemon.home, "log", sid, "--limit", "1")["messages"]) == 1


def test_daemon_json_prints_json(home):
    """`sessiond daemon --json`: where it listens as one JSON object, and a failure to start as the
    error object, like every command (it printed the text lines, and its errors only to stderr)."""
    os.makedirs(home, mode=0o700)
    proc = popen_cli(
        ["daemon", "--home", home, "--json"],
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        info = json.loads(proc.stdout.readline())
        status = cli_json(home, "status")
        assert (info["socket"], info["device_id"], info["pid"]) == (status["socket"], status["device_id"], proc.pid)
        res = run_cli(home, "daemon", "--json")  # a second daemon on the same home: refused
        assert res.returncode == 2 and "already" in json.loads(res.stdout)["error"]["message"], res
    finally:
        proc.terminate()
        assert proc.wait(15) == 0
        proc.stdout.close()
        proc.stderr.close()
    with open(os.path.join(home, "config.toml"), "w") as f:
        f.write("colour = 1\n")
    res = run_cli(home, "daemon", "--json")
    assert res.returncode == 2 and "colour" in json.loads(res.stdout)["error"]["message"], res
    assert "colour" in res.stderr and "Traceback" not in res.stderr


def test_stop_never_signals_a_process_that_is_not_the_daemon(home):
    os.makedirs(home, mode=0o700)
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        with open(os.path.join(home, "daemon.lock"), "w") as f:
            f.write(f"{bystander.pid}\n")  # a stale lock file whose pid now belongs to someone else
        res = run_cli(home, "stop")
        assert res.returncode == 0 and "no sessiond daemon is running" in res.stdout
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


@pytest.mark.parametrize("line", ["poll_interval = nan", "sync_interval = inf", "push_delay = -inf"])
def test_an_interval_that_is_no_number_of_seconds_is_refused(home, line):
    os.makedirs(home, mode=0o700)
    with open(os.path.join(home, "config.toml"), "w") as f:
        f.write(line + "\n")
    try:
        res = run_cli(home, "start", "--json")
        assert res.returncode == 1 and line.split()[0] in json.loads(res.stdout)["error"]["message"], res
        assert run_cli(home, "status").returncode == 3  # nothing started
    finally:
        run_cli(home, "stop")


def test_unknown_config_key_is_refused_by_name(home):
    os.makedirs(home, mode=0o700)
    with open(os.path.join(home, "config.toml"), "w") as f:
        f.write("delete_expird = true\n")
    res = run_cli(home, "daemon")
    assert res.returncode != 0
    assert "'delete_expird'" in res.stderr and "'delete_expired'" in res.stderr, res.stderr
    _no_traceback(res)
    res = run_cli(home, "start", "--json")
    assert res.returncode == 1 and "delete_expird" in json.loads(res.stdout)["error"]["message"]


@pytest.mark.parametrize(
    "args",
    [
        ["frobnicate"],
        ["new", "--temperature", "hot"],
        ["add"],
        ["add", "x", "--role", "wizard", "t"],
        ["new", "--expires-in", "soon"],
        ["log"],
        ["cleanup", "--older-than", "soon"],
        [],
    ],
)
def test_bad_arguments_exit_2_and_answer_in_json(home, args):
    assert run_cli(home, *args).returncode == 2
    for argv in ([*args, "--json"], ["--json", *args]):
        res = run_cli(home, *argv)
        assert res.returncode == 2, res
        err = json.loads(res.stdout)["error"]
        assert err["code"] == "usage" and err["message"]


def test_share_qr_keeps_standard_output_for_the_code(make_daemon, store_dir):
    url = "file://" + store_dir
    a, b = make_daemon(url).start(), make_daemon(url).start()
    sid = cli_json(a.home, "new", "--id", "qr")["id"]
    res = run_cli(a.home, "share", sid, "--qr", check=True)
    code = res.stdout.strip()
    assert "\n" not in code and code.startswith("sessiond")  # the code alone
    assert "▀" in res.stderr or "█" in res.stderr or "▄" in res.stderr  # the QR, for the eyes
    imp = run_cli(b.home, "import", input=res.stdout)
    assert imp.returncode == 0, imp.stderr
    assert imp.stdout.strip() == sid


def test_control_characters_are_escaped_for_people_and_exact_in_json(daemon):
    evil = "evil\x1b[2J\x07\r\x9bname"
    sid = cli_json(daemon.home, "new", "--name", evil, "--tag", "t\x1bx", "--model", "m\x08")["id"]
    run_cli(daemon.home, "chat", "new", sid, "--name", evil, check=True)
    run_cli(daemon.home, "add", sid, "--role", "user", "line one\nline\x1b]0;title\x07 two", check=True)
    outs = [
        run_cli(daemon.home, *args, check=True).stdout
        for args in (["ls"], ["show", sid], ["chat", "ls", sid], ["log", sid], ["log", sid, "--short"])
    ]
    for out in outs:
        for c in "\x1b\x07\r\x9b\x08":
            assert c not in out, (c, out)
    assert "evil\\x1b[2J\\x07\\r\\x9bname" in outs[0] and "\\x1b" in outs[3] and "\\x1b" in outs[4]
    assert "line one\nline" in outs[3]  # a message's own lines stay lines
    assert cli_json(daemon.home, "show", sid)["name"] == evil
    assert cli_json(daemon.home, "log", sid)["messages"][0]["content"] == "line one\nline\x1b]0;title\x07 two"


def test_key_export_never_makes_a_home(daemon, tmp_path):
    typo = str(tmp_path / "hmoe")
    res = run_cli(typo, "key", "export")
    assert res.returncode == 1 and "no device key" in res.stderr and "--home" in res.stderr
    _no_traceback(res)
    assert not os.path.exists(typo)
    res = run_cli(typo, "key", "export", "--json")
    assert "no device key" in json.loads(res.stdout)["error"]["message"]
    assert len(cli_json(daemon.home, "key", "export")["mnemonic"].split()) == 24


def test_key_export_output_imports_as_it_is(daemon, tmp_path):
    """`sessiond key export > words.txt`, later `sessiond key import < words.txt`: standard output holds
    the 24 words alone (the warning goes to standard error), so the backup restores as written."""
    res = run_cli(daemon.home, "key", "export", check=True)
    assert len(res.stdout.split()) == 24 and "keep it secret" in res.stderr
    fresh = str(tmp_path / "restored")
    res = run_cli(fresh, "key", "import", input=res.stdout)
    assert res.returncode == 0, res.stderr
    assert run_cli(fresh, "key", "export", check=True).stdout == run_cli(daemon.home, "key", "export").stdout


def test_key_import_of_bad_words_changes_nothing(daemon, tmp_path):
    """Words that are no backup (too few, misspelt, none) are refused before anything is written: a mistyped
    --home, or a wrong paste, used to leave a new home (its keys/ and logs/ folders) behind all the same. A
    running daemon's home is refused with the command that stops that daemon, --home included."""
    words = run_cli(daemon.home, "key", "export", check=True).stdout.split()
    fresh = str(tmp_path / "fresh")
    for bad in (" ".join(words[:3]), " ".join(["skatch", *words[1:]]), ""):
        for extra in ([], ["--json"]):
            res = run_cli(fresh, "key", "import", *extra, input=bad)
            assert res.returncode != 0, res
            _no_traceback(res)
            assert not os.path.exists(fresh), os.listdir(fresh)
    res = run_cli(daemon.home, "key", "import", input=" ".join(words))
    assert res.returncode == 1 and f"sessiond stop --home {daemon.home}" in res.stderr, res.stderr


def test_key_import_never_shows_the_words_typed(daemon, tmp_path):
    """Backup words are a secret: a mistyped word is most often one letter off the real one, so an error
    that quotes it ("not in the word list: skatch") all but prints the backup on the terminal, into a
    scrollback or a CI log. The error names the positions instead ("word 5 and word 9"), and a checksum
    failure says so, quoting no word either; in --json too."""
    words = run_cli(daemon.home, "key", "export", check=True).stdout.split()
    fresh = str(tmp_path / "fresh")
    typed = words[:]
    typed[4], typed[8] = "skatchq", "zebrax"
    for extra in ([], ["--json"]):
        res = run_cli(fresh, "key", "import", *extra, input=" ".join(typed))
        assert res.returncode != 0, res
        _no_traceback(res)
        said = res.stdout + res.stderr
        assert "skatchq" not in said and "zebrax" not in said, said
        assert "word 5 and word 9 are not in the BIP-39 English word list" in said, said
        assert not os.path.exists(fresh)
    # five or more: each position named, still no word
    many = [f"{w}q" if i % 4 == 0 else w for i, w in enumerate(words)]
    res = run_cli(fresh, "key", "import", input=" ".join(many))
    assert "words 1, 5, 9, 13, 17 and 21 are not in the BIP-39" in res.stderr, res.stderr
    assert not any(w in res.stderr for w in many if w.endswith("q")), res.stderr
    # every word in the list, in the wrong order: the checksum fails (but for 1 order in 256, another key)
    for i in range(1, 11):
        swapped = words[:]
        swapped[0], swapped[i] = swapped[i], swapped[0]
        res = run_cli(fresh, "key", "import", "--json", input=" ".join(swapped))
        if res.returncode:
            break
        shutil.rmtree(fresh)
    message = json.loads(res.stdout)["error"]["message"]
    # a list word may be an everyday word of the message ("wrong", "order"): none outside the fixed text
    fixed = "the words fail their checksum: each is in the word list, but one is wrong or they are out of order"
    assert message in (fixed, f"key import: {fixed}"), message  # (`key` is a list word too: the whole text)


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_key_import_on_a_terminal_does_not_echo_the_words(daemon, tmp_path):
    """On a terminal the words are read with echo off (getpass), and `key import` takes them from no option:
    argv is in every local user's `ps`."""
    words = run_cli(daemon.home, "key", "export", check=True).stdout.split()
    res = run_cli(None, "key", "import", "--help", check=True)
    assert "--force" in res.stdout and "--words" not in res.stdout and "--mnemonic" not in res.stdout, res.stdout
    fresh = str(tmp_path / "fresh")
    # the prompt is written once echo is off
    code, seen = on_terminal(["key", "import", "--home", fresh], b"backup words", (" ".join(words) + "\n").encode())
    assert code == 0, seen
    assert "device key restored" in seen.decode(errors="replace"), seen
    # what is left once the prompt and the answer's path (a temporary folder whose name may hold a list word,
    # as "fresh" is one) are taken out holds no word of the list; nor does the whole output hold two in a row
    said = seen.decode(errors="replace")
    answer = f"device key restored to {os.path.join(fresh, 'keys', 'device.key')} (there was none)"
    rest = said.replace(answer, "").replace("backup words (24, space-separated):", "")
    assert answer in said and not any(w in rest.split() for w in words), said
    assert not any(f"{a} {b}" in said for a, b in itertools.pairwise(words)), said
    assert run_cli(fresh, "key", "export", check=True).stdout.split() == words


def test_key_export_s_whole_output_imports(daemon, tmp_path):
    """`sessiond key export > words.txt 2>&1` (or a paste of the terminal) keeps the notice above the words,
    and import counted its words too ("a key backup is 24 words; got 39") of a file holding a good backup.
    The notice is a '#' line now, as share's notes are, and import leaves such lines out (and the notice of
    earlier versions, which had no '#')."""
    res = run_cli(daemon.home, "key", "export", check=True)
    words = res.stdout
    for whole in (
        res.stderr + words,
        "Your device key backup (keep it secret; anyone with it can sign as this device):\n" + words,
    ):
        fresh = tmp_path / f"restored-{len(whole)}"
        res = run_cli(str(fresh), "key", "import", input=whole)
        assert res.returncode == 0, res.stderr
        assert run_cli(str(fresh), "key", "export", check=True).stdout == words


def test_text_that_is_not_utf8_is_a_clear_error(daemon):
    sid = cli_json(daemon.home, "new")["id"]
    for argv in ([b"add", sid, "--role", "user", b"\xff"], [b"new", b"--name", b"caf\xe9"]):
        res = run_cli(daemon.home, *argv)
        assert res.returncode == 2 and "not UTF-8" in res.stderr, res
        _no_traceback(res)
        res = run_cli(daemon.home, *argv, "--json")
        assert res.returncode == 2 and "not UTF-8" in json.loads(res.stdout)["error"]["message"]
    for argv in (
        ["add", sid, "--role", "user", "-"],
        ["new", "--system", "-"],
        ["import-file", "-", "--format", "json"],
        ["import"],
        ["share", sid, "--passphrase-file", "-"],
        ["verify-proof", sid, "-"],
    ):
        res = run_cli(daemon.home, *argv, input=b"caf\xe9\xff\n")
        assert res.returncode == 2 and "UTF-8" in res.stderr, (argv, res)
        _no_traceback(res)
    assert cli_json(daemon.home, "log", sid)["messages"] == []


def test_export_to_a_folder_or_a_missing_folder_is_a_clear_error(daemon, tmp_path):
    sid = cli_json(daemon.home, "new", "--name", "kept private")["id"]
    out = tmp_path / "out"
    out.mkdir()
    for fmt in ("json", "markdown"):
        for target, says in ((out, "is a folder"), (out / "missing" / "x.json", "no folder")):
            res = run_cli(daemon.home, "export", sid, "--format", fmt, "-o", str(target), "--json")
            assert res.returncode == 2, res
            _no_traceback(res)
            err = json.loads(res.stdout)["error"]
            assert err["code"] == "usage" and says in err["message"] and str(target) in err["message"], err
    # no temporary copy of the session left behind, beside the folder or in it
    assert [n for n in os.listdir(tmp_path) + os.listdir(out) if n.startswith(".tmp-")] == []
    res = run_cli(daemon.home, "export", sid, "-o", str(out / "s.json"), "--json", check=True)
    assert json.loads(res.stdout) == {"written": str(out / "s.json")}


def test_export_refuses_an_existing_file_unless_forced(daemon, tmp_path):
    """`export -o FILE` replaced FILE silently when it existed: an earlier export, or any file the user named by
    mistake (another session's export, a copy of sessions.db kept aside). An existing file is refused now,
    nothing written, the message naming --force, which replaces it; `-o -` is standard output."""
    sid = cli_json(daemon.home, "new", "--name", "twice")["id"]
    kept = tmp_path / "sessions.db"
    kept.write_bytes(b"a backup the user keeps")
    for fmt in ("json", "markdown"):
        res = run_cli(daemon.home, "export", sid, "--format", fmt, "-o", str(kept), "--json")
        assert res.returncode == 2, res
        _no_traceback(res)
        err = json.loads(res.stdout)["error"]
        assert err["code"] == "usage" and str(kept) in err["message"] and "exists" in err["message"], err
        assert "--force" in err["message"], err
    assert kept.read_bytes() == b"a backup the user keeps"
    assert [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")] == []
    res = run_cli(daemon.home, "export", sid, "-o", str(kept), "--force", "--json", check=True)
    assert json.loads(res.stdout) == {"written": str(kept)}
    assert json.loads(kept.read_bytes())["session"]["name"] == "twice"
    assert not os.path.exists("-")  # (the CLI's working folder is the suite's)
    res = run_cli(daemon.home, "export", sid, "-o", "-", check=True)
    assert json.loads(res.stdout)["session"]["name"] == "twice" and not os.path.exists("-")


def test_export_never_replaces_a_file_made_while_it_ran(daemon, tmp_path):
    """`export -o FILE` checked that FILE did not exist, then renamed its file over FILE: a file made in between
    (while the export was read, or written out) was replaced, --force or not. The last step now puts the export
    in place only where nothing is (a hard link of its temporary file, which never replaces): FILE made at the
    last moment (the CLI held there by a test hook) is kept, the export refused as for a file there before,
    no temporary file left. (--force replaces a file, as asked: test_export_refuses_an_existing_file_unless_forced.)"""
    from conftest import popen_cli
    from waiting import wait_for

    sid = cli_json(daemon.home, "new", "--name", "raced")["id"]
    target = tmp_path / "export.json"
    for fmt in ("json", "markdown"):
        flag = tmp_path / f"held-{fmt}"
        env = {**os.environ, "SESSIOND_TEST_PAUSE": f"create.export.json:{flag}"}
        argv = ["export", sid, "--format", fmt, "-o", str(target), "--json", "--home", daemon.home]
        proc = popen_cli(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            wait_for(lambda: flag.exists() or proc.poll() is not None, timeout=30, what="the export's last step")
            assert proc.poll() is None, "the export ended without reaching its last step"
            target.write_bytes(b"made meanwhile")  # by another program, after the export's check
            flag.unlink()
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 2 and b"Traceback" not in err, (out, err)
        message = json.loads(out)["error"]["message"]
        assert str(target) in message and "exists" in message and "--force" in message, message
        assert target.read_bytes() == b"made meanwhile"  # kept
        assert sorted(os.listdir(tmp_path)) == ["export.json"]  # no temporary file left
        target.unlink()
    # held and let go with nothing made meanwhile: written whole
    flag = tmp_path / "held"
    env = {**os.environ, "SESSIOND_TEST_PAUSE": f"create.export.json:{flag}"}
    proc = popen_cli(["export", sid, "-o", str(target), "--home", daemon.home], env=env, stdout=subprocess.PIPE)
    try:
        wait_for(lambda: flag.exists() or proc.poll() is not None, timeout=30, what="the export's last step")
        flag.unlink()
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and json.loads(target.read_bytes())["session"]["name"] == "raced"
    assert oct(os.stat(target).st_mode & 0o777) == "0o600" and sorted(os.listdir(tmp_path)) == ["export.json"]


def test_an_export_is_written_as_a_new_file_where_hard_links_are_refused(tmp_path):
    """create_new's way on a file system without hard links (FAT, some network shares): the file made with
    O_EXCL, which never replaces either: written whole, or refused with the file there kept."""
    from sessiond.storage.fsutil import _create_excl

    path = str(tmp_path / "out.json")
    _create_excl(path, [b"one ", b"two"], 0o600)
    assert open(path, "rb").read() == b"one two" and os.stat(path).st_mode & 0o777 == 0o600
    with pytest.raises(FileExistsError):
        _create_excl(path, b"other", 0o600)
    assert open(path, "rb").read() == b"one two"


def test_export_never_writes_over_the_daemon_s_own_files(daemon):
    """`export -o` into the daemon's home replaced what it named: `-o HOME/sessions.db` put the JSON in place
    of the database (the running daemon went on with the old file, and the next start refused the "damaged"
    database: every session here lost), `-o HOME/keys/device.key` the device key. A path in the home is refused
    now, nothing written."""
    sid = cli_json(daemon.home, "new", "--name", "precious")["id"]
    db = os.path.join(daemon.home, "sessions.db")
    key = os.path.join(daemon.home, "keys", "device.key")
    before = {p: open(p, "rb").read() for p in (db, key)}
    for target in (db, key, os.path.join(daemon.home, "keys", "new.json"), os.path.join(daemon.home, "x.md")):
        res = run_cli(daemon.home, "export", sid, "-o", target, "--json")
        assert res.returncode == 2, res
        err = json.loads(res.stdout)["error"]
        assert err["code"] == "usage" and "the daemon's home" in err["message"], err
        assert not os.path.exists(target) or target in before
    assert {p: open(p, "rb").read() for p in (db, key)} == before
    assert run_cli(daemon.home, "stop").returncode == 0
    daemon.start()
    assert cli_json(daemon.home, "show", sid)["name"] == "precious"


def test_an_empty_home_is_refused_not_read_as_the_default(daemon):
    """`--home "$H"` with H unset must not act on the default home (here $SESSIOND_HOME's, a live daemon)."""
    sid = cli_json(daemon.home, "new")["id"]
    env = {"SESSIOND_HOME": daemon.home}
    for args in (["ls"], ["rm", sid], ["stop"], ["key", "export"]):
        res = run_cli("", *args, "--json", env=env)
        assert res.returncode == 2, (args, res)
        _no_traceback(res)
        err = json.loads(res.stdout)["error"]
        assert err["code"] == "usage" and "--home is empty" in err["message"], err
    assert cli_json(daemon.home, "show", sid)["id"] == sid


def test_a_daemon_that_cannot_start_answers_in_json(daemon, tmp_path):
    res = run_cli(daemon.home, "daemon", "--json")  # a daemon runs there already
    assert res.returncode == 2, res
    assert "already running" in json.loads(res.stdout)["error"]["message"] and "already running" in res.stderr
    res = run_cli(str(tmp_path / "h"), "daemon", "--store", "s3://bucket", "--json")
    assert res.returncode == 2 and "unsupported store URL" in json.loads(res.stdout)["error"]["message"], res
    _no_traceback(res)


def test_a_relay_that_cannot_serve_answers_in_json(tmp_path):
    data = str(tmp_path / "relay")
    for args, says in (
        (["--listen", "nonsense"], "is not HOST:PORT"),
        (["--listen", "127.0.0.1:\u00b2"], "is not HOST:PORT"),  # (str.isdigit takes '²', int() does not)
        # (a port past 65535 was told only "is not HOST:PORT", as if its form were wrong, not its number)
        (["--listen", "127.0.0.1:99999"], "port 99999 is past 65535, the highest there is"),
        (["--listen", "127.0.0.1:0", "--cert", str(tmp_path / "c.pem")], "--cert and --key go together"),
    ):
        res = run_cli(None, "serve", "--data", data, *args, "--json")
        assert res.returncode == 2 and says in json.loads(res.stdout)["error"]["message"], res
        _no_traceback(res)


def test_ctrl_c_is_an_error_in_json_too(home, monkeypatch, capsys):
    """Ctrl-C ends a command with exit code 130 and, with --json, the JSON error a script reads."""
    import sys as _sys

    from sessiond.cli.commands import ask
    from sessiond.cli.main import main

    class Keyboard:  # standard input at which the user pressed Ctrl-C
        def isatty(self) -> bool:
            return False

        @property
        def buffer(self):
            raise KeyboardInterrupt

    class Answer:  # a streamed answer the user stops
        closed = False

        def __iter__(self):
            yield "partial"
            raise KeyboardInterrupt

        def close(self) -> None:
            Answer.closed = True

    class Fake:
        def complete_stream(self, *a, **kw) -> Answer:
            return Answer()

        def asked(self, sid: str, key: str) -> dict:  # what the daemon kept of it (GET .../complete?key=)
            return {"key": key, "question": None, "answer": None}

    monkeypatch.setattr(_sys, "stdin", Keyboard())
    monkeypatch.setattr(ask, "client", lambda args, **kw: Fake())
    for argv in (["import"], ["ask", "s1", "hello"]):
        capsys.readouterr()
        assert main([*argv, "--home", home, "--json"]) == 130
        out, err = capsys.readouterr()
        assert json.loads(out)["error"]["code"] == "interrupted", (argv, out)
        assert "sessiond: " in err
    assert Answer.closed  # the generation stopped


def test_start_beside_a_hung_daemon_says_how_to_recover(daemon):
    os.kill(daemon.proc.pid, signal.SIGSTOP)  # hung: it holds the home and its socket, and answers nothing
    try:
        res = run_cli(daemon.home, "start", "--json")
    finally:
        os.kill(daemon.proc.pid, signal.SIGCONT)
    assert res.returncode == 3, res  # as no daemon answering: a script restarts it (test_daemon_not_answering)
    message = json.loads(res.stdout)["error"]["message"]
    assert f"pid {daemon.proc.pid}" in message and "does not answer" in message and "sessiond stop" in message
    _no_traceback(res)


def test_status_beside_a_hung_daemon_says_so_in_seconds(daemon):
    # it waited the client's 300 s for a daemon that holds the socket and answers nothing
    os.kill(daemon.proc.pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        res = run_cli(daemon.home, "status", "--timeout", "1", "--json")
        took = time.monotonic() - t0
    finally:
        os.kill(daemon.proc.pid, signal.SIGCONT)
    assert res.returncode == 3 and took < 60, (res, took)
    message = json.loads(res.stdout)["error"]["message"]
    assert f"pid {daemon.proc.pid}" in message and "within 1 s" in message
    # the way out names this home: a bare `sessiond stop` stopped the default home's daemon, not the stuck one
    assert f"`sessiond stop --home {daemon.home}`" in message, message
    _no_traceback(res)
    assert cli_json(daemon.home, "status")["pid"] == daemon.proc.pid  # and answers again once it runs
    for bad in ("0", "-1"):  # one rule, said once: 0 was refused as "must be more than 0" after -1 was
        res = run_cli(daemon.home, "status", "--timeout", bad)  # told "0 or more"
        assert res.returncode == 2 and "more than 0" in res.stderr and "0 or more" not in res.stderr, res.stderr


def test_a_group_without_its_action_says_which_help_to_read(home):
    for group in ("chat", "key"):
        res = run_cli(home, group, "--json")
        assert res.returncode == 2 and f"sessiond {group} --help" in json.loads(res.stdout)["error"]["message"]
        res = run_cli(home, group)
        assert res.returncode == 2 and f"sessiond {group} --help" in res.stderr, res.stderr


def test_no_daemon_for_another_home_says_to_start_that_one(tmp_path):
    h = str(tmp_path / "my home")
    res = run_cli(h, "ls", "--json", env={"SESSIOND_HOME": ""})
    assert res.returncode == 3
    assert f"sessiond start --home '{h}'" in json.loads(res.stdout)["error"]["message"], res.stdout
    res = run_cli(None, "ls", "--json", env={"SESSIOND_HOME": h})  # the default home: no --home to give
    assert "start one with `sessiond start` " in json.loads(res.stdout)["error"]["message"], res.stdout


def test_import_reads_the_code_file_dash_as_standard_input(daemon):
    res = run_cli(daemon.home, "import", "--code-file", "-", "--json", input="sessiond1notacode\n")
    assert res.returncode == 1, res  # the code was read, and the daemon judged it
    assert json.loads(res.stdout)["error"]["message"].startswith("share code is truncated"), res.stdout


def test_import_takes_share_s_whole_output_comments_and_all(daemon, tmp_path):
    """`sessiond share ID > code.txt 2>&1` (or a paste of the terminal) keeps share's notes, each a line
    starting with '#', above the code; import read them as part of the code and said "not a sessiond share
    code (it should start with 'sessiond1')". The notes are skipped now, as their '#' says they may be."""
    sid = cli_json(daemon.home, "new")["id"]
    res = run_cli(daemon.home, "share", sid, check=True)
    whole = tmp_path / "code.txt"
    whole.write_text(res.stderr + res.stdout)
    assert whole.read_text().startswith("# ")
    res = run_cli(daemon.home, "import", "--code-file", str(whole), "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["session"] == sid, res
    res = run_cli(daemon.home, "import", "--json", input=whole.read_text())
    assert res.returncode == 0 and json.loads(res.stdout)["session"] == sid, res


def test_values_refused_by_the_daemon_are_named_as_the_options_typed(daemon):
    """`add --tokens -1`, `compact --target-tokens -1` and an empty search QUERY were refused in the API's
    terms ("tokens must be ...", "target_tokens ...", "query parameter q ...") with exit 1; like every other
    option the daemon refuses, each now names what the user typed, as a usage error (exit 2), and changes
    nothing."""
    sid = cli_json(daemon.home, "new")["id"]
    cases = [
        (["add", sid, "--role", "user", "--tokens", "-1", "hi"], "--tokens must be between 0 and"),
        (["compact", sid, "--target-tokens", "-1"], "--target-tokens must be between 0 and"),
        (["search", ""], "give a QUERY"),
        (["search", "  "], "give a QUERY"),
    ]
    for args, said in cases:
        res = run_cli(daemon.home, *args)
        assert res.returncode == 2 and said in res.stderr, (args, res.stderr)
        res = run_cli(daemon.home, *args, "--json")
        err = json.loads(res.stdout)["error"]
        assert res.returncode == 2 and err["code"] == "usage" and said in err["message"], (args, err)
    assert cli_json(daemon.home, "log", sid)["messages"] == []


def test_shares_is_a_table_with_its_columns_lined_up(daemon):
    """`sessiond shares` printed each code's fields one after another with no header, so rows of sessions
    whose ids differ in length did not line up; it is a table like `ls`, each column under its heading."""
    short = cli_json(daemon.home, "new", "--id", "s2")["id"]
    long_ = cli_json(daemon.home, "new")["id"]
    for sid in (long_, short):
        run_cli(daemon.home, "share", sid, check=True)
    lines = run_cli(daemon.home, "shares", check=True).stdout.splitlines()
    assert len(lines) == 3 and lines[0].split()[:3] == ["#", "SESSION", "ACCESS"], lines
    column = lines[0].index("ACCESS")
    assert all(line[column:].startswith("read-only") for line in lines[1:]), lines


def test_show_says_what_new_was_given(daemon):
    """`sessiond show` left out a session's quota, context budget, idle timeout and checkpoint interval, its
    initial messages, where it was copied from and whether this device may write it: `new --token-quota 500`
    could not be seen anywhere in it. It shows them now."""
    sid = cli_json(
        daemon.home,
        "new",
        "--token-quota",
        "500",
        "--idle-timeout",
        "1h",
        "--initial",
        '[{"role": "user", "content": "hi"}]',
    )["id"]
    text = run_cli(daemon.home, "show", sid, check=True).stdout
    assert '"token_quota": 500' in text and '"idle_timeout": 3600' in text, text
    assert "initial:       1 message(s)" in text and "access:        owner" in text, text
    cli_json(daemon.home, "add", sid, "--role", "user", "x")
    at = cli_json(daemon.home, "log", sid)["messages"][0]["id"]
    fork = cli_json(daemon.home, "fork", sid, "--at", at)["id"]
    text = run_cli(daemon.home, "show", fork, check=True).stdout
    assert f"copied from:   fork of {sid} at {at}" in text, text


def test_a_second_start_names_the_home_in_the_commands_it_gives(daemon, tmp_path):
    """Beside a running daemon, `start --store OTHER` and `daemon` said `sessiond stop` (and `sessiond
    status`): run as given for a home other than the default, those act on the default home's daemon."""
    other = "file://" + str(tmp_path / "other-store")
    for args in (["start", "--store", other], ["daemon"]):
        res = run_cli(daemon.home, *args)
        assert res.returncode != 0 and f"sessiond stop --home {daemon.home}" in res.stderr, (args, res.stderr)
    assert daemon.client().status()["pid"] == daemon.proc.pid


def test_add_refuses_an_empty_message(daemon):
    """`sessiond add ID --role user "$TEXT"` with TEXT unset, or an empty pipe into `add ... -`, recorded an
    empty message, which no command can take out of the session's history again (and which syncs to every
    device it is shared with); it is a usage error now and the session is unchanged."""
    sid = cli_json(daemon.home, "new")["id"]
    for text, stdin in (("", None), (" \n ", None), ("-", ""), ("-", "\n")):
        for extra in ([], ["--json"]):
            res = run_cli(daemon.home, "add", sid, "--role", "user", text, *extra, input=stdin)
            assert res.returncode == 2 and "the message is empty" in res.stderr, (text, stdin, res.stderr)
    assert cli_json(daemon.home, "log", sid)["messages"] == []


def test_version_is_one_option_away(home):
    """`sessiond --version`, the first thing many try, was refused as an unrecognized argument (exit 2)."""
    from importlib.metadata import version

    res = run_cli(None, "--version")
    assert res.returncode == 0 and res.stdout.splitlines()[0] == f"sessiond {version('sessiond')}", res
    # with --json (before it or after), JSON as every command gives: it printed the text line (its other
    # fields, the schema's and the formats' versions: test_version.py)
    for argv in (["--version", "--json"], ["--json", "--version"]):
        res = run_cli(None, *argv)
        assert res.returncode == 0 and json.loads(res.stdout)["version"] == version("sessiond"), (argv, res)


def test_log_help_says_which_messages_limit_keeps(home):
    """`log --limit N` prints the first N messages, oldest first; its help said nothing (nor of --chat)."""
    out = run_cli(None, "log", "--help").stdout
    assert "the first N messages, oldest first" in " ".join(out.split()), out
    assert "chat id or name" in " ".join(out.split()), out


def test_set_help_says_tag_and_metadata_replace_what_the_session_has(daemon):
    """`set ID --tag c` on a session tagged a, b leaves it tagged c alone (and --metadata replaces the whole
    object): `set --help` said nothing of it, so adding a tag that way silently dropped the others."""
    sid = cli_json(daemon.home, "new", "--tag", "a", "--tag", "b")["id"]
    assert cli_json(daemon.home, "set", sid, "--tag", "c")["tags"] == ["c"]
    out = " ".join(run_cli(None, "set", "--help").stdout.split())
    assert "--tag TAG the session's tags, replacing all it has" in out, out
    assert "--metadata METADATA a JSON object that replaces the session's metadata whole" in out, out
    assert "--system SYSTEM system prompt ('-' reads it from standard input)" in out, out


def test_json_options_nested_too_deeply_are_a_clear_error(daemon):
    """`new --metadata` (or --initial) holding JSON nested deeper than Python's parser goes ended in a
    RecursionError traceback, and with --json no JSON answer; it is a usage error naming the option now,
    and no session is made."""
    deep = "[" * 50_000 + "]" * 50_000
    for option in ("--metadata", "--initial"):
        res = run_cli(daemon.home, "new", option, deep)
        _no_traceback(res)
        assert res.returncode == 2 and f"{option} is nested too deeply" in res.stderr, res.stderr[-500:]
        res = run_cli(daemon.home, "new", option, deep, "--json")
        assert res.returncode == 2 and json.loads(res.stdout)["error"]["code"] == "usage", res.stdout[-500:]
    assert cli_json(daemon.home, "ls")["sessions"] == []


def test_a_value_inside_a_json_option_is_named_under_the_option(daemon):
    """A value the daemon refuses inside --metadata (nested past its limit, a lone surrogate escape) was named
    as the API field ("metadata.a[0]... is nested too deeply"), with exit 1; it is named under the option
    typed, as --initial's are, and exits 2."""
    deep = '{"a": ' + "[" * 900 + "]" * 900 + "}"
    for args in (["new", "--metadata", deep], ["new", "--metadata", '{"k": "\\ud800"}']):
        res = run_cli(daemon.home, *args)
        assert res.returncode == 2 and res.stderr.startswith("sessiond: --metadata."), res.stderr[:300]
    assert cli_json(daemon.home, "ls")["sessions"] == []


def test_ls_says_when_there_are_more_sessions_than_it_shows(daemon):
    """`ls` stops at --limit (1000 by default) and said nothing of the sessions past it: a device with more
    looked as if it had only those. It says so now (standard error; --json: `more`), and nothing when all
    are shown."""
    for i in range(3):
        cli_json(daemon.home, "new", "--name", f"s{i}")
    res = run_cli(daemon.home, "ls", "--limit", "2", check=True)
    assert len(res.stdout.splitlines()) == 3 and "more sessions than these 2" in res.stderr, res
    assert "--limit" in res.stderr
    # the hint runs as printed (README, The CLI): the whole command, with the home in use
    assert f"`sessiond ls --home {daemon.home} --limit N`" in res.stderr, res.stderr
    out = cli_json(daemon.home, "ls", "--limit", "2")
    assert len(out["sessions"]) == 2 and out["more"] is True, out
    res = run_cli(daemon.home, "ls", "--limit", "3", check=True)
    assert res.stderr == "" and cli_json(daemon.home, "ls", "--limit", "3")["more"] is False


def test_log_refuses_chat_and_all_together(daemon):
    """`log ID --all --chat C` printed every chat's messages, --chat dropped without a word; the two
    contradict each other and are refused together."""
    sid = cli_json(daemon.home, "new")["id"]
    for extra in ([], ["--json"]):
        res = run_cli(daemon.home, "log", sid, "--all", "--chat", "main", *extra)
        assert res.returncode == 2 and "--chat" in res.stderr and "--all" in res.stderr, res.stderr


def test_an_empty_prompt_on_standard_input_is_refused_and_changes_nothing(daemon):
    # `set ID --system - < file` with the file empty (or a pipe whose writer failed) replaced the session's
    # prompt with nothing; like add and ask, an empty standard input is now refused, and --unset clears
    sid = cli_json(daemon.home, "new", "--system", "Be kind.")["id"]
    chat = cli_json(daemon.home, "chat", "new", sid, "--name", "side", "--system", "Be brief.")["id"]
    for args in (["set", sid], ["chat", "set", sid, chat], ["new"], ["chat", "new", sid]):
        for stdin in ("", "\n", "  \n"):
            res = run_cli(daemon.home, *args, "--system", "-", input=stdin)
            assert res.returncode == 2, (args, res.stdout)
            assert "standard input is empty" in res.stderr and "--unset system" in res.stderr
    assert cli_json(daemon.home, "show", sid)["system_prompt"] == "Be kind."
    assert [c["system_prompt"] for c in cli_json(daemon.home, "chat", "ls", sid)["chats"] if c["id"] == chat] == [
        "Be brief."
    ]
    assert len(cli_json(daemon.home, "ls")["sessions"]) == 1
    run_cli(daemon.home, "set", sid, "--unset", "system", check=True)  # clearing on purpose still works
    assert not cli_json(daemon.home, "show", sid)["system_prompt"]


BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c\u200b\ufeff\u2028\U000e0041"


def test_bidirectional_and_invisible_characters_are_escaped_for_people_and_exact_in_json(daemon):
    """A name or message (one synced from another device, too) holding U+202E RIGHT-TO-LEFT OVERRIDE or an
    isolate showed reordered on the terminal (`evil\u202egpj.exe` shows as "evilexe.jpg"), and zero-width
    characters hid text: now escaped in every human output, as control characters are; --json exact."""
    evil = "invoice\u202egpj.exe"
    sid = cli_json(daemon.home, "new", "--name", evil, "--tag", "t\u2066x", "--model", "m\u200b")["id"]
    run_cli(daemon.home, "chat", "new", sid, "--name", "side" + BIDI, check=True)
    run_cli(daemon.home, "add", sid, "--role", "user", "line one\nfindme" + BIDI + " two", check=True)
    outs = [
        run_cli(daemon.home, *args, check=True).stdout
        for args in (
            ["ls"],
            ["show", sid],
            ["chat", "ls", sid],
            ["log", sid],
            ["log", sid, "--short"],
            ["log", sid, "--all"],
            ["search", "findme"],
        )
    ]
    for out in outs:
        for c in BIDI:
            assert c not in out, (hex(ord(c)), out)
    assert "invoice\\u202egpj.exe" in outs[0] and "\\u2066" in outs[1] and "\\u202e" in outs[3]
    assert "line one\nfindme" in outs[3]  # a message's own lines stay lines
    assert cli_json(daemon.home, "show", sid)["name"] == evil
    assert cli_json(daemon.home, "log", sid)["messages"][0]["content"] == "line one\nfindme" + BIDI + " two"


def test_safe_escapes_every_invisible_format_character_but_the_joiners():
    import unicodedata

    from sessiond.cli.output import safe

    invisible = [chr(c) for c in range(0x110000) if unicodedata.category(chr(c)) in ("Cf", "Zl", "Zp")]
    kept = [c for c in invisible if safe(c) == c]
    assert kept == ["\u200c", "\u200d"]  # zero-width (non-)joiner: Persian, Indic scripts, emoji sequences
    assert safe("👨\u200d👩\u200d👧") == "👨\u200d👩\u200d👧" and safe("é 中文 עברית") == "é 中文 עברית"


def test_the_import_prompt_takes_a_paste_of_share_s_notes_and_code(daemon):
    """At `sessiond import`'s prompt on a terminal, a paste of what `share` showed (its '#' notes, its QR
    code, then the code) was read as its first line alone, a note, and the import failed ("not a sessiond share code");
    the prompt now skips the notes and blank lines, as a code file's are, and reads on to the code."""
    import pty

    sid = cli_json(daemon.home, "new")["id"]
    shared = run_cli(daemon.home, "share", sid, "--qr", check=True)  # its QR code between notes and code
    paste = ("\n" + shared.stderr + shared.stdout).encode()
    assert paste.count(b"\n# ") >= 2
    master, slave = pty.openpty()
    proc = popen_cli(
        ["import", "--json", "--home", daemon.home],
        env=dict(os.environ),
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        new_session=True,  # no controlling terminal but this one on standard input
    )
    os.close(slave)
    try:
        prompt, deadline = b"", time.monotonic() + 30
        while b"share code" not in prompt and time.monotonic() < deadline:  # pasted once it asks
            if select.select([proc.stderr], [], [], 1)[0]:
                prompt += os.read(proc.stderr.fileno(), 4096)
        assert b"share code" in prompt, prompt
        os.write(master, paste)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    assert proc.returncode == 0, err
    assert json.loads(out)["session"] == sid


def test_log_last_prints_the_latest_messages_oldest_first(daemon):
    """`log --limit N` keeps the oldest N: the latest ones (what a person looking at a long session wants)
    needed the whole log read; `log --last N` prints the latest N, read from the end (GET ...?last=true)."""
    c = daemon.client()
    sid = c.create_session()["id"]
    c.append_many(sid, [{"role": "user", "content": f"m{i}"} for i in range(10_050)])
    data = cli_json(daemon.home, "log", sid, "--last", "3")
    assert [m["content"] for m in data["messages"]] == ["m10047", "m10048", "m10049"]
    out = run_cli(daemon.home, "log", sid, "--last", "2", "--short", check=True).stdout
    assert out.splitlines() == ["     user: m10048", "     user: m10049"]
    many = cli_json(daemon.home, "log", sid, "--last", "10030")["messages"]  # more than one page of 10,000
    assert [m["content"] for m in many] == [f"m{i}" for i in range(20, 10_050)]
    assert len(cli_json(daemon.home, "log", sid, "--last", "99999")["messages"]) == 10_050
    res = run_cli(daemon.home, "log", sid, "--last", "2", "--limit", "2")
    assert res.returncode == 2 and "not allowed with" in res.stderr, res.stderr
    assert "latest" in run_cli(daemon.home, "log", "--help", check=True).stdout


def test_commands_in_messages_name_the_home_they_are_for(daemon):
    """A daemon of --home H answered "no session 'x' on this device (see `sessiond ls`)", "resume it first
    (`sessiond resume S`)", "go on in a clone: `sessiond clone S`": run as printed, those act on the
    default home's daemon. With a home other than the default, the CLI now gives each command with
    --home H (as doctor's fixes have it); for the default home (here: $SESSIOND_HOME) they stay short."""
    h = shlex.quote(daemon.home)
    res = run_cli(daemon.home, "show", "nope")
    assert res.returncode == 1 and f"`sessiond ls --home {h}`" in res.stderr, res.stderr
    res = run_cli(daemon.home, "show", "nope", "--json")
    assert f"`sessiond ls --home {h}`" in json.loads(res.stdout)["error"]["message"]
    sid = cli_json(daemon.home, "new")["id"]
    run_cli(daemon.home, "pause", sid, check=True)
    res = run_cli(daemon.home, "add", sid, "--role", "user", "hi")
    assert f"`sessiond resume --home {h} {sid}`" in res.stderr, res.stderr
    run_cli(daemon.home, "end", sid, check=True)
    res = run_cli(daemon.home, "add", sid, "--role", "user", "hi")
    assert f"`sessiond clone --home {h} {sid}`" in res.stderr, res.stderr
    res = run_cli(daemon.home, "chat", "switch", sid, "nochat")
    assert f"`sessiond chat ls --home {h} {sid}`" in res.stderr, res.stderr
    res = run_cli(None, "show", "nope", env={"SESSIOND_HOME": daemon.home})
    assert "(see `sessiond ls`)" in res.stderr, res.stderr
    path = os.path.join(daemon.home, "..", "conversations.json")  # the CLI's own notes too

    def said(n: int) -> None:  # a ChatGPT export of conversation "c" with its first n messages
        nodes = {"r": {"id": "r", "message": None, "parent": None, "children": ["m0"]}}
        for i in range(n):
            role = "user" if i % 2 == 0 else "assistant"
            msg = {"id": f"m{i}", "author": {"role": role}, "content": {"content_type": "text", "parts": [f"m{i}"]}}
            kids = [f"m{i + 1}"] if i + 1 < n else []
            nodes[f"m{i}"] = {"id": f"m{i}", "message": msg, "parent": "r" if i == 0 else f"m{i - 1}", "children": kids}
        with open(path, "w") as f:
            json.dump([{"id": "c", "title": "t", "current_node": f"m{n - 1}", "mapping": nodes}], f)

    said(1)
    imported = cli_json(daemon.home, "import-file", path, "--format", "chatgpt")["sessions"][0]["id"]
    run_cli(daemon.home, "pause", imported, check=True)
    said(2)  # continued in the app, while the session here is paused: the note says how to take it
    res = run_cli(daemon.home, "import-file", path, "--format", "chatgpt")
    assert res.returncode == 1 and f"`sessiond resume --home {h} {imported}`" in res.stderr, res.stderr
    shared = cli_json(daemon.home, "new")["id"]  # and the hints of outputs that are no error
    run_cli(daemon.home, "share", shared, check=True)
    res = run_cli(daemon.home, "rekey", shared, check=True)
    assert f"Make new codes with `sessiond share --home {h} {shared}`" in res.stdout, res.stdout


def test_daemon_texts_shown_outside_errors_name_the_home_they_are_for(make_daemon):
    """What the daemon writes and the CLI shows outside an error (doctor's findings, verify's problems, a
    session's sync error in status, show and sync) quoted commands without --home: under a home other
    than the default, the user pasted `sessiond sync --wait` as printed and it acted on the default
    home's daemon. Now each such command carries --home H; --json gives the daemon's words as they are."""
    d = make_daemon("ipfs+http://127.0.0.1:9")  # a store that never answers: nothing is pushed
    h = shlex.quote(d.home)
    os.makedirs(d.home, mode=0o700)
    text = run_cli(d.home, "doctor").stdout  # no daemon yet: the home's files, checked by the CLI
    assert f"restore a backup with `sessiond key import --home {h}` before that" in text, text
    d.start()
    sid = cli_json(d.home, "new")["id"]
    run_cli(d.home, "add", sid, "--role", "user", "hi", check=True)
    res = run_cli(d.home, "verify", sid)
    assert res.returncode == 1 and f"run `sessiond sync --home {h} --wait` and verify again" in res.stdout, res
    rep = json.loads(run_cli(d.home, "verify", sid, "--json").stdout)
    assert "not pushed yet: run `sessiond sync --wait` and verify again" in rep["sessions"][0]["problems"], rep
