"""The sync engine's refusals (sync/share.py's ImportError_: a share, an import, a rekey, an unshare, a checkpoint's
proof) as the socket API's errors: the kind is the code, the status follows from it, and the details say the ways on
(`fix`, `api`, `owner`) and, for a store's failure, which store, its failure's class and when to retry."""

from __future__ import annotations

from ..storage.errors import SessiondError
from ..sync.errors import fix_said, store_details
from ..sync.share import ImportError_


def share_error(exc: ImportError_) -> SessiondError:
    """A sync engine's refusal as the API's error: its kind is the code, the status follows from it."""
    status = {
        "store": 503,
        "conflict": 409,
        "not_shared": 409,
        "busy": 503,
        "behind": 409,
        "members_full": 409,
    }.get(exc.kind, 422)
    if exc.fix:  # (said in the message too, for whoever reads only that: the CLI, a log)
        err = SessiondError(f"{exc}; {fix_said(exc.fix)}", fix=exc.fix)
    else:
        err = SessiondError(str(exc))
    if exc.api:  # its ways on in API terms
        err.details["api"] = exc.api
    if exc.owner:  # and those that are its owner's, in words
        err.details["owner"] = exc.owner
    if exc.reason:  # which conflict it is
        err.details["reason"] = exc.reason
    if exc.kind == "store":  # which store, its failure's class, whether and when to retry, what mends it
        err.details.update(store_details(exc))
    err.code, err.status = exc.kind, status
    return err
