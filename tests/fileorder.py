"""The order the suite's files are handed to the workers: the longest first.

`make test` runs the files on several workers (pytest-xdist, `--dist loadfile`), each file whole on one, handed
out in collection order as workers come free (the Makefile passes `--no-loadscope-reorder`: xdist's own order is
by number of tests, which put a file of few long tests, test_schemathesis' 2 tests of ~46 s, among the last,
one worker still running it while the others had finished). The files below (the longest of a run of the whole
suite, longest first, measured with `--junitxml` and the times of each file's tests summed) go first; the rest
follow, those of more tests first, as xdist would have them. A file missing here, or one grown long, only goes
later than it might: the list is a hint of the order, nothing else depends on it."""

from __future__ import annotations

from collections import Counter

LONGEST_FIRST = (
    "test_schemathesis.py",
    "test_cli.py",
    "test_service.py",
    "test_event_backlog.py",
    "test_rekey_forgery.py",
    "test_append_stream.py",
    "test_api_edges.py",
    "test_api.py",
    "test_cli_usage.py",
    "test_converge.py",
    "test_clocks.py",
    "test_model.py",
    "test_members_gc.py",
    "test_home_guards.py",
    "test_crash_members_orphans.py",
    "test_cli_locale.py",
    "test_ipns_republish.py",
    "test_ask_cli.py",
    "test_resync.py",
    "test_sync_races.py",
    "test_manage.py",
    "test_revoked_rm.py",
    "test_store_lies.py",
    "test_folder_store_unmounted.py",
    "test_output_full.py",
    "test_store_secrets.py",
    "test_sizes_sync.py",
    "test_merge.py",
    "test_crash_push_orphans.py",
    "test_retry_after.py",
    "test_sync.py",
    "test_expiry_shared_idle.py",
    "test_crash_unshare.py",
    "test_security.py",
    "test_model_errors.py",
    "test_crash_restart.py",
    "test_share.py",
    "test_session_edges.py",
    "test_rejoin.py",
    "test_smalls24.py",
    "test_file_round_trips.py",
    "test_doctor.py",
    "test_crash_outbox.py",
    "test_unread_answers.py",
    "test_expiry_on_write.py",
)


def longest_first(items: list) -> None:
    """Sort the collected `items` in place: by file, the files of LONGEST_FIRST first in its order, then the
    others by their number of tests (most first); each file's tests together, in their own order."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    files = [item.nodeid.split("::", 1)[0] for item in items]
    count = Counter(files)
    first: dict[str, int] = {}
    for i, f in enumerate(files):
        first.setdefault(f, i)

    def key(i: int) -> tuple[int, int, int, int]:
        f = files[i]
        return (rank.get(f.rsplit("/", 1)[-1], len(rank)), -count[f], first[f], i)

    items[:] = [items[i] for i in sorted(range(len(items)), key=key)]
