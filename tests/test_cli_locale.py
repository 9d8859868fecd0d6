"""The CLI under a locale whose encoding is not UTF-8 (LC_ALL=C with Python's UTF-8 mode off, an ISO-8859
locale, PYTHONIOENCODING=ascii): names and texts it cannot print as they are are printed escaped, --json stays
valid and exact, never a UnicodeEncodeError traceback."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from conftest import PY

NAME = "héllo ☃ 日本 🎉"
TEXT = "ünïcode ☃ text 日本 🎉"


def _cli(home: str, *args: str, env: dict) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "PYTHONIOENCODING", "PYTHONUTF8"))}
    return subprocess.run(
        [PY, "-m", "sessiond.cli.main", *args, "--home", home], env={**e, **env}, capture_output=True, timeout=60
    )


LOCALES = [
    pytest.param({"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0"}, id="C-utf8-mode-off"),
    pytest.param({"PYTHONIOENCODING": "ascii"}, id="ascii"),
    pytest.param({"PYTHONIOENCODING": "latin-1"}, id="latin-1"),
]


@pytest.mark.parametrize("env", LOCALES)
def test_unicode_names_and_texts_print_in_a_locale_that_cannot_show_them(daemon, env):
    c = daemon.client()
    sid = c.create_session(name=NAME)["id"]
    c.append(sid, "user", TEXT)
    for args in (["ls"], ["show", sid], ["log", sid], ["log", sid, "--short"], ["search", "text"]):
        res = _cli(daemon.home, *args, env=env)
        err = res.stderr.decode(errors="replace")
        assert res.returncode == 0 and "Traceback" not in err, (args, err[-1500:])
        out = res.stdout.decode("latin-1")  # (whatever the bytes: what was printed is checked below)
        assert "\\u2603" in out, (args, out)  # (no locale here has ☃: escaped as JSON does)
    for args in (["ls", "--json"], ["show", sid, "--json"], ["log", sid, "--json"]):
        res = _cli(daemon.home, *args, env=env)
        err = res.stderr.decode(errors="replace")
        assert res.returncode == 0 and "Traceback" not in err, (args, err[-1500:])
        data = json.loads(res.stdout.decode(env.get("PYTHONIOENCODING", "ascii")))  # valid JSON in the locale's
        # encoding, the names and texts exact
        assert NAME in json.dumps(data, ensure_ascii=False) or TEXT in json.dumps(data, ensure_ascii=False), args


def test_a_utf8_argument_in_an_ascii_locale_is_refused_naming_the_locale(daemon):
    """LC_ALL=C with UTF-8 mode off: Python decodes argv (and paths) as ASCII, each other byte a lone
    surrogate, which no path or request can carry. A name typed in UTF-8 is refused naming the locale and the
    way, not as 'not UTF-8 text' (which it is); bytes that are not UTF-8 at all are refused as before."""
    sid = daemon.client().create_session(name="x")["id"]
    env = {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0"}
    res = _cli(daemon.home, "set", sid, "--name", NAME, env=env)
    err = res.stderr.decode(errors="replace")
    assert res.returncode == 2 and "this locale" in err and "PYTHONUTF8=1" in err and "Traceback" not in err, err
    assert daemon.client().get_session(sid)["name"] == "x"
    bad = _cli(daemon.home, "set", sid, "--name", os.fsdecode(b"\xff\xfe"), env=env)  # not UTF-8 at all
    assert bad.returncode == 2 and b"not UTF-8 text" in bad.stderr, bad.stderr


def _columns(text: str) -> int:
    """How many terminal columns `text` takes: East Asian wide and fullwidth characters two, combining marks
    and the zero-width joiners none, any other one."""
    import unicodedata

    return sum(
        0 if unicodedata.combining(ch) or ch in "\u200c\u200d" else 2 if unicodedata.east_asian_width(ch) in "WF" else 1
        for ch in text
    )


TABLE_LOCALES = [
    pytest.param({"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0"}, id="C-utf8-mode-off"),
    pytest.param({"LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}, id="C.UTF-8"),
    pytest.param({"PYTHONIOENCODING": "latin-1"}, id="latin-1"),
]


@pytest.mark.parametrize("env", TABLE_LOCALES)
def test_table_columns_line_up_whatever_the_names_print_as(daemon, env):
    """`sessiond ls` computed its column widths on the names as they are, before what prints them escapes
    them: under an ASCII locale "☃" prints as \\u2603 (six columns, counted as one), a control character as
    \\x1b after the widths were taken, and in a UTF-8 terminal 日本 takes four columns, counted as two. Every
    column after such a name was pushed out of line. Each column now starts where its heading does."""
    c = daemon.client()
    for name in (NAME, "plain", "e\u0301t\u00e9", "ctl\x1b[31mred", "全角ＡＢＣ", "z"):
        c.create_session(name=name, user="zz-user", model="mdl-q")
    res = _cli(daemon.home, "ls", env=env)
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    lines = res.stdout.decode(env.get("PYTHONIOENCODING", "utf-8")).splitlines()
    assert len(lines) == 7 and lines[0].startswith("ID"), lines
    for heading, value in (("USER", "zz-user"), ("STATUS", "active"), ("MODEL", "mdl-q")):
        at = lines[0].index(heading)
        for line in lines[1:]:
            assert _columns(line[: line.index(value)]) == at, (heading, line, lines)
