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
    "test_ipns_republish.py",
    "test_append_stream.py",
    "test_clocks.py",
    "test_event_backlog.py",
    "test_service.py",
    "test_sync_races.py",
    "test_retry_after.py",
    "test_members_gc.py",
    "test_rekey_forgery.py",
    "test_ask_cli.py",
    "test_folder_store_unmounted.py",
    "test_crash_members_orphans.py",
    "test_model.py",
    "test_api_edges.py",
    "test_doctor.py",
    "test_expiry_on_write.py",
    "test_cli_usage.py",
    "test_share.py",
    "test_api.py",
    "test_store_lies.py",
    "test_expiry_shared_idle.py",
    "test_converge.py",
    "test_store_secrets.py",
    "test_home_guards.py",
    "test_revoked_rm.py",
    "test_idle_connections.py",
    "test_merge.py",
    "test_sync_wait_said.py",
    "test_cli_locale.py",
    "test_sqlite_temp.py",
    "test_model_errors.py",
    "test_resync.py",
    "test_sizes_sync.py",
    "test_doctor_folders.py",
    "test_unread_answers.py",
    "test_output_full.py",
    "test_model_disconnect.py",
    "test_fd_limit.py",
    "test_crash.py",
    "test_crash_push_orphans.py",
    "test_stop_budget.py",
    "test_crash_outbox.py",
    "test_crash_gc_rekey_relay_loop.py",  # (~11 s: one test, else handed out last)
    "test_crash_mirror_repair_loop.py",
    "test_crash_claims_walk_loop.py",
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
