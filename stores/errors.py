"""The ways a network store fails, each its own class (all StoreError, so every caller that handles a
store failure handles these). Messages name the store and what to do; they never contain a token."""

from __future__ import annotations

import errno
import os
import re
import resource
import ssl

from ..storage.errors import RAISE_FILE_SIZE_LIMIT, file_size_limit, past_file_size_limit
from .base import CannotDelete, CorruptObject, ObjectMissing, StaleHead, StoreError


class StoreUnreachable(StoreError):
    """No connection could be made (refused, DNS, reset)."""


class FolderAway(StoreUnreachable):
    """A folder store's folder that is not there (a share not mounted, a folder moved or removed), not a
    folder, or empty or not a store (an empty mount point): someone must mount it or put it back, which
    waiting within a sync's timeout does not do (pushes are still tried again, in the background)."""


class AuthRefused(StoreError):
    """The server refused our credentials, after one fresh login where the store can log in."""


# What a relay (relay/accounts.py) answers (403) a login of an account its owner revoked; a refusal that
# says it is an AccountRevoked: no new invite mends it (the device's key has its account), the owner's undo does
RELAY_REVOKED = (
    "this device's account was revoked by the relay's owner (sessiond serve revoke); "
    "ask them to restore it (sessiond serve revoke --undo ID)"
)


# The words by which a relay (relay/accounts.py) refusing a registration (its registration closed, an invite
# unknown or spent) says what the device lacks: an account there, which an invite from its owner makes; a
# refusal that says them is a NoRelayAccount
RELAY_INVITE = "(sessiond serve invite)"


class NoRelayAccount(AuthRefused):
    """A relay refused this device for want of an account there (its registration closed, the invite given
    unknown or spent): an invite from the relay's owner mends it."""


class AccountRevoked(AuthRefused):
    """The relay's owner revoked this device's account (`sessiond serve revoke`): its logins are refused
    until `sessiond serve revoke --undo`."""


class TlsRefused(StoreError):
    """No secure connection could be made: the server's TLS certificate is not trusted here (self-signed,
    another host's, expired), or what answers on the port does not speak TLS. Reached, and refused by
    this device: trying again meets the same certificate."""


class PlainHttpThere(TlsRefused):
    """A URL saying https whose server answers plain HTTP on that port: no TLS there at all, not a certificate
    this device does not trust (no SSL_CERT_FILE mends it). Its URL does: its HTTPS port, or an http:// one."""


class StoreOffline(StoreError):
    """A Kubo node started with `ipfs daemon --offline`: it answers, keeps blocks, and takes records put
    with allow-offline, but refuses every routing/get (so no head can be read, nor published: a publish
    reads the head held first). Restarting it online mends it; waiting does not."""


class ObjectTooLarge(StoreError):
    """The object is larger than this store accepts."""


class FolderFileTooLarge(ObjectTooLarge):
    """A folder store's file that could not be written whole (EFBIG): past this daemon's file-size limit
    (RLIMIT_FSIZE, `limit`, which raising mends: a restart), or, `limit` None, what the file system under the
    folder takes (which another store mends). Waiting does not mend it."""

    def __init__(self, message: str, limit: int | None = None):
        super().__init__(message)
        self.limit = limit


class StoreFull(StoreError):
    """The store has no room left: the disk under a folder store is full, or its owner's quota is used up."""


class FolderDenied(StoreError):
    """A folder store's folder this daemon's user may not read or write (its permissions; or a read-only
    file system): waiting does not mend it, changing them does."""


MOVE_STORE = "move this device to another store (restart the daemon with `--store URL --change-store`)"
# MOVE_STORE's place in a failure of a session imported through a store other than this daemon's: that session
# syncs through the store it was imported from, whatever store this device uses, so only a new code moves it
IMPORTED_WAY = (
    "ask the session's owner for a new share code, through a store this device reaches, and `sessiond import` it"
    " (this session was imported through that store and syncs through it, not through this device's own store)"
)


def way_on(said: str, imported: bool) -> str:
    """A failure as said of a session: `imported` (through another store than this daemon's), its way on
    the one that fits it, not a move of this device's store, which does not move the session."""
    return said.replace(MOVE_STORE, IMPORTED_WAY) if imported else said


def folder_error(what: str, where: str, exc: OSError) -> StoreError:
    """A folder store's failed read or write in the folder `where`, as the StoreError it is: StoreFull for a
    full disk or quota, FolderAway (a StoreUnreachable) for a folder that is gone or not a folder (a share
    not mounted, a folder removed or replaced), FolderDenied for one the daemon may not use, ServerError for
    the daemon out of descriptors (tried again) and for the rest (the disk or the share under it failing: EIO, a
    stale network handle)."""
    err = exc.errno
    if err in (errno.ENOSPC, errno.EDQUOT):
        return StoreFull(
            f"{what}: the disk holding {where} is full ({exc.strerror}); free space there, or {MOVE_STORE}"
        )
    if err in (errno.ENOENT, errno.ENOTDIR):
        return FolderAway(
            f"{what}: the store folder {_gone_part(where)} is missing or not a folder; mount its disk or share, or"
            f" put the folder back, then `sessiond sync --wait`; or {MOVE_STORE}"
        )
    if err in (errno.EMFILE, errno.ENFILE):
        return ServerError(f"{what}: {out_of_descriptors(err)} in {where}; it tries again as some close")
    if err == errno.EFBIG:
        limit = file_size_limit(exc)
        if limit is not None:
            return FolderFileTooLarge(
                f"{what}: a file in {where} cannot grow past {past_file_size_limit(limit)}; {RAISE_FILE_SIZE_LIMIT},"
                f" then `sessiond sync --wait`",
                limit,
            )
        return FolderFileTooLarge(
            f"{what}: the file system holding {where} takes no file this large ({exc.strerror}); {MOVE_STORE}"
        )
    if err == errno.EROFS:
        return FolderDenied(f"{what}: {where} is on a read-only file system; mount it writable, or {MOVE_STORE}")
    if err in (errno.EACCES, errno.EPERM):
        return FolderDenied(
            f"{what}: permission denied in {where}; fix the folder's permissions (the daemon's user must be able"
            f" to read and write the store folder and every folder in it)"
        )
    return ServerError(
        f"{what}: {exc.strerror or exc} in {where}; the disk or share under it is failing: check it, then"
        f" `sessiond sync --wait`"
    )


def _gone_part(where: str) -> str:
    """The outermost folder of `where` that is not there (or is no folder), below the first one that is."""
    place = where
    while (up := os.path.dirname(place)) != place and not os.path.isdir(up):
        place = up
    return place


TLS_FIX = (
    "a store with a certificate of its own (sessiond serve --cert): start this device's daemon with "
    "SSL_CERT_FILE=/path/to/that-cert.pem (or its CA's); else check the URL (https:// to a server "
    "speaking TLS on that port)"
)


PLAIN_HTTP_FIX = (
    "the URL says https, but the server on that port answers plain HTTP: use the URL of its HTTPS port (a relay"
    " serves HTTPS with `sessiond serve --cert`), or an http:// one (s5+http://, on a network you trust only),"
    " restarting the daemon with `--store URL --change-store`"
)


OFFLINE_FIX = "restart the Kubo node online (`ipfs daemon`, without --offline), then try again"


# Failures that waiting does not mend: a retry after a backoff meets them again until someone acts (frees
# space, fixes a token, picks another store). `sessiond sync --wait` stops waiting on them.
def settled(exc: BaseException) -> bool:
    return isinstance(
        exc,
        (
            StoreFull,
            AuthRefused,
            FolderDenied,
            FolderAway,
            TlsRefused,
            ObjectTooLarge,
            ReadOnlyStore,
            LyingServer,
            StoreOffline,
            StoreRedirected,
        ),
    )


class RateLimited(StoreError):
    """429/503 that did not clear within the retries; `retry_after` is the server's last wish (s)."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


# The longest a server's Retry-After is honoured (seconds): a server asking for hours (or a clock far off
# in its HTTP-date) does not stop a device's pushes for that long; it is asked again after this.
MAX_SERVER_WAIT = 900.0


def server_wait(exc: BaseException) -> float | None:
    """How long the server asked us to wait before trying again (its Retry-After on a 429 or 503, in
    seconds or as an HTTP-date, capped at MAX_SERVER_WAIT), or None if it did not say."""
    if isinstance(exc, RateLimited) and exc.retry_after is not None:
        return max(0.0, min(exc.retry_after, MAX_SERVER_WAIT))
    return None


class ServerError(StoreError):
    """A 5xx that did not clear within the retries (with jittered backoff), or a reply we cannot use."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class ShortAnswer(ServerError):
    """The server's answer broke off: fewer bytes than its Content-Length promised (or a chunked body
    cut short), the connection closed on the rest. The server was reached and answered; its answer (or a
    proxy in front of it) is broken. Retried like a 5xx: a cut can be one bad transfer."""


class StoreTimeout(StoreError):
    """The server did not answer in time."""


class StoreRedirected(StoreError):
    """The server redirected a request where it is not followed: a write, or a request carrying this store's
    credentials, to another server (stores/http.py _followed), or round in a loop. A store that moved, or a
    proxy in front of it sending us elsewhere: waiting does not mend it, its new URL (or its operator) does."""


class SlowAnswer(StoreTimeout):
    """The server answered, but its answer was still arriving when the time was up (a slow drip: a server
    overloaded, a link this slow). Retried as a timeout; a store_timeout long enough for it mends it too."""


class ReadOnlyStore(StoreError):
    """A write to a store that can only be read (a gateway)."""


class LyingServer(StoreError):
    """The server answered something provably wrong: bytes that do not hash to what was asked, a CID
    other than the one computed here, a head that does not verify or goes back in revision. Such an
    answer is never accepted."""


class HeadRolledBack(LyingServer):
    """A head read at a lower revision than this process has seen from that store (stores/heads.py): a store that
    lies, or one its host restored from a backup (sync/verify.py says it as either). `served`: the revision read;
    `seen`: the highest one seen before (a head published again goes above it)."""

    def __init__(self, message: str, *, served: int | None = None, seen: int | None = None):
        super().__init__(message)
        self.served, self.seen = served, seen


class WrongBytes(LyingServer, CorruptObject):
    """An object's bytes do not hash to the requested digest (a CorruptObject too, for callers that
    handle damaged objects)."""

    def __init__(self, h: bytes, why: str):
        CorruptObject.__init__(self, h, why)


# -- a store that fails, told apart from what it holds ---------------------------------------------
# A store that cannot be reached, does not answer, refuses our credentials or fails on its side says
# nothing about a session: callers (import, verify, a pull, doctor) report it as the store failing,
# with its class and what to do, never as the session being absent from it or damaged in it.

_CONTENT = (CorruptObject, ObjectMissing, LyingServer, StaleHead, CannotDelete, ReadOnlyStore)


def failing(exc: BaseException) -> bool:
    """Whether `exc` is the store failing to answer (down, hung, credentials refused, a server error, a
    rate limit, full), rather than an answer about content (missing, damaged, a lie)."""
    if isinstance(exc, _CONTENT):
        return False
    return isinstance(exc, (StoreError, TimeoutError, OSError))


def failure_kind(exc: BaseException) -> str:
    """A failing store's class, as a person reads it."""
    if isinstance(exc, StoreUnreachable):
        return "unreachable"
    if isinstance(exc, SlowAnswer):
        return "answering too slowly (timed out)"
    if isinstance(exc, (StoreTimeout, TimeoutError)):
        return "not answering (timed out)"
    if isinstance(exc, AuthRefused):
        return "refusing our credentials"
    if isinstance(exc, FolderDenied):
        return "refusing access (permission denied)"
    if isinstance(exc, PlainHttpThere):
        return "answering plain HTTP where its URL says https"
    if isinstance(exc, TlsRefused):
        return "not trusted for a secure connection (TLS)"
    if isinstance(exc, RateLimited):
        return "rate-limiting us"
    if isinstance(exc, ShortAnswer):
        return "sending incomplete answers"
    if isinstance(exc, ServerError):
        return "failing with server errors"
    if isinstance(exc, StoreFull):
        return "full"
    if isinstance(exc, FolderFileTooLarge):
        return "limited in file size"
    if isinstance(exc, StoreOffline):
        return "offline (a Kubo node started with --offline)"
    if isinstance(exc, LyingServer):
        return "answering what does not verify"
    if isinstance(exc, ReadOnlyStore):
        return "read-only"
    if isinstance(exc, StoreRedirected):
        return "redirecting us elsewhere"
    if isinstance(exc, ObjectTooLarge):
        return "refusing objects this large"
    return "failing"


# A failing store's class as an app reads it: a `store` refusal's `details.failure` (README, Errors). The first
# class a failure is an instance of names it (a FolderAway is a StoreUnreachable, an AccountRevoked an AuthRefused).
FAILURE_CODES: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], str], ...] = (
    (FolderAway, "folder_away"),
    (StoreUnreachable, "unreachable"),
    ((StoreTimeout, TimeoutError), "timeout"),
    (AccountRevoked, "account_revoked"),
    (NoRelayAccount, "no_account"),
    (AuthRefused, "credentials_refused"),
    (FolderDenied, "permission_denied"),
    (TlsRefused, "tls_refused"),
    (RateLimited, "rate_limited"),
    (ShortAnswer, "short_answer"),
    (ServerError, "server_error"),
    (StoreFull, "full"),
    (FolderFileTooLarge, "file_size_limit"),
    (ObjectTooLarge, "too_large"),
    (StoreOffline, "offline"),
    (LyingServer, "lying"),
    (ReadOnlyStore, "read_only"),
    (StoreRedirected, "redirected"),
)


def failure_code(exc: BaseException) -> str:
    """A failing store's class, as an app reads it (FAILURE_CODES; "failing" for any other)."""
    return next((code for cls, code in FAILURE_CODES if isinstance(exc, cls)), "failing")


def failure_fix(exc: BaseException) -> str:
    """What to do about a failing store."""
    if isinstance(exc, FolderAway):
        return "mount the store folder's disk or share, or put the folder back, then try again"
    if isinstance(exc, StoreUnreachable):
        return "check that the store is running and its URL is right, then try again"
    if isinstance(exc, SlowAnswer):
        return (
            "the store (or the network to it) sends its answers too slowly to arrive within the store timeout: check"
            " it, or give it longer (store_timeout in config.toml, then a restart), then try again"
        )
    if isinstance(exc, (StoreTimeout, TimeoutError)):
        return (
            "check the store (it accepts connections but does not answer in time: down on its side, overloaded, or"
            " too slow for store_timeout in config.toml), then try again"
        )
    if isinstance(exc, AccountRevoked):
        return "ask the relay's owner to restore this device's account (sessiond serve revoke --undo ACCOUNT)"
    if isinstance(exc, AuthRefused):
        return "check this device's credentials for the store (its invite, token or password)"
    if isinstance(exc, FolderDenied):
        return "fix the folder's permissions (the daemon's user must read and write it), then try again"
    if isinstance(exc, PlainHttpThere):
        return PLAIN_HTTP_FIX
    if isinstance(exc, TlsRefused):
        return TLS_FIX
    if isinstance(exc, RateLimited):
        wait = server_wait(exc)
        return f"try again {f'in {wait:.0f} s' if wait is not None else 'later'}, as the store asks"
    if isinstance(exc, ShortAnswer):
        return "the store (or a proxy in front of it) cuts its answers short: try again later, or tell its operator"
    if isinstance(exc, ServerError):
        return "the store is failing on its side: try again later, or tell its operator"
    if isinstance(exc, StoreFull):
        return "free space in the store, or move to another one"
    if isinstance(exc, FolderFileTooLarge):
        if exc.limit is not None:
            return "raise the daemon's file-size limit (a restart): every file it writes is held to it"
        return "move to another store: the file system under this one takes no file this large"
    if isinstance(exc, StoreOffline):
        return OFFLINE_FIX
    if isinstance(exc, LyingServer):
        return (
            f"a store that answers what does not verify is not one to keep: {MOVE_STORE}; or have its operator check it"
        )
    if isinstance(exc, ReadOnlyStore):
        return f"this store cannot be written: {MOVE_STORE}"
    if isinstance(exc, ObjectTooLarge):
        return f"this store refuses objects this large: {MOVE_STORE}"
    if isinstance(exc, StoreRedirected):
        return f"if the store moved to where it points, {MOVE_STORE} with that URL; else have its operator check it"
    return "check the store and try again"


def connect_cause(err: BaseException | None) -> str:
    """Why a connection could not be made (aiohttp's ClientConnectorError's os_error), in the system's words: its
    errno's ("Connection refused", "No route to host"), a name lookup's own ("Name or service not known"), else
    what it says. asyncio's own text, "Connect call failed ('127.0.0.1', 9)", names the address (which the
    message names already) and not the cause; aiohttp's, "Cannot connect to host ... ssl:default", reads as TLS.
    A host of several addresses that each failed differently (IPv4 refused, IPv6 unreachable): happy eyeballs
    raises one OSError of no errno, "Multiple exceptions: [Errno 111] Connect call failed (...), [Errno 101] ...",
    said as each cause in the system's words, once each ("Connection refused; Network is unreachable")."""
    if isinstance(err, OSError) and not isinstance(err, ssl.SSLError):
        if isinstance(err.errno, int) and err.errno > 0:
            return os.strerror(err.errno)
        if err.strerror:
            return err.strerror
        said = str(err)
        causes = dict.fromkeys(os.strerror(int(n)) for n in _ERRNO.findall(said)) if said.startswith(MULTIPLE) else {}
        if causes:
            return "; ".join(causes)
    return str(err) or type(err).__name__


# how asyncio's and aiohappyeyeballs' connect combine the errors of a host's addresses, each "[Errno N] ..."
MULTIPLE = "Multiple exceptions: "
_ERRNO = re.compile(r"\[Errno ([1-9][0-9]*)\]")


def describe_failure(exc: BaseException, url: str) -> str:
    """`the store URL is <class> (<what it said>); <what to do>`."""
    said = str(exc) or ("no answer in time" if isinstance(exc, TimeoutError) else type(exc).__name__)
    return f"the store {url} is {failure_kind(exc)} ({said}); {failure_fix(exc)}"


def out_of_descriptors(err: int) -> str:
    """The daemon out of file descriptors (`err`: EMFILE, its own limit; ENFILE, the system's), said with the
    limit and what to do: the store's disk is not at fault."""
    if err == errno.ENFILE:
        whose = "the system's open files are all in use"
    else:
        whose = f"this daemon's limit is {resource.getrlimit(resource.RLIMIT_NOFILE)[0]} open files"
    return (
        f"the daemon is out of file descriptors ({whose}; close idle clients and event streams, or raise the limit"
        f" it is started with: `ulimit -n`, or LimitNOFILE= in its service unit)"
    )
