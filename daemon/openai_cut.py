"""The error event that ends an OpenAI-endpoint stream cut mid-answer (openai_compat.py): by the provider's
failure, or by the daemon's stop; and the answer to a request the stop cut before its answer (`answer_stopped`).
OpenAI sends `data: {"error": {...}}` mid-stream, which its SDKs raise as APIError (the `openai` package's
`Stream`: an event carrying "error"), its `code` and its fields in the error's `body`; so the app learns what the
session kept of the answer and the way on, not only that the connection broke."""

from __future__ import annotations

import logging
from typing import NamedTuple

from aiohttp import web

from ..storage.errors import SessiondError
from .answering import STOP_CUT
from .answers import left
from .openai_names import SESSION_HEADER, named

log = logging.getLogger("sessiond.openai")

RETRY = "the same request"


class Made(NamedTuple):
    """The session an OpenAI request made (no X-Sessiond-Session), as its deletion knows it (drop_made)."""

    lamports: tuple[int, int]  # first and last, of the request's messages recorded there
    request: web.Request  # the request (another's question to its model under way keeps it)
    body: bytes  # its body, and the chat its question is in: a session kept, its retry goes on there (openai_retries)
    chat: str


def way_on(message: str, stored: dict | None, made: str | None, *, once: str = "", dropped: bool = False) -> dict:
    """The error fields of an answer cut mid-stream (`message`: why) that name the way on: the part that
    arrived, kept (`stored`, marked interrupted; None: nothing of the answer arrived), and the retry. The same
    request again matches the history the session stores (openai_history.py): its question is not recorded
    twice, and the model's new answer follows the kept part, as `sessiond ask --again` answers after it.
    `made`: the session this request made, which the retry must name (without it, another is made); `once`:
    when to retry, if not at once; `dropped`: the session the request made was deleted, nothing of the answer kept."""
    kept = (
        f"what arrived ({len(stored['content'])} characters) is recorded as message {stored['id']}, marked interrupted"
        if stored is not None
        else "nothing of the answer was recorded"
    )
    if dropped:
        kept += ", and no session was kept (the one this request made is deleted, with its question)"
    named = "" if made is None else f" with the header {SESSION_HEADER}: {made} (the session this request made)"
    said = f"{message}; {kept}: send the same request again{once}{named} to have the model answer anew (its"
    said += " messages are not recorded twice)"
    retry = RETRY if made is None else f"{RETRY}, with the header {SESSION_HEADER}: {made}"
    return {
        "message": said,
        "retry": retry,
        **({"message_id": stored["id"], "kept_chars": len(stored["content"])} if stored is not None else {}),
        **({"session": made} if made is not None else {}),
    }


def stopped(stored: dict | None, made: str | None, *, dropped: bool = False) -> dict:
    """The error of a stream the daemon's stop cut (`stopping`, as the socket API's refusals the stop causes):
    what was kept and the retry once the daemon runs again (`dropped`: way_on's)."""
    fields = way_on(STOP_CUT, stored, made, once=" once the daemon runs again", dropped=dropped)
    return {"message": fields.pop("message"), "type": "api_error", "param": None, "code": "stopping", **fields}


async def answer_stopped(d, plan, made: Made | None) -> web.Response:
    """The answer to an app whose model the daemon's stop stopped before its answer (nothing of it recorded, the
    question kept): 503 `stopping`, which the SDKs raise and, told so, do not retry against a daemon gone. A session
    this request made is deleted, with its question (`drop_made`), as on a provider's failure (openai_compat's
    `_failed`). `made`: drop_made's."""
    dropped = made is not None and await drop_made(d, plan.sid, made)
    error = stopped(None, plan.sid if made is not None and not dropped else None, dropped=dropped)
    headers = {**named(None if dropped else plan.sid, plan.chat), "x-should-retry": "false"}
    return web.json_response({"error": error}, status=503, headers=headers)


async def answer_left(d, plan, made: Made | None) -> web.Response:
    """The answer to an app gone before its model's answer (its SDK's timeout, whose retry is the same request with
    no session's header: it never had the id), which nobody reads: a session this request made is deleted
    (drop_made), so that the retries do not leave one holding the question alone each."""
    if made is not None:
        await drop_made(d, plan.sid, made)
    return left(plan)


async def drop_made(d, sid: str, made: Made) -> bool:
    """Delete the session a request made (holding its question alone), nothing of the answer kept (the daemon's
    stop, the provider's failure): the app's retry is the same request, as an SDK sends it (its own retry of a
    connection the stop closed, too), without the session's header, which makes another; so one session holds the
    question once, none holds it alone. Only if nothing else was written to it (`made`: the lamports of the request's
    messages; a note before them too, written while the question was sent on), no other question to its model is
    under way (sent on, its question not recorded yet: its answer would be refused, the session gone), and it was
    not shared: its id is
    another app's once known (`sessiond ls`, the session.created event, a stream's header), and what that app wrote
    there is not deleted with it. Whether it was deleted (if not, it is kept, and named for
    the retry; an SDK's retry, which reads no such name, goes on in it all the same: openai_retries.py)."""
    try:
        deleted = await d.ops.delete_session(
            sid, holding_only=made.lamports, busy=lambda s: d.answering.busy(s, but=made.request)
        )
    except SessiondError as exc:
        log.warning("the session an OpenAI request made is kept: %s", exc.message, extra={"session": sid})
        deleted = False
    else:
        if deleted is False:
            log.info(
                "the session an OpenAI request made is kept: written to, or asked, meanwhile", extra={"session": sid}
            )
    if deleted is False:  # the SDK's retry of the request, naming no session still, goes on in it (not in another)
        d.compat.retries.kept(made.request, made.body, sid, made.chat)
    return deleted is not False


async def drop_left(d) -> None:
    """At the start: the sessions OpenAI requests made that a kill -9 cut before their apps were given their ids
    (storage/openaimade.py) deleted where they hold nothing else, as drop_made would have (the SDK's retry of the broken
    connection makes the one session holding the question); one written to meanwhile is kept."""
    for sid, lamports in await d.db.openai_made.left():
        try:
            deleted = await d.ops.delete_session(sid, holding_only=lamports)
        except SessiondError as exc:
            log.warning("the session an OpenAI request made is kept: %s", exc.message, extra={"session": sid})
            deleted = False
        if deleted is False:
            await d.db.openai_made.given(sid)
        else:
            log.info(
                "the session an OpenAI request made, cut by the daemon's stop before its app had its id, is deleted",
                extra={"session": sid},
            )
