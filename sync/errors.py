"""The errors of the sync engine, and how a failure is told to the user."""

from __future__ import annotations

import asyncio
import json
import os

from ..storage.errors import IMPORT_HERE, sync_wait
from ..storage.redact import scrub_text, shown_store
from ..stores.errors import (
    MOVE_STORE,
    AccountRevoked,
    AuthRefused,
    NoRelayAccount,
    RateLimited,
    describe_failure,
    failure_code,
    failure_fix,
    server_wait,
    settled,
)
from .locations import relay_invite_ways
from .mirror import MirrorFailed


def crash_point(name: str) -> None:
    """A fault hook for the crash tests: SESSIOND_CRASH_AT=name makes the daemon die here at once, as
    under kill -9 (no clean-up, no flush)."""
    if os.environ.get("SESSIOND_CRASH_AT") == name:
        os._exit(137)


class SyncError(Exception):
    """A push that must not go on (a torn local log, a head in the store this device did not write)."""


class ImportError_(Exception):
    """An import or pull that cannot be completed; `kind` names the problem. `fix`: what to do about it, when
    the message's own advice is not the whole of it (a relay refusing a device with no account there: the
    invite it needs), passed on as the API error's `details.fix` and said at the message's end. `reason`: which
    `conflict` (or `members_full`) it is (api/errors.py REASONS), passed on as the error's `details.reason`; `api`: its
    ways on in API terms (`details.api`), set here or later. `fork`: no share code of the session gets past what
    refused it, the way on being a new session, a fork shared anew (rekeyproof.fork_way, which the message says):
    doctor says so, not its kind's way (a pull's failure noted so: SyncContext.pull_forks)."""

    def __init__(
        self,
        kind: str,
        message: str,
        fix: str | None = None,
        *,
        refused: bool = False,
        no_account: bool = False,
        reason: str | None = None,
        api: list[str] | None = None,
        fork: bool = False,
    ):
        super().__init__(message)
        self.kind = kind
        self.fix = fix
        self.reason = reason
        self.fork = fork
        self.refused = refused  # the store refused this device's credentials (not a revoked account)
        self.no_account = no_account  # a relay that refused it for want of an account there (NoRelayAccount)
        self.api = api  # the ways on in API terms, passed on as the error's `details.api`
        # the ways on that are no request to this daemon, its owner's (an upgrade, another home, a relay's invite
        # asked for), in words: passed on as the error's `details.owner`
        self.owner: list[str] | None = None
        self.log_of: tuple[str, str | None] | None = None  # (session, writer): a log found bad (bad_log)
        # (the store's own failure, the store's URL): a store that failed to answer (store_failed), whose
        # class says what mends it (daemon/doctor_fixes.settled_fix)
        self.failure: tuple[BaseException, str] | None = None
        # every store asked that failed so, in the order asked, `failure` the last (an import trying the code's
        # hints: findstore.py); empty: `failure` alone. Each told apart in `details.stores` (store_details)
        self.failures: list[tuple[BaseException, str]] = []
        self.owner_of: dict[str, list[str]] = {}  # a store's own `owner`, beyond its failure's (a relay's invite)


# what mends a log this device cannot read because a newer sessiond wrote it (sync/pages.py NewerFormat)
NEWER_FIX = "upgrade sessiond on this device (pip install --upgrade sessiond), then `sessiond sync` takes it"

# which writer puts back a frozen log whose manifest the store lost (sync/frozenrepair.py, new in 0.30.0): one that
# took it whole as 0.30.0 or later (frozen_taken, migration 27); a writer on an earlier sessiond never does, and one
# upgraded from it only if its first pull since read the log, before the loss (docs/FORMATS.md §6)
FROZEN_PUTTER = (
    "a writer of the session running sessiond 0.30.0 or later that took the log a rekey froze whole before it was"
    " lost (the device that made the rekey, or another writer that pulled since; an earlier one does not put it"
    " back, nor one upgraded only after the loss)"
)


def newer_format(what: str, exc: BaseException) -> ImportError_:
    """`what` (a member's log, the members slot) found in a format version a newer sessiond wrote (`exc`:
    pages.NewerFormat): not damage, and nothing its writer or the store has to mend; this device upgrades."""
    err = ImportError_("newer", f"{what} cannot be read here: {exc}; nothing of it was taken", NEWER_FIX)
    err.owner = [NEWER_FIX]
    return err


# what mends a share code of a version past this sessiond's (its owner's way: details.owner)
NEWER_CODE_FIX = "upgrade sessiond on this device (pip install --upgrade sessiond), then import the code again"


def needs_invites(exc: ImportError_, urls: list[str]) -> ImportError_:
    """`exc`, refused by the relays at `urls` for want of an account there: the invites asked of their owners
    (the daemon's owner's to do: `details.owner`), and the import again with one (`details.api`)."""
    if urls:
        ways = [relay_invite_ways(u) for u in urls]
        exc.owner = [owner for owner, _ in ways]
        exc.api = [api for _, api in ways]
        exc.owner_of = {u: [owner] for u, (owner, _) in zip(urls, ways)}
    return exc


def log_fix(sid: str, device: str | None, *, importing: bool = False) -> str:
    """What mends a member's log of session `sid` that a read found damaged, forged or rolled back in the
    store (`device`: its writer; None: the members slot, which a writer writes again): `verify` names what
    is wrong, and on the device that wrote it `verify` and `sync --wait` push it again (verify marks its own
    log for repair); then, `importing`, the import again. A store serving forged or old heads is not one to
    keep. The command first, as doctor's fixes are."""
    who, what = (f"device {device}", "its log") if device else ("a writer of the session", "the members slot")
    again = f"`sessiond verify {sid} && sessiond sync --wait {sid}` on {who} pushes {what} again"
    keep = f"a store serving forged or old heads is not one to keep: {MOVE_STORE}"
    if importing:
        return f"sessiond import < code.txt  # again once {again}; {keep}"
    return f"sessiond verify {sid}  # names what is wrong; {again}; {keep}"


def log_fix_api(sid: str, device: str | None, *, importing: bool = False) -> list[str]:
    """log_fix's ways in API terms (`details.api`): on the device that wrote it, verify (which marks its own log
    for repair) then sync, pushing it again; then, `importing`, the import again; else verify here first,
    which names what is wrong."""
    who = f"device {device}" if device else "a writer of the session"
    push = f"POST /v1/verify {json.dumps({'session': sid})}, then {sync_wait(sid)} on {who}"
    if importing:
        return [f"{push}, then {IMPORT_HERE}"]
    return [f"POST /v1/verify {json.dumps({'session': sid})}", push]


def fix_said(fix: str) -> str:
    """A fix as a message's last words: one written doctor's way, `sessiond COMMAND  # what it does` (log_fix),
    with the command quoted instead (`sessiond COMMAND` what it does), as every command in a message is, so
    that the CLI gives it this home's --home (cli/output.for_home)."""
    command, sep, note = fix.partition("  # ")
    return f"`{command}` {note}" if sep and command.startswith("sessiond ") else fix


def bad_log(exc: ImportError_, sid: str, device: str | None) -> ImportError_:
    """`exc`, a log of session `sid` by `device` (None: its members slot) found damaged, forged or rolled
    back in the store, given what mends it (log_fix; an import says it as an import: Importer)."""
    exc.fix = log_fix(sid, device)
    exc.api = log_fix_api(sid, device)
    exc.log_of = (sid, device)
    return exc


def refuses_device(exc: BaseException) -> bool:
    """Whether a store's failure is its refusing this device's credentials, after a fresh login: on a relay,
    a device with no account there (an account its owner revoked is not that: their undo mends it)."""
    return isinstance(exc, AuthRefused) and not isinstance(exc, AccountRevoked)


def store_failed(exc: BaseException, url: str, doing: str | None = None) -> ImportError_:
    """A store that failed to answer (stores.errors.failing) as the import's or pull's error, kind `store`;
    `doing`: what it failed, said first ("cannot share S")."""
    said = describe_failure(exc, url)
    err = ImportError_(
        "store",
        f"{doing}: {said}" if doing else said,
        refused=refuses_device(exc),
        no_account=isinstance(exc, NoRelayAccount),
    )
    err.failure = (exc, url)
    return err


def store_details(exc: ImportError_) -> dict:
    """What a `store` refusal tells an app beside its message, from the store's own failure (`exc.failure`;
    none: {}): `store`, the store (shown without credentials); `failure`, its class (stores.errors.FAILURE_CODES);
    `retry`, whether the same request may succeed later with no one acting (waiting mends it); `retry_after`,
    the seconds the store asked to be left alone, when it said; `owner`, what mends it in words, someone's to do
    (the store's or the daemon's owner): every class but a rate limit, which the app waits out alone. An `owner`
    the error carries already (a relay's invite) is kept. `stores`: the same for each store asked that failed,
    in the order asked (an import trying a code's hints asks several, a mirror's stores are each named; one store:
    it alone), the top-level fields being the last one's."""
    if exc.failure is None:
        return {}
    failure, url = exc.failure
    details = _one_store(failure, url, exc.owner)
    each = _each_store(exc)  # (the error's own `owner` is the one store's when there is one, else each one's own)
    details["stores"] = [
        _one_store(f, u, exc.owner_of.get(u) or (exc.owner if len(each) == 1 else None)) for f, u in each
    ]
    return details


def _each_store(exc: ImportError_) -> list[tuple[BaseException, str]]:
    """Each store's failure in a `store` refusal, in the order asked: a mirror's (MirrorFailed) as its stores'."""
    out: list[tuple[BaseException, str]] = []
    for failure, url in exc.failures or ([exc.failure] if exc.failure else []):
        out += failure.failures if isinstance(failure, MirrorFailed) else [(failure, url)]
    return out


def _one_store(failure: BaseException, url: str, owner: list[str] | None) -> dict:
    """store_details' fields for one store's failure (`owner`: what mends it beyond its class's own advice)."""
    details: dict = {"store": shown_store(url), "failure": failure_code(failure), "retry": not settled(failure)}
    wait = server_wait(failure)
    if wait is not None:
        details["retry_after"] = round(wait, 1)
    if not isinstance(failure, RateLimited):
        details["owner"] = owner or [failure_fix(failure)]
    return details


def no_relay_account(exc: BaseException) -> bool:
    """Whether a failure is a relay refusing this device for want of an account there (stores' NoRelayAccount,
    or an import's or pull's error made of one)."""
    return isinstance(exc, NoRelayAccount) or bool(getattr(exc, "no_account", False))


def describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "the store did not answer in time"
    return scrub_text(str(exc)) or type(exc).__name__  # a store URL in it shown without its credentials
