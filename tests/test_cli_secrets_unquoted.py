"""Secrets typed in the wrong place, refused by the CLI without quoting them (stderr, and --json's stdout, which a
script's log or a pasted report keeps): the slips the last pass's checks (test_cli_usage.py) did not reach. All in
process: each is refused by the parse or a command's first check, before a daemon is asked or a home made."""

from __future__ import annotations

import json
import os

import pytest

CODE = "sessiond1" + "aeakkylblaqm2dajrmbsumxv2jclkf3au2jc3y3ipj6qeskekivakmo3jhx6l4lbmnqxeylllaqb7n4cojv6iy5" * 2
PASSPHRASE = "hunter2PASSWORD77"


@pytest.fixture(autouse=True)
def _no_daemon_left(tmp_path):
    """A daemon a refusal failed to prevent (a `start` let through: the defect) stopped, not left running."""
    yield
    if os.path.exists(tmp_path / "h" / "daemon.lock"):
        from sessiond.cli.main import main

        main(["stop", "--home", str(tmp_path / "h")])


def _refused(capsys, home: str, *argv: str) -> str:
    """main(argv --home HOME --json): its exit code 2 checked, what it printed (stdout and stderr) returned."""
    from sessiond.cli.main import main

    code = main([*argv, "--home", home, "--json"])
    out, err = capsys.readouterr()
    assert code == 2, (argv, out, err)
    json.loads(out)  # (--json's error on stdout)
    return out + err


@pytest.mark.parametrize(
    "argv",
    [
        ["import-file", CODE],  # (import-file for import: the code where its file goes)
        ["ls", CODE],
        ["status", CODE],
        ["import", "--store-file", CODE],
        ["import", "--code-file", f"./{CODE}"],
        ["import", "--code-file", CODE.upper()],  # (a code is read in either case)
        ["export", "some-id", "-o", f"{CODE}/x.json"],
    ],
)
def test_a_share_code_given_where_no_code_goes_is_never_quoted(tmp_path, capsys, argv):
    """A share code given to a command that takes none, or as a file's name, was quoted whole in its refusal
    ('ls: unrecognized arguments: sessiond1...', 'cannot read sessiond1...'): only the id's place (show CODE), new
    --id and import's own options named a code as one. Whoever sees a code reads its session. Every refusal the
    CLI prints names a code as one, quoting none of it."""
    said = _refused(capsys, str(tmp_path / "h"), *argv)
    assert CODE[20:60] not in said and CODE[20:60].upper() not in said, said
    assert "share code" in said, said
    assert not os.path.exists(tmp_path / "h")


@pytest.mark.parametrize(
    "argv",
    [
        ["share", "some-id", f"--pass={PASSPHRASE}"],  # (--passphrase or --passphrase-file: ambiguous, '=' its value)
        ["import", f"--passp={PASSPHRASE}"],
        ["import", f"--co={PASSPHRASE}"],  # (--code or --code-file)
        ["start", f"--st=s5+http//{PASSPHRASE}@relay.example:5050"],  # (--store or --store-file; a ':' short)
    ],
)
def test_an_ambiguous_option_given_its_value_with_an_equals_sign_is_not_quoted_with_it(tmp_path, capsys, argv):
    """argparse's 'ambiguous option: --pass=hunter2 could match --passphrase-file, --passphrase' quoted the value
    typed after the '=' with the abbreviation, the passphrase (the check of --passphrase given one runs after the
    parse, which failed first). The options the abbreviation could be are named; what followed its '=' is not."""
    said = _refused(capsys, str(tmp_path / "h"), *argv)
    assert PASSPHRASE not in said and "could match" in said, said
    assert not os.path.exists(tmp_path / "h")


@pytest.mark.parametrize(
    "argv",
    [
        ["rekey", "some-id", "--passphrase", PASSPHRASE],  # (share's option, given to rekey: no such option)
        ["unshare", "some-id", f"--passphrase-file={PASSPHRASE}"],
        ["ask", "some-id", "hi", "--api-key", PASSPHRASE],
        ["start", "--password", PASSPHRASE],
        ["share", "some-id", f"-p{PASSPHRASE}"],  # (`mysql -pPASSWORD`'s habit: the word read as an option's)
        ["key", "export", "abandon", PASSPHRASE],  # (the words after export, where import was meant)
    ],
)
def test_an_option_for_a_secret_that_the_command_does_not_take_is_refused_without_its_value(tmp_path, capsys, argv):
    """'rekey: unrecognized arguments: --passphrase hunter2' quoted the value given to an option the command does
    not have when its name says it holds a secret (a passphrase, a key, a token): argparse refuses the option and
    the word after it alike. And in a command given secrets (share), a word like an option (`-pSECRET`) was quoted
    as one. The option is named (and guessed); its value is not quoted."""
    said = _refused(capsys, str(tmp_path / "h"), *argv)
    assert PASSPHRASE not in said and "not quoted" in said, said
    assert not os.path.exists(tmp_path / "h")


@pytest.mark.parametrize(
    "argv",
    [
        ["share", "some-id", "--passphrase-file", f"-{PASSPHRASE}"],  # (the passphrase where its file goes)
        ["share", "some-id", "--passphrase", f"-{PASSPHRASE}"],
        ["start", "--store", f"-{PASSPHRASE}@relay.example:5050"],  # (no scheme: no URL the redaction reads)
    ],
)
def test_a_secret_that_begins_with_a_dash_is_not_quoted_by_the_hint_on_dashes(tmp_path, capsys, argv):
    """`share ID --passphrase-file -SECRET`: argparse read the value as an option and said '--passphrase-file:
    expected one argument', and the hint on values beginning with a dash quoted it twice ('-SECRET' begins with a
    dash ...: give it as --passphrase-file=-SECRET), telling the user to put a passphrase on the command line. In a
    command given secrets, or for an option named for one, the hint says how to give such a value, quoting none."""
    said = _refused(capsys, str(tmp_path / "h"), *argv)
    assert PASSPHRASE not in said and "begins with a dash" in said, said
    assert not os.path.exists(tmp_path / "h")


@pytest.mark.parametrize(
    "url, meant",
    [
        (f'"s5+http://{PASSPHRASE}@relay.example:5050"', "s5+http://***@relay.example:5050"),  # (config.toml's line)
        (f"'s5+http://{PASSPHRASE}@relay.example:5050'", "s5+http://***@relay.example:5050"),
        (f"<s5+http://{PASSPHRASE}@relay.example:5050>", "s5+http://***@relay.example:5050"),  # (a mail's link)
        (f"s5+http;//{PASSPHRASE}@relay.example:5050", "s5+http://***@relay.example:5050"),  # (':' without shift)
    ],
)
def test_a_quoted_or_semicolon_store_url_is_refused_not_made_a_folder(tmp_path, capsys, monkeypatch, url, meant):
    """A store URL given with the quotes or brackets it was copied in (config.toml's `store = "URL"`, a line of a
    --store-file, a mail's <URL>), or its ':' typed without shift (`s5+http;//`), was no URL to the store's parse,
    so a folder's path: the daemon started on an empty folder store of that name where the user stood (not the
    relay), the invite in its path, shown by `status` and kept in the home's store-url and its log. Refused now,
    naming the URL meant, its invite not quoted, nothing made."""
    monkeypatch.chdir(tmp_path)
    said = _refused(capsys, str(tmp_path / "h"), "start", "--store", url)
    assert PASSPHRASE not in said and f"did you mean {meant}?" in said, said
    assert sorted(os.listdir(tmp_path)) == [], os.listdir(tmp_path)


@pytest.mark.parametrize("option", ["--store", "--store-file"])
def test_a_share_code_given_as_the_store_is_refused_not_made_a_folder(tmp_path, capsys, monkeypatch, option):
    """`sessiond start --store CODE` (the code given where the store goes, on the device that is to import it; or a
    --store-file holding the code, for --code-file) was a folder's path: the daemon started on an empty folder store
    named by the code where the user stood, shown by `status` and kept in the home's store-url. Refused as a code,
    with the way on (`sessiond import`), nothing made."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "code.txt").write_text(CODE + "\n")
    value = CODE if option == "--store" else str(tmp_path / "w" / "code.txt")
    said = _refused(capsys, str(tmp_path / "h"), "start", option, value)
    assert CODE[20:60] not in said and "sessiond import" in said, said
    assert sorted(os.listdir(tmp_path)) == ["w"] and os.listdir(tmp_path / "w") == ["code.txt"]


@pytest.mark.parametrize(
    "argv",
    [
        ["share", "some-id", f"--qr={PASSPHRASE}"],  # (a flag given a value after '=': argparse ignores it, quoting it)
        ["share", "some-id", f"-h{PASSPHRASE}"],  # (-h's letter, then the passphrase: `mysql -pPASSWORD`'s habit)
        ["import", f"--json={PASSPHRASE}"],
        ["key", "import", f"-h{PASSPHRASE}"],
        ["ls", f"--no-user={PASSPHRASE}"],  # (in any command: what follows a flag's '=' is no value it takes)
        ["share", "some-id", "--expires", PASSPHRASE],  # (a command given secrets: a value refused by its type)
        ["share", "some-id", f"--expires={PASSPHRASE}'s"],
    ],
)
def test_a_value_given_to_a_flag_or_refused_by_its_type_is_not_quoted(tmp_path, capsys, argv):
    """argparse's 'argument --qr: ignored explicit argument 'hunter2'' (and `-hSECRET`'s 'argument -h/--help: ignored
    explicit argument') quoted what followed a flag, which takes none: a passphrase typed there was echoed, as was a
    value a command given secrets refused by its type (`share ID --expires SECRET`: 'not a duration: 'SECRET''). The
    flag is named, and how to give it; what was typed with it is not quoted."""
    said = _refused(capsys, str(tmp_path / "h"), *argv)
    assert PASSPHRASE not in said and "not quoted" in said, said
    assert not os.path.exists(tmp_path / "h")


@pytest.mark.parametrize(
    "argv",
    [
        ["start", "--store-file", f"s5:/{PASSPHRASE}:relay.example:5050"],  # (the URL where its file goes, mistyped)
        ["start", "--store-file", f"s5+http:///{PASSPHRASE}:relay.example"],
        ["import", "--store-file", f"{PASSPHRASE}:relay.example:5050"],  # (its scheme and its '@' left out)
    ],
)
def test_a_mistyped_store_url_given_where_its_file_goes_is_not_quoted(tmp_path, capsys, argv):
    """`--store-file URL` was caught, its name unquoted, when the URL held a '@' or a '//'; one with its '@' typed ':'
    and a '/' short (`s5:/INVITE:HOST:PORT`) or none, or a '/' too many (`s5+http:///INVITE:HOST`), was read as a
    file's name and refused as 'cannot read it', quoting it, the invite with it."""
    said = _refused(capsys, str(tmp_path / "h"), *argv)
    assert PASSPHRASE not in said and "not quoted" in said, said
    assert not os.path.exists(tmp_path / "h")
