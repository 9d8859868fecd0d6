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
