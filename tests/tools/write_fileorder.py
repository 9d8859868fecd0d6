"""Write tests/fileorder.txt, the order the suite's files go to the workers (tests/fileorder.py), from a run's
JUnit XML: each file's tests' times summed, the longest first.

  make test PYTEST_ARGS=--junitxml=/tmp/run.xml
  .venv/bin/python tests/tools/write_fileorder.py /tmp/run.xml

Only the order is used: a run on a loaded machine (every time longer) gives much the same one."""

from __future__ import annotations

import collections
import os
import sys
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(os.path.dirname(HERE), "fileorder.txt")
HEADER = """\
# The suite's files, the longest first: seconds (each file's tests' times summed in one run of the whole suite
# on four workers, xdist's --junitxml), then the file. Written by tests/tools/write_fileorder.py; read by
# tests/fileorder.py, which uses the order only.
"""


def file_seconds(junit_xml: str) -> dict[str, float]:
    seconds: collections.Counter[str] = collections.Counter()
    for case in ET.parse(junit_xml).iter("testcase"):
        module = case.get("classname", "").split(".")
        if len(module) >= 2 and module[0] == "tests":
            seconds[module[1] + ".py"] += float(case.get("time") or 0)
    return seconds


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: write_fileorder.py RUN.xml  (a JUnit XML of a run of the whole suite)", file=sys.stderr)
        return 2
    seconds = file_seconds(argv[0])
    with open(OUT + ".tmp", "w") as f:
        f.write(HEADER)
        for name, s in sorted(seconds.items(), key=lambda kv: (-kv[1], kv[0])):
            f.write(f"{s:.1f} {name}\n")
    os.replace(OUT + ".tmp", OUT)
    print(f"{len(seconds)} files written to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
