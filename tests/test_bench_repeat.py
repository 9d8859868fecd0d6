"""bench/repeat.py: the median of each number across a benchmark's runs, and a real run of a tiny script."""

from __future__ import annotations

import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))
from repeat import median_of


def test_median_of_numbers_found_in_every_run():
    runs = [
        {"a": 1, "b": {"p99": 2.0, "x": "text"}, "c": [1, 2], "only": 5, "flag": True},
        {"a": 3, "b": {"p99": 1.0, "x": "text"}, "c": [3, 4]},
        {"a": 2, "b": {"p99": 9.5, "x": "other"}, "c": [5, 6]},
    ]
    assert median_of(runs) == {"a": 2, "b": {"p99": 2.0}, "c": [3, 4]}


def test_repeat_runs_the_script_and_writes_the_record(tmp_path):
    script = tmp_path / "b.py"
    script.write_text("import json, os\nprint(json.dumps({'n': int(os.environ['BENCH_N']) * 2, 'label': 'x'}))\n")
    out = tmp_path / "out.json"
    env = {**os.environ, "BENCH_N": "21"}
    bench = os.path.join(os.path.dirname(__file__), "..", "bench", "repeat.py")
    done = subprocess.run(
        [sys.executable, bench, "3", str(script), "--out", str(out), "--note", "tiny"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    record = json.loads(out.read_text())
    assert record == json.loads(done.stdout)
    assert record["median_of_3"] == {"n": 42} and len(record["runs"]) == 3 and len(record["load_average_before"]) == 3
    assert record["environment"]["BENCH_N"] == "21" and record["note"] == "tiny"


def test_the_runs_folders_are_removed_after_the_last_run_not_between(tmp_path):
    # between runs a run's folder waits in BENCH_TRASH (deleting many files makes the next run's file
    # creations dearer on a file system without a journal); after the last run nothing of them is left
    bench_dir = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "bench"))
    script = tmp_path / "b.py"
    script.write_text(
        "import json, os, sys, tempfile\n"
        f"sys.path.insert(0, {bench_dir!r})\n"
        "from _util import remove\n"
        "d = tempfile.mkdtemp(prefix='sd-bench-test-')\n"
        "open(os.path.join(d, 'f'), 'w').close()\n"
        "remove(d)\n"
        "trash = os.environ['BENCH_TRASH']\n"
        "print(json.dumps({'gone': not os.path.exists(d), 'waiting': len(os.listdir(trash)), 'trash': trash}))\n"
    )
    bench = os.path.join(bench_dir, "repeat.py")
    done = subprocess.run([sys.executable, bench, "2", str(script)], capture_output=True, text=True, check=True)
    runs = json.loads(done.stdout)["runs"]
    assert [r["gone"] for r in runs] == [True, True]
    assert [r["waiting"] for r in runs] == [1, 2]  # the first run's folder still there during the second
    assert not os.path.exists(runs[0]["trash"])
