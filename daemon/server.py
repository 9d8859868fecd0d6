"""The daemon process: one per home. Opens the database, takes the home's lock, serves the API on a
Unix socket, runs the sync worker, and shuts down cleanly on SIGTERM/SIGINT. What its start checks of the
device key is devicekey.py's; which store it syncs with, and what that store needs, homestore.py's."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable

from aiohttp import web
from nacl.signing import SigningKey

from ..storage import clock
from ..storage.database import Database
from ..storage.errors import UnusableDatabase
from ..storage.heldfiles import cut_copies, cut_copy_said
from ..storage.redact import scrub_text, shown_store, shown_url
from ..stores import StoreError
from ..sync.bounded import KeyedLocks
from ..sync.engine import Syncer  # the daemon drives sync; sync never imports the daemon
from ..sync.mirror import MirrorStore, open_stores
from . import openai_cut, remote_checks
from .api import make_app
from .devicekey import check_device_key
from .events import Events
from .fdlimit import OutOfDescriptors, raise_fd_limit
from .home import Config, Home, HomeError, check_key_files, normalize_store_urls
from .homestore import choose_store, configure_network_stores, first_uses, keep_store, note_unmade, store_failing
from .listen import listening_socket, take_lock
from .logs import cap_output, setup_logging
from .malloc import tune_malloc
from .memdebug import MemDebug
from .nocore import no_core_dumps
from .operations import Operations
from .stopgrace import SETTLED, STOP_GRACE, stop_runner
from .storerecord import check_store_known
from .straykeys import delete_stray_keys, refuse_lost_database
from .testhooks import pause_for_tests
from .unread import STOP_GRACE as HANG_UP
from .versions import package_version, versions

log = logging.getLogger("sessiond")
# Events of other devices' operations applied here (a pull, an import): this device's own log did not
# change, so there is nothing of it to push (a follower pushed once per pull for nothing: its push found
# no new operation after five reads of its state).
APPLIED_HERE = frozenset({"session.synced", "session.imported"})

# How long a stop waits for the automatic checkpoints already due (each a few ms), and for the models answering
# to stop and what arrived to be recorded (as SETTLE_WAIT)
CHECKPOINTS_AT_STOP = 5.0
ANSWERS_AT_STOP = 5.0
EVENT_STREAMS_AT_STOP = 1.0  # an event stream whose app stopped reading: then cancelled (Events.shutdown)
# The most a stop takes, its parts' waits all taken from this one deadline (not added: 5 s of answers, 5 s of
# checkpoints and each listener's requests at STOP_GRACE twice, as aiohttp waits, passed `sessiond stop`'s 15 s,
# which then killed the daemon); AFTER_REQUESTS of it is kept for what follows the requests (the sync engine's
# tasks and threads, the stores, the database's close).
STOP_BUDGET = 9.0
AFTER_REQUESTS = 2.0
# of it, what the database's close keeps: the sync engine's stores are waited for until then (a store that hangs
# at the stop, a folder on a network share gone, held the stop past `sessiond stop`'s deadline)
DATABASE_CLOSE = 0.5

VERSION = package_version()


class Daemon:
    def __init__(
        self,
        home: Home,
        config: Config,
        store_url: str | None,
        *,
        change_store: bool = False,
        store_from: str = "--store",
        reset_device_key: bool = False,
    ):
        self.home = home
        self.config = config
        self.store_url = store_url  # the store asked for (None: the remembered one); the one used once started
        # what the store's own state said was wrong at start (homestore.store_failing)
        self.store_failures: list[str] = []
        self.store_from = (
            store_from  # where store_url was asked for: its options ("--store", "--store-file") or "config.toml"
        )
        self.change_store = change_store
        self.reset_device_key = reset_device_key  # a lost device key may be replaced by a new one
        self.version = VERSION
        self.started = time.monotonic()
        self.started_at = time.time()  # (wall clock: files older than this were not written by this process)
        self.events = Events(backlog=config.event_backlog)
        self.db: Database = None  # type: ignore[assignment]
        self.syncer: Syncer = None  # type: ignore[assignment]  # set by start(), before any request
        self.ops: Operations = None  # type: ignore[assignment]  # the routes' calls beyond the database; by start()
        self._lock_fd: int | None = None
        self._bound = False  # it bound the socket file itself (not handed over), so it removes it at stop
        self.stores_hung = False  # the stop went on without a store that never answered (sync engine's stop)
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()  # the daemon's own: the search indexer
        # one `import-file` at a time: each compares its file with what the one before wrote (reimports.py)
        self.file_imports = asyncio.Lock()
        from ..storage import tokens

        self.estimate = tokens.get(config.token_estimator)  # text -> tokens, for the routes and the providers
        from .openai_compat import Compat
        from .providers import Providers

        self.providers = Providers(
            config.providers, config.default_provider, os.path.join(self.home.path, "config.toml")
        )
        self.compat = Compat(self)
        # the questions to a model under way, by session and Idempotency-Key: a retry waits for its first try
        self.asking = KeyedLocks()
        # the questions to a model under way, by session: a question waits for the answers whose apps left
        from .answering import Answering

        self.answering = Answering()

    # ---------------------------------------------------------------- lifecycle (the API's other calls: self.ops)
    async def start(self) -> None:
        self.home.prepare()
        self._lock_fd = take_lock(self.home)
        cap_output(os.path.join(self.home.logs, "daemon.out"))  # (by the daemon holding the lock only)
        await pause_for_tests("start.locked")  # (the tests hold a daemon here: starting, not answering yet)
        check_store_known(self.home, self.store_url)
        refuse_lost_database(self.home)  # (under the lock: no daemon is making the database meanwhile)
        check_key_files(self.home.keys)
        try:
            self.db = await Database.open(self.home.db)
        except UnusableDatabase as exc:
            raise HomeError(str(exc)) from None
        await check_device_key(self.home, self.db, reset_device_key=self.reset_device_key)
        for sid in await self.db.repair_unpushable():
            log.warning(
                "an unpushed change held a value no snapshot can (an integer beyond 64 bits, NaN): "
                "rewritten so that it can be pushed",
                extra={"session": sid},
            )
        self.db.limits = dict(self.config.limits)
        self.db.estimate = self.estimate  # (a context budget counts the system prompt's tokens)
        self.db.listeners.append(self._on_change)
        named = self.change_store and self.store_url is not None  # --change-store with a store asked for
        self.store_url, move_from = choose_store(
            self.home, self.store_url, change_store=self.change_store, store_from=self.store_from
        )
        configure_network_stores(self.home, self.config, self.store_url)
        # Only a store's first use makes its folder (a folder store: stores/filelayout.py): this home's first
        # start, or a move to it, or a first use that could not make it (noted in the home: made late), or the
        # store the home uses named with --change-store (to make it again). A store used before and not there
        # now (a share not mounted) is otherwise opened as it is, unreachable: the pushes wait for it, none
        # goes into a new folder on the local disk.
        store = open_stores(
            self.store_url,
            self.db.outbox,
            create=first_uses(self.home, self.store_url, named_again=named),
            missing_ok=True,
            timeout=self.config.store_timeout,
            head_key=self._own_head_key,
        )
        # The note of what its first use could not make first: killed before the home remembers the store, the
        # next start is its first use still (a store remembered with no note would never be made)
        noted = note_unmade(self.home, store, self.store_url)
        await keep_store(self.home, self.db, self.store_url, move_from)  # it opened: only now the home remembers it
        noted()  # (the note now of this store's stores alone)
        if isinstance(store, MirrorStore):
            await store.started()  # what its stores' outboxes hold is counted before the first push
        self.syncer = Syncer(
            self.db,
            store,
            self.home.keys,
            interval=self.config.sync_interval,
            push_delay=self.config.push_delay,
            poll_interval=self.config.poll_interval,
            timeout=self.config.store_timeout,
            on_event=self.events.publish,
            check_remote=remote_checks.remote_log,
        )
        await self.syncer.start()
        self.store_failures = await store_failing(self.syncer)
        self.ops = Operations(
            self.db,
            self.syncer,
            cleanup_interval=self.config.cleanup_interval,
            delete_expired=self.config.delete_expired,
        )
        self.ops.answering, self.answering.on_done = self.answering.busy, self.ops.answered
        self.syncer.ctx.on_pulled = self.ops.shared_idle.pulled  # a shared session idle is ended once pulled since
        self.ops.start()
        self.db.on_expired = self.ops.expired_on_write  # a write past a session's expiry ends it now
        await self._settle()
        self._tasks.add(asyncio.get_running_loop().create_task(self.db.searcher.run_indexer()))
        app = make_app(self)
        self._runner = web.AppRunner(
            app,
            handle_signals=False,
            access_log=None,
            keepalive_timeout=self.config.connection_idle_timeout,
            shutdown_timeout=SETTLED,  # (the requests' grace is stopgrace's, set at the stop)
        )
        await self._runner.setup()
        sock, handed = listening_socket(self.home.socket)
        self._bound = not handed  # a handed socket's file is its service manager's, which keeps listening
        site = web.SockSite(self._runner, sock)
        await site.start()
        await pause_for_tests("start.listening")  # (the tests hold a start here: its stores in use, not yet done)
        if self.config.openai_listen is not None:
            try:
                await self.compat.start_tcp(*self.config.openai_listen)
            except OSError as exc:
                raise HomeError(
                    f'openai_listen = "{":".join(map(str, self.config.openai_listen))}" in '
                    f"config.toml: cannot listen there ({exc.strerror or exc})"
                ) from None
        log.info("daemon started", extra={"event": "start"})

    async def _settle(self) -> None:
        """What the daemon's first request must not see, done before the socket serves: the sessions of an
        import from a file that a crash cut short are deleted (an import is all or nothing), and sessions
        that expired while no daemon ran are ended (and deleted, with delete_expired) as the clean-up
        does it while running: with their final checkpoint, their end pushed. A session whose end a crash
        cut short before its final checkpoint gets it (finish_ends), and one whose automatic checkpoint a crash
        lost gets that (finish_marks). The key files of sessions not here,
        which a delete or an import cut short left, are deleted (delete_stray_keys), and so are the kept
        credentials of stores no session here syncs through any more."""
        for sid in await self.db.unfinished_file_imports():
            log.warning(
                "an import from a file or a fork was cut short (the daemon stopped part-way): its session is "
                "deleted; run it again",
                extra={"session": sid},
            )
            await self.ops.delete_session(sid)
        for name in self.home.remove_leftover_temp_files(self.started_at):
            log.warning("a write into the home was cut short (the daemon stopped part-way): %s deleted", name)
        for copy in cut_copies(self.home.db):  # (kept: it may hold the only copy of a database deleted)
            log.warning("%s; what to do: %s", *cut_copy_said(copy, self.home.db), extra={"event": "database_copy"})
        await openai_cut.drop_left(self)  # (the sessions OpenAI requests made, their apps never given their ids)
        await delete_stray_keys(self.db, self.syncer, self.started_at)
        await self.syncer.forget_unused_credentials()  # (those a delete or an import cut short left)
        await self.ops.finish_ends()
        await self.ops.finish_marks()
        await self.ops.expire_due()

    async def _own_head_key(self, pk: bytes) -> SigningKey | None:
        """For the mirror's drain (sync/mirror.py head_key): the key of this device's head `pk`, once the
        sync engine is up (before that: None, and the drain tries that head again later)."""
        return await self.syncer.ctx.own_head_key(pk) if self.syncer is not None else None

    def _on_change(self, event: dict) -> None:
        due = event.pop("checkpoint_due", False)  # the storage layer's note to the daemon, not the apps'
        self.events.publish(event)
        if self.ops is not None:
            self.ops.session_changed(event)
            if due:
                # an append's mark: that append's conversation; an import's: the conversation it made
                self.ops.schedule_checkpoint(event["session"], marks=event["type"] == "messages.appended")
        if self.syncer is not None and event.get("session") and event["type"] not in APPLIED_HERE:
            self.syncer.notify(event["session"])

    async def stop(self) -> None:
        log.info("daemon stopping", extra={"event": "stop"})
        deadline = time.monotonic() + STOP_BUDGET

        def left(most: float, keep: float = 0.0) -> float:
            """Seconds a part of the stop may wait: `most`, within what the deadline leaves (less `keep`)."""
            return max(0.0, min(most, deadline - keep - time.monotonic()))

        await self.answering.end_all(left(ANSWERS_AT_STOP))  # the models answering: stopped, what arrived recorded
        if self.syncer is not None:  # a `sync --wait` (end, rm, share) waiting for a store down: answered now,
            self.syncer.release_waits()  # not waited for until its timeout (the runner's cleanup waits for it)
        await self.events.shutdown(left(EVENT_STREAMS_AT_STOP))  # (waited for twice at most: then cancelled)
        for task in list(self._tasks):
            task.cancel()
        if self.ops is not None:
            await self.ops.finish_checkpoints(left(CHECKPOINTS_AT_STOP))
            self.ops.cancel()
        # The requests under way on the socket and the OpenAI endpoint, both at once: after the answers left
        # unread are hung up on (HANG_UP), each is given its grace, then cancelled and waited for as long again
        # (stopgrace.py; aiohttp's own wait after it, SETTLED, only for a handler that outlives its cancellation)
        grace = min(STOP_GRACE, left(STOP_BUDGET, AFTER_REQUESTS + HANG_UP) / 2)
        runners = [self.compat.stop(grace)]
        if self._runner is not None:
            runners.append(stop_runner(self._runner, grace))
        await asyncio.gather(*runners)
        await self.providers.close()
        if self.syncer is not None and not await self.syncer.stop(
            max(left(STOP_BUDGET, DATABASE_CLOSE), DATABASE_CLOSE)
        ):
            self.stores_hung = True
        if self.db is not None:
            await self.db.close()
        if self._lock_fd is not None:  # only the daemon holding the lock owns the socket
            try:
                # Only a file it bound: not a handed socket's (also when it refused that socket, or
                # stopped before taking it), nor a stale one, which the next start replaces.
                if self._bound:
                    os.unlink(self.home.socket)
            except FileNotFoundError:
                pass
            os.close(self._lock_fd)
            self._lock_fd = None

    def request_stop(self) -> None:
        self._stopping.set()

    async def wait_stopped(self) -> None:
        await self._stopping.wait()

    # ---------------------------------------------------------------- used by the API
    async def status(self) -> dict:
        database: dict = {"commits": self.db.c.commits}
        lost = await self.db.c.file_lost()
        if lost is not None:  # deleted, replaced, overwritten under the daemon: what and what to do, as doctor says it
            f = self.db.c.file
            database["lost"] = {"what": lost, "message": f.said(lost), "fix": f.fix(lost)}
        unread = self.db.c.file.overwritten  # no read answered (Connections.refuse_reads): no counts, no sync state
        return {
            **versions(),  # version, schema, formats: as `sessiond --version --json` says them
            "version": self.version,
            "device_id": self.db.device_id,
            "pid": os.getpid(),
            "uptime": round(time.monotonic() - self.started, 3),
            "socket": self.home.socket,
            "home": self.home.path,
            "store": shown_store(self.store_url),
            "stores": [
                {**st, "url": shown_url(st["url"]), "last_error": st["last_error"] and scrub_text(st["last_error"])}
                for st in ([] if unread else await self.syncer.store_status())
            ],
            "counts": {} if unread else await self.db.counts(),
            "database": database,
            "events": {
                "subscribers": self.events.subscribers,
                "keepalive": self.config.event_keepalive,
                "backlog": self.events.backlog,
                "held": self.events.held,
                "dropped": self.events.dropped,
            },
            "sync": {} if unread else await self.syncer.status(),
            "pushes": self.syncer.pushes.stats(),
            "openai": self.compat.status(),
            "providers": {"default": self.providers.default, "names": sorted(self.providers.all)},
        }


async def serve(
    home_path: str,
    store: str | list[str] | None = None,
    *,
    ready_fd: int | None = None,
    announce: bool = True,
    change_store: bool = False,
    as_json: bool = False,
    reset_device_key: bool = False,
    failed_hung: Callable[[BaseException], None] | None = None,
    store_from: str = "--store",
) -> None:
    """`store_from`: the options `store` was given by, named in a refusal of it. `failed_hung`: called with the
    error of a start that failed while a store hangs, to say it and end the process there (run's caller, the
    CLI)."""
    home = Home(home_path)
    home.prepare()
    config = Config.load(home.path)
    wanted = store or config.store
    setup_logging(home, foreground=True)
    try:
        offset = clock.configure()  # SESSIOND_TEST_CLOCK_FILE: the tests' clock (storage/clock.py)
    except clock.TestClockError as exc:
        raise HomeError(str(exc)) from None
    if offset is not None:
        log.warning("a test clock is set: this daemon's wall clock is %+g s off the machine's (%s)", offset, clock.ENV)
    out_of_descriptors = OutOfDescriptors()  # (an accept's EMFILE: said in the log)
    asyncio.get_running_loop().set_exception_handler(out_of_descriptors)
    daemon = Daemon(
        home,
        config,
        normalize_store_urls(wanted) if wanted else None,
        change_store=change_store,
        store_from=store_from if store else "config.toml",
        reset_device_key=reset_device_key,
    )
    try:
        await daemon.start()
    except BaseException as exc:
        await daemon.stop()
        if daemon.stores_hung and failed_hung is not None:
            # a store's thread is in a call that never returned: the exit would wait for it (asyncio.run's
            # executor, the interpreter's join), as at a stop (below). The database is closed: the caller
            # says why the start failed and ends the process
            failed_hung(HomeError(f"store: {scrub_text(str(exc))}") if isinstance(exc, StoreError) else exc)
        raise
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, daemon.request_stop)
    MemDebug.install(home.path, loop)  # SESSIOND_TRACEMALLOC: allocation sites on SIGUSR2
    if announce and as_json:  # the keys of GET /v1/status
        where = {"version": VERSION, "pid": os.getpid(), "socket": home.socket, "home": home.path}
        print(
            json.dumps({**where, "store": shown_store(daemon.store_url), "device_id": daemon.db.device_id}), flush=True
        )
    elif announce:
        print(f"sessiond {VERSION} listening on {home.socket}", flush=True)
        print(
            f"  home: {home.path}\n  store: {shown_store(daemon.store_url)}\n  device: {daemon.db.device_id}",
            flush=True,
        )
        for said in daemon.store_failures:
            print(f"  store failing: {said}", flush=True)
    if ready_fd is not None:
        os.write(ready_fd, b"ready\n")
        os.close(ready_fd)
    try:
        await daemon.wait_stopped()
    finally:
        out_of_descriptors.stopping = True
        await daemon.stop()
        if daemon.stores_hung:
            # a store's thread is in a call that never returned (a folder on a network share gone): joined at
            # the interpreter's exit, it would hold the process, and `sessiond stop` waiting for it, as long.
            # Everything else is closed (the database, the lock): the process ends here
            logging.shutdown()
            sys.stdout.flush()
            os._exit(0)


# The sync worker's threads do CPU work (encoding, sealing); a short GIL switch interval keeps the
# event loop answering apps within a fraction of a millisecond meanwhile.
SWITCH_INTERVAL = 0.0005


def tune_process() -> None:
    """What the daemon's process is set to before it serves: the allocator (malloc.py) and the GIL's
    switch interval. Benchmarks that run the daemon's parts in their own process (bench/push.py) call
    it too, so that they measure the work as the daemon does it."""
    tune_malloc()
    sys.setswitchinterval(SWITCH_INTERVAL)


def run(
    home_path: str,
    store: str | list[str] | None = None,
    *,
    ready_fd: int | None = None,
    change_store: bool = False,
    as_json: bool = False,
    reset_device_key: bool = False,
    failed_hung: Callable[[BaseException], None] | None = None,
    store_from: str = "--store",
) -> None:
    """Serve until stopped (`store_from`: the options `store` was given by). A daemon that cannot start raises
    HomeError, saying why (the CLI prints it); one that cannot start while a store hangs calls `failed_hung` with
    it instead (see serve)."""
    no_core_dumps()  # before any key is read: a crash leaves no core file holding them
    raise_fd_limit()  # every connection holds a descriptor: the soft limit up to the hard one
    tune_process()
    MemDebug.start()
    try:
        asyncio.run(
            serve(
                home_path,
                store,
                ready_fd=ready_fd,
                change_store=change_store,
                as_json=as_json,
                reset_device_key=reset_device_key,
                failed_hung=failed_hung,
                store_from=store_from,
            )
        )
    except StoreError as exc:
        raise HomeError(f"store: {scrub_text(str(exc))}") from None
