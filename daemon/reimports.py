"""An export imported again: the conversations of another app's export (ChatGPT, Claude, Open WebUI, llm)
that an earlier import made sessions of are skipped, not made a second time. Each such session names its
source and the source's conversation id in its metadata (daemon/importers.py, formats.parse_chatgpt)."""

from __future__ import annotations

from typing import Any

# The metadata field each source keeps its conversation's id in.
ID_FIELDS = {"chatgpt": "conversation", "claude": "conversation", "llm": "conversation", "openwebui": "chat"}


def source_of(spec: dict) -> tuple[str, str, str] | None:
    """(source, metadata field, conversation id) of a session an import would make; None when it names no
    conversation (an OpenAI or session file, a conversation without an id): made every time."""
    meta = spec.get("metadata") or {}
    source = meta.get("source")
    field = ID_FIELDS.get(source) if isinstance(source, str) else None
    value = meta.get(field) if field else None
    return (source, field, value) if isinstance(source, str) and field and isinstance(value, str) and value else None


async def not_imported_yet(db: Any, plan: list[dict]) -> tuple[list[dict], list[dict]]:
    """`plan` (a file's sessions to make) less the conversations a session here was imported from; and
    those skipped: {"source", "conversation", "name", "session"} each."""
    keys = [source_of(item["spec"]) for item in plan]
    here = await db.imported_from({k[0]: k[1] for k in keys if k is not None})
    make: list[dict] = []
    skipped: list[dict] = []
    for item, key in zip(plan, keys, strict=True):
        sid = here.get((key[0], key[2])) if key is not None else None
        if key is None or sid is None:
            make.append(item)
        else:
            name = item["spec"].get("name")
            skipped.append({"source": key[0], "conversation": key[2], "name": name, "session": sid})
    return make, skipped
