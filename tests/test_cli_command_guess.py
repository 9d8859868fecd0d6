"""A command name mistyped, or another tool's word for one (`sessiond list`, `sessiond delete`), was refused with
argparse's "invalid choice" and the list of all 45 commands, leaving the user to find the one meant; the options had
their "did you mean" already. The refusal names the likely command (exit 2, nothing done; `--json` alike)."""

from __future__ import annotations

import json

import pytest

from conftest import run_cli


@pytest.mark.parametrize(
    "typed, meant",
    [("list", "ls"), ("delete", "rm"), ("remove", "rm"), ("create", "new"), ("satus", "status"), ("shrae", "share")],
)
def test_a_mistyped_command_is_refused_naming_the_likely_one(tmp_path, typed, meant):
    res = run_cli(str(tmp_path / "home"), typed)
    assert res.returncode == 2, res
    assert f"did you mean `sessiond {meant}`?" in res.stderr, res.stderr
    # the guess is the message, not the end of a line listing all 45 commands (the guess lost at its far end)
    said = res.stderr.splitlines()[-1]
    assert "choose from" not in said and len(said) < 200 and f"'{typed}'" in said, said


def test_a_word_like_no_command_names_none_and_json_says_it_too(tmp_path):
    res = run_cli(str(tmp_path / "home"), "zzzz")
    assert res.returncode == 2 and "did you mean" not in res.stderr and "invalid choice" in res.stderr, res
    res = run_cli(str(tmp_path / "home"), "list", "--json")
    assert res.returncode == 2 and "`sessiond ls`" in json.loads(res.stdout)["error"]["message"], res


@pytest.mark.parametrize("typed, meant", [("list", "ls"), ("lst", "ls"), ("swich", "switch")])
def test_a_mistyped_action_of_a_group_names_the_groups_own(tmp_path, typed, meant):
    # was: `sessiond chat list` said "did you mean `sessiond ls`?", another command (the sessions, not the chats)
    res = run_cli(str(tmp_path / "home"), "chat", typed)
    assert res.returncode == 2, res
    assert f"did you mean `sessiond chat {meant}`?" in res.stderr, res.stderr
    said = res.stderr.splitlines()[-1]
    assert "choose from" not in said and f"'{typed}'" in said, said


def test_two_letters_swapped_name_the_command_they_spell():
    """Two neighbouring letters swapped is the commonest slip, and for the two commands typed most it named another:
    `sessiond strat` (start) and `sessiond stauts` or `statsu` (status) said "did you mean `sessiond stats`?", a
    letter off from each by difflib's measure. A command the typed word spells with two neighbours swapped is named
    before any other. (In-process: the parser's refusal alone.)"""
    from sessiond.cli.parser import ParseError, build_parser

    parser = build_parser(False)
    for typed, meant in (("strat", "start"), ("stauts", "status"), ("statsu", "status"), ("tsats", "stats")):
        with pytest.raises(ParseError, match=f"did you mean `sessiond {meant}`"):
            parser.parse_args([typed])
    with pytest.raises(ParseError, match="did you mean `sessiond chat switch`"):
        parser.parse_args(["chat", "swtich"])


# ---------------------------------------------------------------- the parser built for the command named alone
# A CLI call builds the parser of the command its line names, the others listed by name and help only (cli/commands
# NotBuilt): building all 56 with their ~270 arguments was ~10 ms of CPU a call, paid ~6,500 times by the suite. What
# the user reads is what the whole parser gives: every --help, and each refusal of an argument with its guess.


def _main(argv: list[str], whole=None) -> tuple[int, str, str]:
    """main(argv) in this process: its exit code, standard output and error; `whole`: main given these parsers
    (wants_json -> the whole parser, built once) in place of its own, which builds the command `argv` names."""
    import contextlib
    import io

    import sessiond.cli.main as cli

    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        if whole is not None:
            mp.setattr(cli, "build_parser", lambda wants_json, argv: whole[wants_json])
        code = cli.main(argv)
    return code, out.getvalue(), err.getvalue()


def _listed(help_text: str) -> list[str]:
    """The commands (or a group's actions) a --help lists under its positional (indented four spaces)."""
    import re

    return re.findall(r"^ {4}([a-z][a-z-]*)\b", help_text.split("positional arguments:", 1)[1], re.M)


def test_every_help_and_refusal_is_what_the_whole_parser_gives(monkeypatch, tmp_path):
    from sessiond.cli.parser import build_parser

    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("SESSIOND_HOME", str(tmp_path / "home"))
    whole = {False: build_parser(False), True: build_parser(True)}
    every: list[list[str]] = [[]]
    for name in _listed(_main(["--help"], whole)[1]):
        every.append([name])
        text = _main([name, "--help"], whole)[1]
        if "ACTION" in text.split("\n\n", 1)[0]:  # a group: its actions too
            every += [[name, action] for action in _listed(text)]
    assert len(every) > 55 and ["chat", "new"] in every and ["status"] in every, every
    for argv in every:
        argv = [*argv, "--help"]
        assert _main(argv) == _main(argv, whole), argv
    refused = [
        [],
        ["--json"],
        ["satus"],
        ["stauts"],
        ["list", "--json"],
        ["zzzz"],
        ["chat"],
        ["chat", "swich"],
        ["key", "exprt"],
        ["status", "--sesions"],
        ["ls", "--limt", "3", "--json"],
        ["chat", "new", "ID", "--nmae", "x"],
        ["new", "--name", "-draft"],
        ["add", "ID", "-draft"],
        ["serve", "invite", "--quota", "1G"],
        ["--home", "status", "--bogus"],
        ["set", "ID", "--unset", "bogus"],
    ]
    for argv in refused:
        code, out, err = _main(argv)
        assert code == 2 and (code, out, err) == _main(argv, whole), argv
    # and the guesses are there (not the list of every command)
    assert "did you mean `sessiond status`?" in _main(["satus"])[2]
    assert "did you mean `sessiond chat switch`?" in _main(["chat", "swich"])[2]
    assert "(did you mean --sessions?)" in _main(["status", "--sesions"])[2]
    assert "(did you mean --name?)" in _main(["chat", "new", "ID", "--nmae", "x"])[2]


def test_the_help_fills_the_width_columns_gives(monkeypatch):
    """The width is read once a parser (not by argparse for each of its formatters): $COLUMNS still sets it."""
    widths = {}
    for columns in ("57", "200"):
        monkeypatch.setenv("COLUMNS", columns)
        text = _main(["new", "--help"])[1].split("\noptions:")[1].split("\nexample")[0]  # (the options, wrapped)
        widths[columns] = max(len(line) for line in text.splitlines())
    assert 45 < widths["57"] <= 55 < 100 < widths["200"], widths  # (argparse fills COLUMNS less 2)


def test_a_command_not_on_the_line_is_listed_not_built():
    from sessiond.cli.parser import build_parser

    parser = build_parser(False, ["status"])
    assert parser.parse_args(["status"]).command == "status"
    with pytest.raises(RuntimeError, match="not built"):  # (ls listed only: its arguments never added)
        parser.parse_args(["ls"])


def test_a_required_option_left_out_names_the_values_it_takes():
    """`sessiond add ID "text"` (the README's `add` with its --role left out, a newcomer's first try) was refused
    "add: the following arguments are required: --role", not what to give. The refusal names its values."""
    code, _out, err = _main(["add", "some-id", "What is BLAKE3?"])
    assert code == 2 and "the following arguments are required: --role" in err, err
    assert "give --role system, user, assistant or tool" in err, err
    code, out, err = _main(["add", "some-id", "hi", "--json"])
    assert code == 2 and "give --role system, user, assistant or tool" in json.loads(out)["error"]["message"], out
    code, _out, err = _main(["fork", "some-id"])  # (an option that takes any value: as it was)
    assert code == 2 and err.rstrip().endswith("the following arguments are required: --at"), err


def test_help_typed_as_a_command_says_where_the_help_is(tmp_path):
    """`sessiond help` and `sessiond help show` (git's and most tools' way) were refused as an invalid choice
    followed by all 44 commands in one line, `--help` named nowhere. The refusal (exit 2, nothing done) says where
    the help is: the commands', and one command's; a group's `help` action likewise."""
    for argv, way in ((["help"], "`sessiond --help`"), (["help", "show"], "`sessiond COMMAND --help`")):
        code, out, err = _main([*argv, "--home", str(tmp_path / "h")])
        said = err.splitlines()[-1]
        assert code == 2 and way in said and "choose from" not in said, said
    code, out, err = _main(["chat", "help", "--home", str(tmp_path / "h")])
    assert code == 2 and "sessiond chat --help" in err.splitlines()[-1], err


# options of one name that mean another thing in another command (add's --name is its tool call's, ask's --model a
# one-off for one question), not the same option left unexplained
OWN_MEANING = {"--name", "--model"}


def test_an_option_explained_in_one_command_is_explained_in_every_one(monkeypatch):
    """`chat new --system` had no help while `chat set --system` said "'-' reads it from standard input" (both do);
    `key import --force` none, though it replaces the device key sessions depend on, where `rm --force` and
    `export --force` said what they force; `verify-proof`'s PROOF none (a file, or '-'); `--chat` of `context`,
    `compact` and `uncompact`, `--user` of `ls` and `stats`, `ls --tag`, `add --role`, `export --format` none either.
    An option with help in any command has it in every command, and every positional has it."""
    import argparse
    import collections

    from sessiond.cli.parser import build_parser

    monkeypatch.setenv("COLUMNS", "80")
    helps: dict[str, dict[str, str | None]] = collections.defaultdict(dict)

    def walk(parser: argparse.ArgumentParser, path: list[str]) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, [*path, name])
            elif path and action.help != argparse.SUPPRESS:
                key = action.option_strings[-1] if action.option_strings else f"positional {action.dest}"
                helps[key][" ".join(path)] = action.help

    walk(build_parser(False), [])
    assert len(helps) > 60, sorted(helps)
    unexplained = []
    for key, by_command in helps.items():
        bare = sorted(command for command, said in by_command.items() if not said)
        if bare and (key.startswith("positional") or (key not in OWN_MEANING and len(bare) < len(by_command))):
            unexplained.append(f"{key} in {bare}")
    assert not unexplained, unexplained
