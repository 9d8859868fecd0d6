"""`sessiond cleanup --older-than 0` deletes every session at once (0 is the same in any unit, so the
duration check lets it through): a typo (0 for 30d, or 30m for 30d) wiped a device. A clean-up of sessions
idle for less than an hour now needs --yes: on a terminal without it, the CLI says how many sessions it
would delete and asks; with --json, or with no terminal to ask on, it refuses (a usage error naming --yes
and --dry-run), deleting nothing. --dry-run is always allowed; an hour or more needs no confirmation."""

from __future__ import annotations

import json
import os

import pytest

from conftest import cli_json, run_cli
from terminal import on_terminal


def _three(h: str) -> set[str]:
    return {cli_json(h, "new")["id"] for _ in range(3)}


def test_a_short_duration_needs_yes(daemon):
    h = daemon.home
    made = _three(h)
    for short in ("0", "0s", "30m", "59m"):
        res = run_cli(h, "cleanup", "--older-than", short, "--json", input="")
        assert res.returncode == 2, (short, res.stdout, res.stderr)
        err = json.loads(res.stdout)["error"]
        assert err["code"] == "usage" and "--yes" in err["message"] and "--dry-run" in err["message"], err
        res = run_cli(h, "cleanup", "--older-than", short, input="")  # no terminal to ask on
        assert res.returncode == 2 and "--yes" in res.stderr, (short, res.stderr)
    assert {s["id"] for s in cli_json(h, "ls")["sessions"]} == made  # nothing deleted
    dry = cli_json(h, "cleanup", "--older-than", "0", "--dry-run", input="")
    assert {s["id"] for s in dry["sessions"]} == made and not dry["deleted"]
    assert cli_json(h, "cleanup", "--older-than", "1h", input="")["sessions"] == []  # an hour: no question
    done = cli_json(h, "cleanup", "--older-than", "0", "--yes", input="")
    assert {s["id"] for s in done["sessions"]} == made and done["deleted"]
    assert cli_json(h, "ls")["sessions"] == []


def _on_terminal(h: str, answer: bytes) -> tuple[int, str]:
    """`cleanup --older-than 0` run on a pseudo-terminal, `answer` typed at its question: (exit code, what
    the terminal showed)."""
    code, seen = on_terminal(["cleanup", "--older-than", "0", "--home", h], b"[y/N]", answer)
    return code, seen.decode(errors="replace")


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_on_a_terminal_it_asks(daemon):
    h = daemon.home
    made = _three(h)
    code, seen = _on_terminal(h, b"n\n")
    assert code == 1 and "delete 3 session(s)" in seen and "nothing deleted" in seen, seen
    assert {s["id"] for s in cli_json(h, "ls")["sessions"]} == made
    code, seen = _on_terminal(h, b"y\n")
    assert code == 0 and "deleted 3 session(s)" in seen, seen
    assert cli_json(h, "ls")["sessions"] == []
