"""The device key: `key export` (24 backup words) and `key import` (restore them)."""

from __future__ import annotations

import os
import sys

from ...client import Client, DaemonNotRunning
from ...daemon.home import resolve_home
from ..errors import CliError
from ..inputs import read_text
from ..output import emit
from . import Commands


def register(commands: Commands) -> None:
    p = commands.add("key", None, "the device key: export or import a backup as words")
    key = commands.actions(p, "key_command")
    key.add("export", cmd_key_export, "print the device key as 24 words")
    q = key.add("import", cmd_key_import, "restore the device key from words on standard input")
    q.add_argument("--force", action="store_true")


def _keystore(args):
    from ...daemon.home import Home
    from ...sync.keys import KeyStore

    home = Home(resolve_home(args.home))
    home.prepare()
    return home, KeyStore(home.keys)


def cmd_key_export(args) -> int:
    from ...daemon.home import Home, check_private_dir
    from ...sync.keys import KeyStore

    # Export reads the key a home has; it never makes a home (or a key) for a mistyped --home.
    home = Home(resolve_home(args.home))
    if not os.path.isfile(os.path.join(home.keys, "device.key")):
        raise CliError(
            f"{home.path} has no device key (is --home right? a home gets its key when its daemon first starts)"
        )
    check_private_dir(home.path, "home folder")
    check_private_dir(home.keys, "key folder")
    ks = KeyStore(home.keys)
    words = ks.export_mnemonic()
    if not args.json:  # standard output keeps the words alone: `key export > F` restores with `key import < F`
        print("Your device key backup (keep it secret; anyone with it can sign as this device):", file=sys.stderr)
    emit(args, {"mnemonic": words, "words": len(words.split())}, words)
    return 0


def cmd_key_import(args) -> int:
    from ...sync.keys import KeyError_, mnemonic_to_seed

    home, ks = _keystore(args)
    try:
        Client(home.path, timeout=5).status()
        raise CliError("stop the daemon first (`sessiond stop`): the device key cannot change under a running daemon")
    except DaemonNotRunning:
        pass
    if sys.stdin.isatty():
        import getpass

        phrase = getpass.getpass("backup words (24, space-separated): ")
    else:
        phrase = read_text("-")
    try:
        mnemonic_to_seed(phrase)
    except KeyError_ as exc:
        raise CliError(f"key import: {exc}") from None
    if os.path.exists(home.db) and not args.force:
        import sqlite3

        with sqlite3.connect(f"file:{home.db}?mode=ro", uri=True) as conn:
            n = conn.execute("SELECT count(*) FROM sessions").fetchone()[0]
        if n:
            raise CliError(
                f"this home already has {n} session(s) pushed under its current key; import a key "
                f"into a fresh home (--home), or pass --force to replace it anyway"
            )
    ks.import_mnemonic(phrase)
    emit(args, {"imported": True}, "device key restored")
    return 0
