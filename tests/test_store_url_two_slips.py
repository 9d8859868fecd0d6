"""A store URL with two slips at once (a scheme no store has, or a file URL, AND a '/' short or too many, AND an
invite or a password typed where its host goes: `s5:/INVITE:h:5`, `s5:///INVITE:h`, `file://INVITE@h:abc`) is
refused quoting none of what may be that secret: not in the refusal, the guess of the URL meant, urlparse's reason,
the CLI's stderr, its --json stdout, nor the daemon's log (daemon/urlguess.py, home.normalize_store_url). Each slip
alone was covered (test_store_url_guess.py, test_store_secrets.py); their products were not."""

from __future__ import annotations

import io
import itertools
import json

import pytest

from secretcheck import logs
from sessiond.daemon.home import HomeError, normalize_store_url

SECRET = "inv1TWOSLIPSqz7"
CODE = "sessiond1" + "aeakkylblaqm2dajrmbsumxv2jclkf3au2jc3y3ipj6qeskekivakmo3jhx6l4lbmnqxeylllaqb7n4cojv6iy5" * 2

SCHEMES = ("s5", "ipfs", "http", "https", "file", "ftp", "s5+http", "S5+HTTPS", "ipfs+rpc+https")
SEPARATORS = (":", ":/", "://", ":///", ":////")
# where an invite or a password goes when its '@' is typed ':' or %40 or a space or left out, or it is bracketed,
# or a user part (hidden where one is: not in a file URL) before a port that is no number
PLACES = (
    "{S}:relay.example:5050",
    "{S}:relay.example",
    "{S}%40relay.example",
    "{S} relay.example:5050",
    "[{S}]:5050",
    "[{S}@relay.example]:5050",
    "{S}@relay.example:abc",
)
SHAPES = [sc + sep + place.format(S=SECRET) for sc, sep, place in itertools.product(SCHEMES, SEPARATORS, PLACES)]
# the same in the quotes config.toml's `store = "..."` gave it, or with a ';' for its ':'
SHAPES += [f'"{u}"' for u in SHAPES[:: len(PLACES) + 1]] + [f"s5+http;//{p.format(S=SECRET)}" for p in PLACES]


def _refused() -> list[str]:
    """The shapes normalize_store_url refuses (the rest are folders' paths, taken as ever), each checked to be
    refused without its secret quoted."""
    refused, leaks = [], []
    for url in SHAPES:
        try:
            normalize_store_url(url)
        except HomeError as exc:
            refused.append(url)
            if SECRET.lower() in str(exc).lower():
                leaks.append(f"{url!r}: {exc}")
    assert not leaks, "\n".join(leaks)
    return refused


def test_no_store_url_with_two_slips_is_refused_quoting_its_secret(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert len(_refused()) > len(SHAPES) // 2
    assert not list(tmp_path.iterdir())  # (nothing made by a refusal)


def test_the_cli_and_the_daemon_quote_no_secret_of_a_mistyped_store_url(daemon, capsys, monkeypatch, tmp_path):
    """`start --store URL` (refused by the CLI) and `import --store URL` (refused by the daemon, over its API): the
    secret in none of stdout, stderr, --json's stdout nor the daemon's log. One shape in eight (each place, scheme and
    separator met), the brief's own among them: every refusal's text is checked in-process above."""
    from sessiond.cli.main import main

    monkeypatch.chdir(tmp_path)
    leaked = []
    refused = _refused()
    sample = refused[::8] + [f"s5:/{SECRET}:h:5", f"s5:///{SECRET}:h", f"file://{SECRET}@h:abc"]
    for url in sample:
        for argv in (["start", "--store", url, "--home", str(tmp_path / "h")], ["import", "--store", url]):
            for json_flag in ([], ["--json"]):
                monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(CODE.encode() + b"\n")))
                home = [] if argv[0] == "start" else ["--home", daemon.home]
                code = main([*argv, *home, *json_flag])
                out, err = capsys.readouterr()
                assert code != 0, (argv, out, err)
                if json_flag:
                    json.loads(out)
                if SECRET.lower() in (out + err).lower():
                    leaked.append(f"{argv[0]} {url!r}: {out}{err}")
    assert not leaked, "\n".join(leaked)
    assert SECRET.lower() not in logs(daemon.home).lower()
    assert not (tmp_path / "h").exists()


@pytest.mark.parametrize(
    "given, meant",
    [
        ("s5:/relay.example:5050", "s5+https://relay.example:5050"),  # (was 's5+https://s5:/relay.example:5050')
        ("ipfs:///gw.example", "ipfs+https://gw.example"),
        ("http:[::1]:5050", "s5+http://[::1]:5050"),
    ],
)
def test_the_url_meant_of_a_mistyped_scheme_and_slashes_is_a_url(given, meant):
    """`s5:/HOST:PORT` was told 'did you mean s5+https://s5:/HOST:PORT?' (the typed URL put whole where a host goes),
    and `http:[INVITE]:5050` ended in a traceback (urlparse's ValueError in the guess)."""
    with pytest.raises(HomeError) as refused:
        normalize_store_url(given)
    assert f"did you mean {meant}?" in str(refused.value), refused.value
