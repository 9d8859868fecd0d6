"""The order the suite's files are handed to the workers: the longest first.

`make test` runs the files on several workers (pytest-xdist, `--dist loadfile`), each file whole on one, handed
out in collection order as workers come free (the Makefile passes `--no-loadscope-reorder`: xdist's own order is
by number of tests, which put a file of few long tests, test_schemathesis' 2 tests of ~46 s, among the last,
one worker still running it while the others had finished). Every file measured goes in the order of its time,
longest first (tests/fileorder.txt, written from a run's JUnit XML by tests/tools/write_fileorder.py): with only
the longest 47 listed, the others went by number of tests, and the files of one long test (the kill loops, the
fuzzer, the stateful test, 10-30 s each) were handed out last, one or two workers still running them while the
others stood idle at the suite's end. A file not listed (a new one, its time unknown) goes among the longest
quarter's last, those of more tests first, as xdist would have them: were it long, it is not the suite's tail;
short, it costs nothing there. The list is a hint of the order, nothing else depends on it."""

from __future__ import annotations

import os
from collections import Counter


def _measured() -> tuple[str, ...]:
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "fileorder.txt")) as f:
        return tuple(line.split()[1] for line in f if line.strip() and not line.startswith("#"))


LONGEST_FIRST = _measured()


def longest_first(items: list) -> None:
    """Sort the collected `items` in place: by file, the files of LONGEST_FIRST in its order, the others (by their
    number of tests, most first) after its first quarter; each file's tests together, in their own order."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    unknown = len(rank) // 4 - 0.5
    files = [item.nodeid.split("::", 1)[0] for item in items]
    count = Counter(files)
    first: dict[str, int] = {}
    for i, f in enumerate(files):
        first.setdefault(f, i)

    def key(i: int) -> tuple[float, int, int, int]:
        f = files[i]
        return (rank.get(f.rsplit("/", 1)[-1], unknown), -count[f], first[f], i)

    items[:] = [items[i] for i in sorted(range(len(items)), key=key)]
