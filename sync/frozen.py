"""Frozen logs (docs/FORMATS.md §6): a dropped writer's log as a rekey froze it, named in the members object's
"f" and kept in the database (`remotes.frozen`): what one is, which of two is kept, and the database's copy read
back."""

from __future__ import annotations

from collections.abc import Sequence

from . import dagcbor


def is_frozen(f: object) -> bool:
    """A frozen log (docs/FORMATS.md §6): {"d": device id, "k": head public key, "r": revision, "h": its
    manifest's BLAKE3, "x": the manifest's key}."""
    return (
        isinstance(f, dict)
        and isinstance(f.get("d"), str)
        and isinstance(f.get("k"), bytes)
        and len(f["k"]) == 33
        and isinstance(f.get("r"), int)
        and not isinstance(f.get("r"), bool)
        and f["r"] >= 1
        and isinstance(f.get("h"), bytes)
        and len(f["h"]) == 32
        and isinstance(f.get("x"), bytes)
        and len(f["x"]) == 32
    )


def merge_frozen(have: Sequence[dict], more: Sequence[dict]) -> list[dict]:
    """Frozen logs, one per head key: the one at the head's latest revision (of two at one revision, the first
    named). A log frozen once stays as it was frozen, as no later rekey freezes it again, but one that drops
    its writer again after a new code let it back in: that freeze holds what it wrote meanwhile too."""
    out: dict[bytes, dict] = {}
    for f in [*have, *more]:
        k = bytes(f["k"])
        if k not in out or f["r"] > out[k]["r"]:
            out[k] = dict(f)
    return [out[k] for k in sorted(out)]


def frozen_adds(have: Sequence[dict], more: Sequence[dict]) -> bool:
    """Whether merging `more` into `have` (merge_frozen) changes it: a log of a head `have` lacks, or one at a
    later revision than `have` holds of its head (a writer let back in and dropped again). A slot that holds
    every head at an older freeze still needs writing."""
    held = {bytes(f["k"]): f["r"] for f in have}
    return any(bytes(f["k"]) not in held or f["r"] > held[bytes(f["k"])] for f in more)


def decode_frozen(blob: bytes | None) -> list[dict]:
    """The frozen logs noted in the database (remotes.frozen: a DAG-CBOR list), those well formed."""
    if not blob:
        return []
    try:
        logs = dagcbor.decode(bytes(blob))
    except dagcbor.DagCborError:
        return []
    return [f for f in logs if is_frozen(f)] if isinstance(logs, list) else []
