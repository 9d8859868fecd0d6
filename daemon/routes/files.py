"""Plain files: a session exported as OpenAI messages, full JSON or Markdown; OpenAI, session JSON,
ChatGPT, Claude, Open WebUI and llm files imported (daemon/formats.py does the formats)."""

from collections.abc import Callable

from aiohttp import web

from ..formats import export
from ..formats import import_file as do_import
from ..testhooks import pause_for_tests
from .common import body, daemon_of, ok, query, session_id


def _progress(request: web.Request, task: str, sid: str) -> Callable[[int, int], None]:
    """`progress` events of `task` (the CLI's bar, cli/progress.py), through the sync engine's rate limit;
    nothing when sync is off."""
    d = daemon_of(request)
    ctx = d.syncer.ctx if d.syncer is not None else None
    return lambda done, total: ctx.progress(task, sid, done, total) if ctx is not None else None


async def export_session(request: web.Request) -> web.Response:
    q = query(request)
    db = daemon_of(request).db
    sid = session_id(request)
    chat = q.get("chat")
    chat_id = await db.resolve_chat(sid, chat) if chat else None
    return ok(await export(db, sid, q.get("format", "json"), chat_id, _progress(request, "export", sid)))


async def import_file(request: web.Request) -> web.Response:
    b = await body(request)
    d = daemon_of(request)
    progress = _progress(request, "import-file", "")
    # One at a time: an export imported twice at once would else be compared twice with the sessions as they
    # were before either, and a conversation's new messages appended twice (daemon/reimports.py).
    if d.file_imports.locked():
        await pause_for_tests("import-file.queued")
    async with d.file_imports:
        made, again = await do_import(
            d.db, b["data"], b.get("format"), d.estimate, progress, remove=d.ops.delete_session
        )
    return ok({"sessions": made, **again}, 201)
