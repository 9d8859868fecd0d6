"""The device key: `key export` (24 backup words) and `key import` (restore them)."""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sys

from ...client import Client, DaemonNotRunning
from ...daemon.home import resolve_home
from ...storage.fsutil import sqlite_ro_uri
from ..errors import EXIT_USAGE, CliError, UsageError
from ..inputs import read_text
from ..output import emit
from . import Commands

# What `key export` prints on standard error above the words: a '#' line, which `key import` leaves out (as
# it does the notice earlier versions printed without the '#').
NOTICE = "# Your device key backup (keep it secret; anyone with it can sign as this device)"
OLD_NOTICE = "Your device key backup (keep it secret;"


def register(commands: Commands) -> None:
    p = commands.add("key", None, "the device key: export or import a backup as words", unquoted=True)
    key = commands.actions(p, "key_command")
    key.add("export", cmd_key_export, "print the device key as 24 words", unquoted=True)  # (words after it: the key's)
    q = key.add("import", cmd_key_import, "restore the device key from words on standard input", unquoted=True)
    q.add_argument(
        "--force",
        action="store_true",
        help="replace the key even when this home has sessions pushed under its current one (else refused: import"
        " into a fresh --home)",
    )
    # the words given on the command line (`key import WORD...`, `--words WORD...`), taken to be refused as such:
    # argparse's "unrecognized arguments" quoted them all, the device key itself
    q.add_argument("words", nargs="*", help=argparse.SUPPRESS)
    q.add_argument("--words", "--mnemonic", dest="words_given", nargs="*", help=argparse.SUPPRESS)


def cmd_key_export(args) -> int:
    from ...daemon.home import Home, check_private_dir
    from ...sync.keys import KeyError_, KeyStore

    # Export reads the key a home has; it never makes a home (or a key) for a mistyped --home.
    home = Home(resolve_home(args.home))
    if not os.path.isfile(os.path.join(home.keys, "device.key")):
        raise CliError(
            f"{home.path} has no device key (is --home right? a home gets its key when its daemon first starts)"
        )
    check_private_dir(home.path, "home folder")
    check_private_dir(home.keys, "key folder")
    try:
        ks = KeyStore(home.keys)
    except KeyError_ as exc:
        raise CliError(f"{exc}: restore it from your backup words (`sessiond key import --home {home.path}`)") from None
    words = ks.export_mnemonic()
    if not args.json:  # standard output keeps the words alone: `key export > F` restores with `key import < F`
        print(f"{NOTICE}:", file=sys.stderr)
    emit(args, {"mnemonic": words, "words": len(words.split())}, words)
    return 0


def cmd_key_import(args) -> int:
    from ...daemon.home import Home, HomeError
    from ...sync.keys import DEVICE_KEY, KeyError_, device_key_problem, mnemonic_to_seed, restore_device_key

    if args.words or args.words_given is not None:  # (quoted nowhere: whoever has them signs as this device)
        raise CliError(
            "key import: give the backup words on standard input (`sessiond key import < device-key-words.txt`, or"
            " type them at the prompt), not on the command line, where other users could read them in `ps` (not"
            " quoted here)",
            EXIT_USAGE,
        )
    # No KeyStore here: one makes a new random key where there is none, and refuses a damaged one, the
    # two things this command is there to repair.
    home = Home(resolve_home(args.home))

    def prepare() -> None:
        try:
            home.prepare()
        except HomeError as exc:
            raise CliError(f"key import: {exc}") from None

    # A home that is there is checked before the words are asked for; one that is not is made only once the
    # words are a backup: words refused (a wrong paste, a mistyped --home) leave nothing behind.
    if os.path.isdir(home.path):
        prepare()
    try:
        Client(home.path, timeout=5).status()
        raise CliError(
            f"stop the daemon first (`sessiond stop --home {shlex.quote(home.path)}`): the device key cannot"
            " change under a running daemon"
        )
    except DaemonNotRunning:
        pass
    if sys.stdin.isatty():
        import getpass

        phrase = getpass.getpass("backup words (24, space-separated): ")
    else:  # export's notice left out: a backup saved with `key export > F 2>&1`, or pasted from the terminal
        phrase = " ".join(
            line for line in read_text("-").splitlines() if not line.lstrip().startswith(("#", OLD_NOTICE))
        )
    if not phrase.strip():  # an empty file or pipe (an export that wrote nothing): no words at all, not wrong ones
        raise UsageError(
            "key import: no backup words on standard input: give the 24 words `sessiond key export` printed there"
            f" (`sessiond key import --home {shlex.quote(home.path)} < device-key-words.txt`, or type them at the"
            " prompt)"
        )
    try:
        mnemonic_to_seed(phrase)
    except KeyError_ as exc:
        raise CliError(f"key import: {exc}") from None
    prepare()
    path = os.path.join(home.keys, DEVICE_KEY)
    problem = device_key_problem(home.keys)
    if problem is None and os.path.exists(home.db) and not args.force:
        n = _sessions_in(home.db)
        if n:
            raise CliError(
                f"this home already has {n} session(s) pushed under its current key; import a key "
                f"into a fresh home (--home), or pass --force to replace it anyway"
            )
    restore_device_key(home.keys, phrase)
    if problem is None:
        said = "device key restored"
    elif problem == "missing":
        said = f"device key restored to {path} (there was none)"
    else:
        said = f"the device key {path} was {problem}: replaced it with the key of your backup words"
    emit(args, {"imported": True, "replaced": problem or "key", "path": path}, said)
    return 0


def _sessions_in(db: str) -> int:
    """How many sessions the home's database holds (read-only)."""
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(sqlite_ro_uri(db), uri=True)) as conn:
            return int(conn.execute("SELECT count(*) FROM sessions").fetchone()[0])
    except sqlite3.Error as exc:
        raise CliError(
            f"key import: cannot read {db} to see whether sessions depend on the current device key ({exc}); "
            f"`sessiond doctor` checks it; pass --force to replace the key anyway"
        ) from None
