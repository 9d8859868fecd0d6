"""Which store an import reads (the rule is locations.py's): the store given with --store, else this
device's own store if it holds the session's members slot, else each hint of the code that holds it;
a store counts only once the slot, signed by the code's announce key, is read from it. A store that
fails while it is asked is named as failing (with what mends it: a relay's invite, `account_fix`),
not taken for one that lacks the session.
"""

from __future__ import annotations

from ..storage.redact import shown_store
from ..stores import HeadExpired, Store, StoreError
from ..stores.bounded import bounded
from ..stores.errors import LyingServer, describe_failure, failing
from ..stores.registry import RegistryEntry, RegistryError
from .context import SyncContext
from .errors import ImportError_, needs_invites, refuses_device
from .locations import relay_account_fix
from .membersentry import expiry_hint
from .mirrorurls import same_stores
from .sharecode import ShareCode, network_of_url

# where an import names a store to look in: the API's request's field (`sessiond import` says its options instead,
# --store and --store-file, rewriting this text: cli/commands/sharing.py API_STORE)
ANOTHER_STORE = ", in the import's `store`"
IMPORT_WITH_STORE = 'POST /v1/import {"code": CODE, "store": STORE_URL}'


async def find_store(ctx: SyncContext, code: ShareCode, store_url: str | None) -> tuple[Store, RegistryEntry | None]:
    """Where the code's session is (sync/locations.py): the store asked for, else this device's own,
    else a hint; each only once the session's members slot is read from it. With the slot's entry as
    read there (None: the store did not say, or it failed its checks: read_members reads it again)."""
    sid = code.session_id
    if store_url:
        try:
            asked = ctx.open_store(store_url, missing_ok=False)  # a code makes no folders
        except StoreError as exc:
            raise ImportError_(
                "bad_store", f"cannot open the store {shown_store(store_url)}: {exc}; check the URL"
            ) from None
        held, slot, failure, fix = await _has_members(ctx, asked, code)
        if failure is not None:  # a failing store says nothing of the session: say it fails, not "absent"
            err = ImportError_("store", f"cannot look for session {sid}: {describe_failure(failure, asked.url)}", fix)
            err.failure = (failure, asked.url)
            raise needs_invites(err, [asked.url] if fix else [])
        if not held:
            raise ImportError_(
                "missing",
                f"the store {asked.url} does not hold session {sid}; check the URL{expiry_hint([asked])}",
            )
        return asked, slot
    places = code.places()
    if not places:
        return ctx.store, None  # no location (the oldest codes): this device's own store, as always
    failures: list[tuple[BaseException, str]] = []  # (the failure, the store's URL)
    fixes: list[str] = []  # what mends a failure beyond its own advice (a relay's account: its invite)
    invites: list[str] = []  # the relays among them (their URLs)
    looked: list[Store] = [ctx.store]
    held, slot, failure, _ = await _has_members(ctx, ctx.store, code)
    if held:
        return ctx.store, slot
    if failure is not None:
        failures.append((failure, ctx.store.url))
    for _network, hint in places:
        if not hint or same_stores(hint, ctx.store.url):
            continue
        try:
            hinted = ctx.open_store(hint, missing_ok=False)
        except StoreError:
            continue  # an unusable hint (a folder not here, a scheme not known)
        looked.append(hinted)
        held, slot, failure, fix = await _has_members(ctx, hinted, code)
        if held:
            return hinted, slot
        if failure is not None:
            failures.append((failure, hinted.url))
        if fix is not None:
            fixes.append(fix)
            invites.append(hinted.url)
    networks = ", ".join(dict.fromkeys(n for n, _ in places))
    hints = ", ".join(h for _, h in places if h) or "none"
    if failures:  # a store that fails may hold it: that is what to fix, not a missing session
        err = ImportError_(
            "store",
            f"cannot look for session {sid} (shared through {networks}; hints: {hints}): "
            + "; ".join(describe_failure(exc, url) for exc, url in failures)
            + "; or import again naming another store of that network that holds it"
            + ANOTHER_STORE,
            "; ".join(fixes) or None,
        )
        err.failure = failures[-1]  # (the last store asked, a hint: this device's own store holds it rarely)
        err.failures = failures  # (each one's own, in `details.stores`)
        err = needs_invites(err, invites)
        err.api = err.api or [IMPORT_WITH_STORE]  # (a relay's invites, else another store to look in)
        raise err
    err = ImportError_(
        "store_needed",
        f"session {sid} is shared through {networks}, and neither this device's store nor the code's "
        f"hints ({hints}) hold it; import again naming a store of that network that does"
        + ANOTHER_STORE
        + expiry_hint(looked),
    )
    err.api = [IMPORT_WITH_STORE]
    raise err


def account_fix(ctx: SyncContext, code: ShareCode, store: Store) -> str | None:
    """What mends a store refusing this device's credentials beyond the failure's own advice: for a relay
    the code names (not this device's own store, whose invite the daemon's start took), the invite this
    device needs, given with `import --store-file` (README); None for any other store."""
    if store is ctx.store or network_of_url(store.url) != "s5":
        return None
    if not any(network == "relay" for network, _ in code.places()):
        return None  # (an S5 portal: its accounts are not the relay's invites)
    return relay_account_fix(store.url)


async def _has_members(
    ctx: SyncContext, store: Store, code: ShareCode
) -> tuple[bool, RegistryEntry | None, BaseException | None, str | None]:
    """Whether `store` holds the session's members slot, its entry, the failure by which the store could not
    say (unreachable, timed out, credentials refused, a server error; None when it answered),
    and what mends that beyond the failure's own advice (account_fix; None otherwise).
    A slot that fails its checks (a forged or damaged entry) counts: the import then reads it and
    says what is wrong, instead of looking on."""
    try:
        entry = await bounded(store.get_head(b"\xed" + code.announce_pk), ctx.timeout)
    except (RegistryError, LyingServer, HeadExpired):  # (a network store's own head checks raise the latter)
        return True, None, None, None  # (an expired head: read_members says so)
    except (TimeoutError, StoreError, OSError) as exc:
        if failing(exc):
            fix = account_fix(ctx, code, store) if refuses_device(exc) else None
            return False, None, exc, fix
        return False, None, None, None
    return entry is not None, entry, None, None
