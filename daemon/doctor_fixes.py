"""The fix `sessiond doctor` prints for a store's failure, by its class (stores/errors.py): waiting mends
a store that is down, hung, failing on its side or rate-limiting (`sync --wait` once it answers), but not
one that is full, refuses this device's credentials, has a TLS certificate this device does not trust,
answers what does not verify, runs offline (a Kubo node started with --offline), redirects elsewhere, or
cannot take these writes at all: `sync --wait` is refused again at once by those, so each gets what does mend it."""

from __future__ import annotations

import os
import pwd
import re
import shlex

from ..stores.errors import (
    AccountRevoked,
    AuthRefused,
    FolderDenied,
    FolderFileTooLarge,
    LyingServer,
    ObjectTooLarge,
    PlainHttpThere,
    ReadOnlyStore,
    StoreFull,
    StoreOffline,
    StoreRedirected,
    TlsRefused,
)
from ..sync import rekeywalk
from ..sync.errors import FROZEN_PUTTER, NEWER_FIX
from ..sync.rekeyproof import fork_way

MOVE = "sessiond stop && sessiond start --store URL --change-store"
# a command, but one quoted for other devices: `sessiond sync --wait S` on device(s) D (as cli/output.py's rule)
_COMMAND = re.compile(r"\bsessiond ([a-z][a-z-]*)(?![^`]*` on (?!this\b))")


def for_home(fix: str | None, home: str) -> str | None:
    """`fix` with `--home HOME` after each `sessiond COMMAND` in it, so that it is the exact command for this
    home: pasted as it was, a fix for a daemon started with --home acted on the default home's daemon. Quoted in
    backticks too (a database lost under the daemon: "Stop the daemon (`sessiond stop`)"), but not one quoted
    for other devices ("`sessiond sync --wait S` on device(s) D"), nor the relay's commands (`sessiond serve`:
    they run on the relay's machine); a fix naming its home already is left as it is."""
    if fix is None or "--home" in fix:
        return fix
    home_arg = f"--home {shlex.quote(home)}"
    return _COMMAND.sub(lambda m: m.group() if m.group(1) == "serve" else f"{m.group()} {home_arg}", fix)


_ANEW_WHY = "a session imported through a store syncs through it, whatever store this device uses"


def _import_anew(through: str) -> str:
    """The way off a store that sessions were imported through (not this device's own, which MOVE moves):
    a new share code through another store, imported."""
    code = "a new share code of the session from its owner"
    return f"sessiond import < code.txt  # {code}, through {through}: {_ANEW_WHY}"


def settled_fix(exc: BaseException | None, url: str, home: str, *, own: bool = True) -> str | None:
    """What mends `exc`, a failure of the store at `url` that waiting does not mend; None for any other
    (the caller's `sync --wait`, once the store answers again). `own`: this daemon's store, else one
    sessions were imported through, which a move of this device's store (MOVE) does not leave."""
    if isinstance(exc, StoreFull):
        where = "its owner raises this device's --quota (sessiond serve)" if url.startswith("s5+") else "free space"
        away = (
            f"move this device to another store: {MOVE}"
            if own
            else "import a new share code of the session from its owner, through another store (sessiond import <"
            f" code.txt): {_ANEW_WHY}"
        )
        gc = "sessiond gc  # frees the objects this device's logs let go"
        return f"{gc}; if the store is still full: {where}, or {away}"
    if isinstance(exc, AccountRevoked):
        return (
            "sessiond serve revoke --undo ACCOUNT --data DIR  # by the relay's owner, on its server: this"
            " device's account there was revoked (ACCOUNT: its label or id in sessiond serve accounts);"
            " then sessiond sync --wait"
        )
    if isinstance(exc, AuthRefused):
        if url.startswith("s5+"):
            return (
                "sessiond stop && sessiond start --store-file FILE  # FILE holding the store's URL with a new"
                " invite in its user part (on a relay: sessiond serve invite), as on a first start"
            )
        kubo, pinning = os.path.join(home, "kubo-auth"), os.path.join(home, "pinning-token")
        return (
            f"chmod 600 {kubo}  # after writing the Kubo RPC's credentials in it (Bearer TOKEN, Basic B64 or"
            f" user:password); a pinning service's token goes in {pinning}; then sessiond sync --wait"
        )
    if isinstance(exc, FolderDenied):
        path = shlex.quote(url[len("file://") :] if url.startswith("file://") else url)
        user = shlex.quote(pwd.getpwuid(os.getuid()).pw_name)
        return (
            f"chown -R {user} {path} && chmod -R u+rwX {path}  # (as root or the folder's owner) the daemon's user"
            " must read and write the store folder and every folder in it; then sessiond sync --wait"
        )
    if isinstance(exc, PlainHttpThere):
        if not own:
            return _import_anew("a URL of the store that works (this one says https; its server answers plain HTTP)")
        return (
            f"{MOVE}  # URL: the store's HTTPS port (a relay serves HTTPS with sessiond serve --cert), or its http://"
            " one on a network you trust: the server on this port answers plain HTTP, and the URL says https"
        )
    if isinstance(exc, TlsRefused):
        return (
            "sessiond stop && SSL_CERT_FILE=/path/to/its-cert.pem sessiond start  # the store's own certificate"
            " (sessiond serve --cert) or its CA's; or check the URL (https:// to a server speaking TLS there)"
        )
    if isinstance(exc, StoreOffline):
        return (
            "ipfs shutdown && ipfs daemon  # the Kubo node runs with --offline, which refuses to read IPNS records"
            " (every head is one): start it online; then sessiond sync --wait"
        )
    if isinstance(exc, LyingServer):
        if not own:
            return _import_anew("a store you trust (this one answers what does not verify; or ask its operator)")
        return f"{MOVE}  # to a store you trust: this one answers what does not verify; or have its operator check it"
    if isinstance(exc, FolderFileTooLarge) and exc.limit is not None:  # the daemon's limit: any store meets it
        return (
            "sessiond stop && ulimit -f unlimited && sessiond start  # in the shell that starts the daemon (or"
            " LimitFSIZE=infinity in its service unit): past its file-size limit, no store's file, nor its"
            " database, can grow; then sessiond sync --wait"
        )
    if isinstance(exc, StoreRedirected):
        if not own:
            return _import_anew("the store's new URL, if it moved (this one redirects this device's requests)")
        return (
            f"{MOVE}  # URL: where the store redirects to, if it moved there; or have its operator check it (a proxy"
            " in front of it sending this device's requests elsewhere)"
        )
    if isinstance(exc, (ObjectTooLarge, ReadOnlyStore)):
        return f"{MOVE}  # a store that takes this device's writes" if own else _import_anew("a store that takes them")
    return None


def relay_account(said: str, sid: str | None = None) -> str:
    """What mends a relay refusing this device for want of an account there, a relay a session was imported
    through (not this device's own store): `said`, the import's fix (sync/locations.relay_account_fix), with
    the command it names first. `sid`: the session whose pull failed (None: every session shared through it)."""
    codes = f"a share code of {sid}" if sid else "a share code of each session shared through it"
    return (
        f"sessiond import --store-file FILE < code.txt  # code.txt: {codes} (the one imported before will do); {said}"
    )


def lying_head_fix(url: str, *, own: bool, rolled_back: bool = False, sid: str = "") -> str:
    """What mends a store that served this device's head of a session forged or rolled back again, verified
    after a sync pushed past it (verify's `store_lies`): not another sync, which it lies about as well, but
    another store. `rolled_back`: a head rolled back, which a store its host restored from a backup again since
    serves too: then said as either, with a sync of session `sid` for the restore."""
    if rolled_back:
        said = (
            f"the store {url} served this device's head rolled back again, after a sync pushed past it: it lies, or"
            f" its host restored it from a backup again since; if the host did restore it: sessiond sync --wait {sid}"
        )
    else:
        said = f"the store {url} served this device's head forged again, after a sync: it lies"
    if not own:
        return _import_anew(f"a store you trust ({said})")
    return f"{MOVE}  # to a store you trust: {said}" + ("" if rolled_back else ", and pushing again does not mend that")


def pull_fix(kind: str | None, sid: str, *, relay_fix: str | None = None, own: bool = True, fork: bool = False) -> str:
    """What mends a session's failed pull, by the failure's kind (sync/errors.ImportError_); `relay_fix`: the
    failure's own fix when it is a relay refusing this device for want of an account there (relay_account);
    `own`: the session syncs through this daemon's store, not one it was imported through (settled_fix); `fork`:
    no share code of the session gets past the failure (the error's `fork`, Syncer.pull_failure_forks), whatever
    its kind: the way on is a new session, shared anew."""
    if relay_fix is not None:
        return relay_account(relay_fix, sid)
    if fork:  # (a rekey kept unfinished on a mirror, a writer it drops over it: sync/rekeykept.py)
        return (
            f"sessiond fork {sid} --at LAST  # LAST: the id `sessiond log {sid} --last 1` shows; then `sessiond share"
            f" NEW --write` (NEW: the fork's id) for each device to keep: no share code of {sid} gets past the"
            " rekey notice in its members slot (each one names that slot), so a new one imported does not mend it"
        )
    if kind == "revoked":
        return (
            f"sessiond import < code.txt  # a new share code of {sid} from a device that kept it: this device was"
            " left out of a rekey, and the import takes it over the copy here"
        )
    if kind == "rekey_conflict":
        return (
            f"sessiond import < code.txt  # a new share code of {sid} from a device you trust: two devices claim"
            " to have rekeyed it"
        )
    if kind == "rekey_unconfirmed" and rekeywalk.under_way(sid):  # (not checked yet: each pull goes on with it)
        return (
            f"sessiond sync --wait {sid}  # the rekeying device's older manifests are being read for its claim of"
            f" the rekey, {rekeywalk.WALK_SECONDS:g} s a pull: each pull goes on where the last stopped, and takes it"
            " once found"
        )
    if kind == "rekey_unconfirmed":
        # (a writer's notice naming an author that does not claim it: it stays, and no new share code helps)
        return f"sessiond sync --wait {sid}  # the rekeying device's head may not be in the store yet; " + fork_way(sid)
    if kind == "newer":  # a log a newer sessiond wrote: this device is the one behind
        return NEWER_FIX
    if kind == "frozen_lost":  # a frozen log's manifest gone: a writer that holds the log puts it back
        return f"sessiond sync --wait {sid}  # on {FROZEN_PUTTER}: it puts the lost log back"
    if kind in ("forged", "replayed", "damaged", "invalid", "malformed"):
        keep = MOVE if own else "a new share code of it through a store you trust, imported"
        keep += "" if own else " (sessiond import < code.txt)"
        return (
            f"sessiond verify {sid}  # names what is wrong; a store serving forged or old heads is not one to keep:"
            f" {keep}"
        )
    return f"sessiond sync --wait {sid}"
