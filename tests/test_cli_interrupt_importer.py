"""cli/__init__.py takes Ctrl-C while the `sessiond` command starts (one line, exit 130: os._exit), for the
command only: a program importing the package keeps its own. It told the command apart by sys.argv[0] alone,
"-m" or a name starting "sessiond": a program run as `python -m tool` whose package imports sessiond.cli
(argv[0] is "-m" while Python locates the module to run), or a script of its own named sessiond-something,
had every Ctrl-C of its whole run turned into the command's exit, its own KeyboardInterrupt never raised (no
clean-up, no handler of its own). Now only `python -m sessiond...` and the `sessiond` command itself are."""

from __future__ import annotations

import os
import signal
import subprocess

from conftest import PY

MAIN = """
import sys, time
try:
    print("ready", flush=True)
    time.sleep(60)
except KeyboardInterrupt:
    print("its own", flush=True)
    sys.exit(0)
"""


def _own_ctrl_c(cmd: list[str], cwd: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([cwd, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n", proc.communicate(timeout=30)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert (proc.returncode, out, err) == (0, b"its own\n", b""), (proc.returncode, out, err)  # main: 130


def test_a_program_run_with_dash_m_that_imports_the_cli_keeps_its_own_ctrl_c(tmp_path):
    pkg = tmp_path / "tool"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("import sessiond.cli  # (its helpers)\n")
    (pkg / "__main__.py").write_text(MAIN)
    _own_ctrl_c([PY, "-m", "tool"], str(tmp_path))


def test_a_script_named_after_sessiond_that_imports_the_cli_keeps_its_own_ctrl_c(tmp_path):
    (tmp_path / "sessiond-report.py").write_text("import sessiond.cli\n" + MAIN)
    _own_ctrl_c([PY, str(tmp_path / "sessiond-report.py")], str(tmp_path))
