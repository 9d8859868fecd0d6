"""`sessiond serve invite` with a --data it cannot use: a usage error naming the folder (exit 2, a JSON error
with --json), never a traceback."""

from __future__ import annotations

import json
import socket
import subprocess

import pytest

from conftest import PY, run_cli


def test_serve_invite_with_a_data_folder_it_cannot_use_is_a_clear_error(tmp_path):
    not_a_folder = tmp_path / "relay-data"
    not_a_folder.write_text("a file, not the relay's folder")
    for data in (str(not_a_folder), str(not_a_folder / "under-a-file")):
        res = subprocess.run(
            [PY, "-m", "sessiond.cli.main", "serve", "invite", "--data", data], capture_output=True, text=True
        )
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
        assert f"cannot use the data folder {data}" in res.stderr, res.stderr
        res = subprocess.run(
            [PY, "-m", "sessiond.cli.main", "serve", "invite", "--data", data, "--json"], capture_output=True, text=True
        )
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
        assert f"cannot use the data folder {data}" in json.loads(res.stdout)["error"]["message"]
    assert not_a_folder.read_text() == "a file, not the relay's folder"


def test_serve_actions_take_the_data_folder_given_before_the_action(tmp_path):
    """`sessiond serve --data D invite` (the option before the action, where `serve --help` lists it) makes the
    invite in D, as `serve invite --data D` does: it used to be dropped for the default folder, so the invite was
    one the relay at D had never heard of and the device's registration was refused. `accounts` and `revoke`
    read D the same way. A relay's own option (--quota, --listen, ...) given to an action is refused, not
    ignored, and nothing is written."""
    env = {"XDG_DATA_HOME": str(tmp_path / "xdg"), "HOME": str(tmp_path / "home")}
    data = tmp_path / "relay"
    res = run_cli(None, "serve", "--data", str(data), "invite", "--label", "phone", "--json", env=env)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["data"] == str(data)
    assert len(list((data / "invites").iterdir())) == 1
    assert not (tmp_path / "xdg").exists() and not (tmp_path / "home").exists()
    (data / "accounts").mkdir(mode=0o700)
    res = run_cli(None, "serve", "--data", str(data), "accounts", "--json", env=env)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["data"] == str(data)
    res = run_cli(None, "serve", "--data", str(data), "revoke", "nobody", env=env)
    assert res.returncode == 1 and "no account 'nobody'" in res.stderr, res.stderr
    for given in (["--quota", "2G"], ["--listen", "0.0.0.0:6000"], ["--open-registration"], ["--access-log"]):
        for json_flag in ([], ["--json"]):
            res = run_cli(None, "serve", *given, "invite", "--data", str(data), *json_flag, env=env)
            assert res.returncode == 2, (given, res.stdout, res.stderr)
            assert f"{given[0]} is an option of `sessiond serve`" in res.stderr, res.stderr
            if json_flag:
                assert json.loads(res.stdout)["error"]["code"] == "usage"
    assert len(list((data / "invites").iterdir())) == 1


def test_an_invite_says_to_keep_it_out_of_argv(tmp_path):
    """The note beside a new invite said to use it as `--store s5+http://INVITE@HOST:PORT`, on the command line
    where every local user reads it in `ps`, against the README's advice: it now says --store-file."""
    res = run_cli(None, "serve", "invite", "--data", str(tmp_path / "relay"))
    assert res.returncode == 0, res.stderr
    code = res.stdout.strip()
    assert "--store-file" in res.stderr and f"--store s5+http://{code}" not in res.stderr, res.stderr


def test_revoke_says_how_to_name_an_account_and_how_to_undo_it(tmp_path):
    """`serve revoke f3` (a start of an id too short to be taken) said "no account 'f3' on this relay", as if
    there were none; and a revoke's way back, `sessiond serve revoke --undo ID`, left out the relay's --data
    (without it, the default folder: another relay) and the id it had just named."""
    data = tmp_path / "relay"
    (data / "accounts").mkdir(parents=True)
    acct = "f3ad057e16f7d84761ce5af6bfee420b"
    (data / "accounts" / f"{acct}.json").write_text(json.dumps({"created": 1, "label": "phone"}))
    res = run_cli(None, "serve", "revoke", "f3", "--data", str(data))
    assert res.returncode == 1 and "at least 4 characters" in res.stderr, res.stderr
    res = run_cli(None, "serve", "revoke", "phone", "--data", str(data))
    assert res.returncode == 0, res.stderr
    assert f"sessiond serve revoke --undo {acct} --data {data}" in res.stdout, res.stdout


def _serve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "sessiond.cli.main", "serve", *args], capture_output=True, text=True, timeout=60)


def test_a_tls_file_that_cannot_be_loaded_is_named_by_its_option(tmp_path):
    """`serve --cert C --key K` with one of them wrong said "cannot load the TLS certificate/key (...); check
    --cert and --key": which one? Now the error names the option and its file: a missing file, a file
    holding no certificate or no key, a key not the certificate's, an encrypted key (which asked for its
    passphrase on the terminal, from a relay meant to run unattended)."""
    from test_relay import self_signed

    made = self_signed(tmp_path)
    if made is None:
        pytest.skip("no openssl to make a certificate with")
    cert, key = made
    other = tmp_path / "other"
    other.mkdir()
    _, other_key = self_signed(other)
    junk = tmp_path / "junk.pem"
    junk.write_text("not PEM at all\n")
    locked = tmp_path / "locked.pem"
    subprocess.run(
        ["openssl", "pkey", "-in", key, "-out", str(locked), "-aes256", "-passout", "pass:secret"], check=True
    )
    for given, expect in (
        (["--cert", str(tmp_path / "nope.pem"), "--key", key], f"--cert {tmp_path / 'nope.pem'}: cannot read"),
        (["--cert", cert, "--key", str(tmp_path / "nope.pem")], f"--key {tmp_path / 'nope.pem'}: cannot read"),
        (["--cert", str(junk), "--key", key], f"--cert {junk} holds no PEM certificate"),
        (["--cert", cert, "--key", str(junk)], f"--key {junk} holds no PEM private key"),
        (["--cert", key, "--key", key], f"--cert {key} holds no PEM certificate"),
        (["--cert", cert, "--key", other_key], f"--key {other_key} is not the key of the certificate in --cert"),
        (["--cert", cert, "--key", str(locked)], f"--key {locked} is encrypted"),
    ):
        data = tmp_path / "relay"
        res = _serve("--listen", "127.0.0.1:0", "--data", str(data), *given)
        assert res.returncode == 2 and expect in res.stderr, (given, res.stderr)
        assert not data.exists()


def test_a_port_in_use_makes_no_data_folder(tmp_path):
    """`serve --data D` on a port already in use made D (and the relay's files in it), then failed to
    listen: now it listens first, and a failure leaves nothing behind."""
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        port = busy.getsockname()[1]
        data = tmp_path / "relay"
        res = _serve("--listen", f"127.0.0.1:{port}", "--data", str(data))
        assert res.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in res.stderr, res.stderr
        assert not data.exists()
        # and the refusal says what to do: "Address already in use" alone named no way on
        assert "another program holds that port" in res.stderr and "another --listen" in res.stderr, res.stderr
    finally:
        busy.close()


@pytest.mark.parametrize("argv", [["serve", "--listen", "127.0.0.1:0"], ["serve", "invite"], ["serve", "accounts"]])
def test_an_empty_data_folder_is_refused_not_read_as_the_default_one(tmp_path, argv):
    """`sessiond serve --data "$D"` with D unset served (and `serve invite` wrote an invite into) the default
    relay folder in the user's data folder, as `--home ""` is refused for: a usage error now, and no folder is
    made."""
    env = {"XDG_DATA_HOME": str(tmp_path / "xdg"), "HOME": str(tmp_path / "home")}
    res = run_cli(None, *argv, "--data", "", "--json", env=env)
    assert res.returncode == 2, res
    err = json.loads(res.stdout)["error"]
    assert err["code"] == "usage" and err["message"].startswith("--data is empty"), err
    assert not (tmp_path / "xdg").exists() and not (tmp_path / "home").exists()


@pytest.mark.parametrize("label", ["", "   ", "a\nb", "x" * 101], ids=["empty", "blank", "newline", "long"])
def test_an_invite_s_label_that_could_not_name_its_account_is_a_usage_error(tmp_path, label):
    """`serve invite --label L` names the account the invite registers: `serve accounts` shows it on one line
    and `serve revoke L` takes it. An empty or blank one (`--label "$NAME"` with NAME unset), one over a line, or
    one past 100 characters was taken, and the account could not be named by it. Refused now, and no invite
    made."""
    data = tmp_path / "relay"
    res = run_cli(None, "serve", "invite", "--data", str(data), "--label", label)
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert "--label" in res.stderr, res.stderr
    assert not (data / "invites").exists() or not list((data / "invites").iterdir())


def test_an_invite_into_a_folder_no_relay_has_served_says_so(tmp_path, invite_relay):
    """`serve invite --data D` makes D when it is not there (an invite may be made before the relay's first
    start), silently: a --data mistyped made an invite no relay knows of, and the device's registration was
    refused later as "this invite is unknown". The invite is made as before, and standard error says that
    no relay has served D yet; an invite into a relay's folder says nothing of it."""
    typo = tmp_path / "relay-dta"
    for json_flag in ([], ["--json"]):
        res = run_cli(None, "serve", "invite", "--data", str(typo), *json_flag)
        assert res.returncode == 0, res.stderr
        assert f"no relay has served {typo} yet" in res.stderr and "sessiond serve --data" in res.stderr, res.stderr
    assert len(list((typo / "invites").iterdir())) == 2  # made, as before
    data, _host = invite_relay
    res = run_cli(None, "serve", "invite", "--data", data, "--json")
    assert res.returncode == 0 and "no relay has served" not in res.stderr, res.stderr


def test_revoke_of_no_such_account_says_not_found_in_json(tmp_path):
    """`serve revoke nosuch --json` answered the generic code "error", so a script could not tell an account not
    there (nothing to do, or a typo) from a data folder it could not change. It says "not_found", as the API
    does for what is not there; a folder that cannot be changed stays "error"."""
    data = tmp_path / "relay"
    (data / "accounts").mkdir(parents=True)
    res = run_cli(None, "serve", "revoke", "nosuch", "--data", str(data), "--json")
    assert res.returncode == 1, res.stderr
    err = json.loads(res.stdout)["error"]
    assert err["code"] == "not_found" and "no account 'nosuch'" in err["message"], err
