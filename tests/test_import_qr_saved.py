"""`sessiond share ID --qr > code.txt 2>&1` keeps share's whole output: its notes ('#' lines), the QR code
(standard error) and the code. `import < code.txt` (or `--code-file code.txt`, or `share --qr 2>&1 |
import`) skipped the notes but read the QR code's lines as the code, and said only "not a sessiond share code
(it should start with 'sessiond1')": what the user gave was share's own output. The QR code's lines (and
blank ones) are left out from a file or a pipe as they are at the prompt."""

from __future__ import annotations

import json

from conftest import cli_json, run_cli


def test_import_takes_share_s_whole_output_with_its_qr_code(daemon, tmp_path):
    sid = cli_json(daemon.home, "new")["id"]
    res = run_cli(daemon.home, "share", sid, "--qr", check=True)
    assert "█" in res.stderr
    whole = tmp_path / "code.txt"
    whole.write_text(res.stderr + res.stdout)
    res = run_cli(daemon.home, "import", "--code-file", str(whole), "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["session"] == sid, res
    res = run_cli(daemon.home, "import", "--json", input=whole.read_text())
    assert res.returncode == 0 and json.loads(res.stdout)["session"] == sid, res
