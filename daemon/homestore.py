"""The home's store at the daemon's start: which store it syncs with (the one remembered in the home, the
one asked for, a move between them), what network stores need from this device, which of its stores are
used for the first time (which makes a folder store's folder), whether that could make them, and what the
store's own state says is wrong. The `Daemon` (daemon/server.py) calls these in its start, in this order:
(storerecord.py's check_store_known, before the database is opened) choose_store, configure_network_stores,
first_uses, (the store opened) note_unmade, keep_store (the note first: a start killed between the two
leaves a note, the next start the store's first use still), the note's writer again, (the sync engine
started) store_failing."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

from ..storage.database import Database
from ..storage.redact import scrub_text, shown_store
from ..stores import FileStore, Store
from ..stores.config import folder_of
from ..stores.filelayout import is_store
from ..sync.engine import Syncer
from ..sync.errors import crash_point
from ..sync.mirror import MirrorStore
from ..sync.mirrorurls import mirror_urls, same_stores
from .home import PINNING_DIR, TOKEN_DIR, Config, Home, HomeError, pinning_token_file

log = logging.getLogger("sessiond")

KUBO_SCHEMES = ("ipfs+http://", "ipfs+rpc+http://", "ipfs+rpc+https://")  # stores/config.py's Kubo RPC URLs


def unmade_stores(home: Home, remembered: str) -> tuple[set[str], bool]:
    """The URLs of the stores of the `remembered` store that its first use has not made yet (the home's
    store-unmade note), and whether that is all of them (nothing was written anywhere). An older note
    names none: "whole" is every store of it; "part" some, which unsaid (part_meant): read at one start,
    after which note_unmade names them."""
    noted = home.store_unmade()
    urls = set(mirror_urls(remembered))
    if noted is None:
        return set(), False
    if noted == ["whole"]:
        return urls, True
    if noted == ["part"]:
        return part_meant(remembered)[0], False
    unmade = urls & set(noted)
    return unmade, bool(urls) and unmade == urls


def part_meant(remembered: str) -> tuple[set[str], set[str]]:
    """What an older note "part" meant of the `remembered` mirror: some of its stores not made (a folder
    store's: a network store is always made), which unsaid. Those are among its folder stores whose folder
    holds no store now; one such is the store not made (returned first). With more, any of them may be a
    store that was made and went (a share not mounted), never made again on its own: none is taken for a
    store not made, and they are returned second, for the start to say so."""
    folders = {u: folder_of(u) for u in mirror_urls(remembered)}
    maybe = {u for u, folder in folders.items() if folder is not None and not is_store(folder)}
    return (maybe, set()) if len(maybe) <= 1 else (set(), maybe)


def first_uses(home: Home, store_url: str, *, named_again: bool = False) -> set[str]:
    """The URLs of the stores of `store_url` whose use now is their first, which makes a folder store's
    folder (stores/filelayout.py): every one at the home's first start; later, those the remembered store
    does not hold made (a move to them, or noted not made yet). A store made once and gone (a share not
    mounted) is none of them: opened as it is, unreachable; unless `named_again`: the store asked for with
    --change-store, the one the home uses (the user's say-so: every store of it is made if it went)."""
    urls = mirror_urls(store_url)
    remembered = home.remembered_store()
    if remembered is None or (named_again and same_stores(store_url, remembered)):
        return set(urls)
    if home.store_unmade() == ["part"] and (unknown := part_meant(remembered)[1]):
        log.warning(
            "the home's store-unmade note, as an earlier version wrote it, says some of the folder stores %s were "
            "not made, not which: none of them is made now (one may be a share not mounted); make the one not "
            "made with `mkdir -p DIR/objects DIR/heads` in its folder",
            ", ".join(shown_store(u) for u in sorted(unknown)),
            extra={"event": "store"},
        )
    made = set(mirror_urls(remembered)) - unmade_stores(home, remembered)[0]
    return {u for u in urls if u not in made}


def choose_store(home: Home, wanted: str | None, *, change_store: bool, store_from: str) -> tuple[str, str | None]:
    """The store is remembered in the home (<home>/store-url) from the first start on: a start
    without --store (`wanted` None) uses it, and another one is refused unless --change-store
    (`change_store`) confirms the move. `store_from`: where `wanted` was asked for (the options that gave it,
    "--store", "--store-file", or "config.toml"). On a move, sessions shared through the old store keep syncing
    there (where their codes point; the other devices are there), and every other session is pushed to the new
    store in full.
    Returns the store to use and the store moved from, if any (the move is made by keep_store, once the new
    one opened). A remembered store whose first use made none of it (a folder that could not be made) is
    no move."""
    remembered = home.remembered_store()
    if wanted is None:
        return remembered or home.default_store, None
    if remembered is not None and not same_stores(wanted, remembered):  # credentials are not identity
        if unmade_stores(home, remembered)[1]:
            return wanted, None  # a first use that made none of it: nothing went there, no move (its first start)
        if not change_store:
            keep = (
                f"take the store setting out of {home.path}/config.toml to keep it"
                if store_from == "config.toml"
                else f"start without {store_from} to keep it"
            )
            raise HomeError(
                f"this home syncs with the store {shown_store(remembered)} (remembered in {home.store_record}), "
                f"not {shown_store(wanted)} ({store_from}); {keep}, or add --change-store to move "
                f"this home to {shown_store(wanted)} (its sessions are pushed there in full)"
            )
        return wanted, remembered
    return wanted, None


async def keep_store(home: Home, db: Database, store_url: str, move_from: str | None) -> None:
    """The store opened: only now the home remembers `store_url`, and a move from `move_from` (choose_store's)
    is made in the database. Noted in the database first, the home told, then the move made: killed before
    the home was told, the database has changed nothing (it took the move alone once: every session then
    pushed again from its start into the store the home stayed on, its pages before left unreferenced, for
    good); killed after, the next start finds the note and the home on the new store, and makes the move."""
    noted = await db.syncstate.noted_store_move()
    if noted is not None:
        if home.remembered_store() == noted[1]:  # the home was told, the database not: the move made now
            await _move(db, noted[0])
        else:
            await db.syncstate.note_store_move(None)  # the home was never told: no move (a start asking again makes it)
    if move_from is not None:
        await db.syncstate.note_store_move((move_from, store_url))
    if home.remembered_store() != store_url:
        home.remember_store(store_url)
    if move_from is not None:
        crash_point("store:remembered")  # (tests: the home told of the new store, the database not)
        await _move(db, move_from)


async def _move(db: Database, move_from: str) -> None:
    moved = await db.move_store(move_from)
    log.info("store changed", extra={"event": "store", "objects": moved})


def configure_network_stores(home: Home, config: Config, store_url: str) -> None:
    """What network stores (stores/) need from this device: a secret their portal account keys
    derive from (a key derived from the device seed under a name no session id can have), a
    private folder for portal tokens, and the Kubo RPC credentials file if the home has one."""
    from .. import stores
    from ..stores.http import DEFAULT_MAX_REQUESTS_PER_SECOND
    from ..sync.keys import KeyStore

    account_root = bytes(KeyStore(home.keys).head_key("\x00store accounts"))
    kubo_auth = os.path.join(home.path, "kubo-auth")
    pinning: dict[str, str | None] = {}
    if config.pinning_service:
        # The service fetches what it pins by CID from the IPFS network: only a Kubo node's objects
        # are there (an S5 portal's, a relay's or a folder's are not), so pinning wraps Kubo stores.
        if not any(u.startswith(KUBO_SCHEMES) for u in mirror_urls(store_url)):
            raise HomeError(
                f"config.toml sets pinning_service, but this home's store is {shown_store(store_url)}: a pinning "
                f"service fetches the objects it pins from the IPFS network, so it needs an IPFS node's "
                f"store (--store ipfs+http://HOST:PORT); remove pinning_service or change the store"
            )
        pinning = {
            "pinning_service": config.pinning_service,
            "pinning_token_file": pinning_token_file(home.path),
            "pinning_state_dir": os.path.join(home.path, PINNING_DIR),  # pin request ids (0600)
        }
    rate = config.max_requests_per_second
    stores.configure(
        account_seed=account_root,
        token_dir=os.path.join(home.path, TOKEN_DIR),
        kubo_auth_file=kubo_auth,  # read if there (now, or once the node refuses a request)
        timeout=config.store_timeout,
        max_requests_per_second=rate if rate is not None else DEFAULT_MAX_REQUESTS_PER_SECOND,
        pinning_service=pinning.get("pinning_service"),
        pinning_token_file=pinning.get("pinning_token_file"),
        pinning_state_dir=pinning.get("pinning_state_dir"),
    )


def note_unmade(home: Home, store: Store, store_url: str) -> Callable[[], None]:
    """Note in the home which stores of `store_url` (`store`, opened) their first use could not make (a
    folder store: a file in its path, a disk full: stores/file.py makes it at the first call that can),
    until that call makes them. Until the home remembers `store_url` (keep_store, after this), the note
    keeps naming the remembered store's stores not made: a start killed between the two finds the
    remembered store as it was. Returns the note's writer: call it again once the home remembers it."""
    every = store.stores if isinstance(store, MirrorStore) else [store]
    folders = [(url, s) for url, s in zip(mirror_urls(store_url), every, strict=True) if isinstance(s, FileStore)]
    remembered = home.remembered_store()
    before: list[str] = []
    if remembered not in (None, store_url):
        before = sorted(unmade_stores(home, remembered)[0])

    writing = threading.Lock()  # a store made (on its thread) and the start both write it: the last look last

    def note() -> None:
        with writing:
            unmade = [url for url, s in folders if s.unmade]
            if before and home.remembered_store() != store_url:
                unmade += [url for url in before if url not in unmade]
            home.note_store_unmade(unmade)

    for _, s in folders:
        if s.unmade:
            s.on_made = note
    note()
    return note


async def store_failing(syncer: Syncer) -> list[str]:
    """What the store's own state says is wrong at start (a folder store's folder missing, empty, or
    not made: Store.failing_now), logged in the words its pushes fail with: the daemon serves its
    sessions all the same, their pushes wait until the store is back. Also in `status` and `start`."""
    failing = [
        f"{shown_store(st['url'])}: {scrub_text(st['last_error'])}"
        for st in await syncer.store_status()
        if st["reachable"] is False and st.get("last_error")
    ]
    for said in failing:
        log.warning("the store fails at start (pushes wait until it is back): %s", said, extra={"event": "store"})
    return failing
