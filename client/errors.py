"""What the client raises: `ClientError` and its kinds, `DaemonNotRunning` (nothing answers on the socket),
`DaemonNotAnswering` (something took the connection and answered nothing in time) and `ApiError` (the daemon
answered with an error, as the API's error shape describes it)."""

from __future__ import annotations

import json
import re
import shlex
from typing import TYPE_CHECKING, Any, TypeVar, cast

from ..api.locate import HomeError

if TYPE_CHECKING:
    from ..api.errors import Reason

E = TypeVar("E", bound=BaseException)
UNKNOWN = "; the request may or may not have been done"  # what an error says of an outcome it does not know


class ClientError(Exception):
    """`done_unknown`: the request may have changed something, and whether the daemon did it is not known (its
    connection broke, or no answer came in time). `idempotency_key`: such a request's Idempotency-Key (an
    append's or a question's, given or made by the client): sent again with it, it is done once (keyed)."""

    done_unknown = False
    idempotency_key: str | None = None
    unsure: str | None = None  # with an idempotency_key: the message up to its "send it again with ..." (keyed)


class DaemonNotRunning(ClientError):
    def __init__(self, path: str, why: str = "", home: str | None = None):
        """`home`: the home to name in the commands that start a daemon, if not the default one."""
        flag = f" --home {shlex.quote(home)}" if home else ""
        super().__init__(
            f"no sessiond daemon answers on {path}{f' ({why})' if why else ''}; "
            f"start one with `sessiond start{flag}` (background) or `sessiond daemon{flag}` (foreground)"
        )
        self.path = path


class DaemonNotAnswering(ClientError):
    """What listens on the socket took the connection but answered nothing within the timeout: a daemon stuck
    (or stopped), or busier than the timeout allows. A request that may have changed something (not a GET)
    may or may not have been done: the message says to check before repeating it."""

    def __init__(self, path: str, seconds: float, writes: bool = False):
        """`writes`: the request may change something (an append, a POST): whether it was done is not known."""
        unknown = f"{UNKNOWN}: check it before repeating it" if writes else ""
        super().__init__(f"the daemon on {path} did not answer within {seconds:g} s{unknown}")
        self.path = path
        self.seconds = seconds
        self.done_unknown = writes


def writes(method: str, path: str) -> bool:
    """Whether a request may change something: any but a GET or HEAD, and an append on the append stream (a GET
    /v1/appends, whose frames are appends)."""
    return method not in ("GET", "HEAD") or path.startswith("/v1/appends")


class UnsafeSocket(ClientError, HomeError):
    """The client will not connect: the socket of a long home, outside it (under the runtime directory),
    is in a folder another local user could have made or could write to, so what answers there might be
    theirs, not the daemon; or no such folder can be named. The message says what to fix. Also a HomeError,
    as the daemon refuses the same folder."""


class ApiError(ClientError):
    def __init__(self, status: int, code: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}

    @property
    def answer(self) -> dict | None:
        """The model's answer a question's refusal carries when the daemon could not record it (the session
        ended, deleted or revoked while the model answered): the message it would have been, without an id
        (`details.answer`); None for any other error."""
        answer = self.details.get("answer")
        return answer if isinstance(answer, dict) else None

    @property
    def reason(self) -> Reason | None:
        """Which refusal a 409 is (`details.reason`), of the codes that are several: a `conflict`'s "exists",
        "case_twin", "paused", "ended", "read_only", ...; a `context_overflow`'s "compaction_off" (compacting makes
        room) or another; a `no_provider`'s, an `expired`'s, a `members_full`'s (sessiond.api.errors.REASONS says
        each, by code); None for any other error. A newer daemon may answer a reason not listed there: take it as
        the code's refusal of no known reason."""
        reason = self.details.get("reason")
        return cast("Reason", reason) if self.status == 409 and isinstance(reason, str) else None


def raise_for(status: int, data: Any) -> None:
    """Raise the ApiError an answer carries (an HTTP status of 400 or more); nothing otherwise."""
    if status >= 400:
        err = data.get("error") if isinstance(data, dict) else None
        err = err if isinstance(err, dict) else {}  # an answer of another shape: its status alone
        raise ApiError(status, err.get("code", "http_error"), err.get("message", f"HTTP {status}"), err.get("details"))


def answer_of(status: int, raw: bytes) -> Any:
    """An answer's JSON, or the ApiError it carries."""
    try:
        data = json.loads(raw) if raw else None
    except ValueError:
        if status >= 400:  # refused by the HTTP server before sessiond read it (a request line or header over
            # 8 KiB: an id, a query parameter or a header value too long), with a plain-text reason
            text = " ".join(raw.decode("utf-8", "replace").split())[:500]
            if text.startswith("Got more than"):  # aiohttp's line too long: "... bytes when reading: bytearray(b'...')"
                what = re.sub(r"bytearray\(b'(.*)'\)\.?$", r"\1", text)
                raise ApiError(
                    status,
                    "http_error",
                    f"the daemon refused the request (HTTP {status}): its request line or a header is longer than"
                    f" the 8 KiB the daemon reads: an id, a query parameter (a search's words, a filter) or a header"
                    f" value given is too long; shorten it ({what})",
                ) from None
            raise ApiError(status, "http_error", f"the daemon refused the request (HTTP {status}): {text}") from None
        raise ClientError(f"the daemon sent a reply that is not JSON (HTTP {status})") from None
    raise_for(status, data)
    return data


def lost(method: str, path: str) -> ClientError:
    """The error for a request whose connection broke before an answer: one that may change something may or
    may not have been done; a read (a stream's GET) changed nothing."""
    if not writes(method, path):
        return ClientError(
            f"the connection to the daemon broke before it answered {method} {path}; nothing was changed: the"
            " daemon may have stopped or restarted; call it again"
        )
    exc = ClientError(
        f"the connection to the daemon broke before it answered {method} {path}{UNKNOWN}: check (e.g. `sessiond ls`, "
        "`sessiond show`) before repeating it"
    )
    exc.done_unknown = True
    return exc


def closed_during(method: str, path: str, key: str | None) -> ClientError:
    """The error of a call whose connection the app's own close() closed before the answer (from a signal
    handler of the thread making the call: Client.close). A request that may change something may have been
    done: sent again with its key (`key`, named: keyed), it is done once."""
    what = f"close() was called during {method} {path}: its connection was closed before the daemon answered"
    if not writes(method, path):
        return ClientError(f"{what}; nothing was changed: call it again")
    if key is None:
        exc = ClientError(f"{what}{UNKNOWN}: check (e.g. `sessiond ls`, `sessiond show`) before repeating it")
    else:
        exc = ClientError(what)
    exc.done_unknown = True
    return keyed(exc, key, False)


def keyed(exc: E, key: str | None, retried: bool) -> E:
    """`exc`, the error of a request carrying Idempotency-Key `key` (None: a read, returned as it is): one
    `retried` after its first try's connection broke before the answer, or whose own outcome is unknown
    (a timeout), may have been done by the daemon. Says so and names the key, with which the app sends it again
    once the daemon answers: it is done once (an append answered with its first result, a question asked
    once), though the app never chose a key itself."""
    if key is None or not isinstance(exc, ClientError) or not (retried or exc.done_unknown):
        return exc
    err: ClientError = exc
    again = f"send it again with idempotency_key={key!r}, and it is done once"
    if isinstance(exc, DaemonNotAnswering) and not retried:
        late = f"the daemon on {exc.path} did not answer within {exc.seconds:g} s"
        text = f"{late}; the request may or may not have been done: {again}"
    else:
        before = " (sent before, its connection broke with no answer)" if retried else ""
        said = str(err).split(UNKNOWN, 1)[0]  # (its own "check before repeating it" replaced by the key's words)
        text = f"{said}; the request{before} may or may not have been done: {again}"
    err.args = (text,)
    err.done_unknown = True
    err.idempotency_key = key
    err.unsure = text[: -len(again)]  # the same words without the Python call (the CLI says its own: cli/errors.py)
    return exc
