"""The versions two devices' users compare (`sessiond --version`, GET /v1/status): the package's, read from its
installed metadata (pyproject.toml's version, typed there only), the database schema's, and the wire formats' this
sessiond writes and reads (docs/FORMATS.md): a device reads what another wrote only where its `reads` hold the
other's `writes`."""

from __future__ import annotations

import functools
from importlib.metadata import PackageNotFoundError, version

from ..storage.migrations import SCHEMA_VERSION
from ..sync import checkpoint, membersobject, pages, sharecode
from .formats import JSON_FORMAT

UNINSTALLED = "0.0.0+src"  # a source tree that was not installed: no metadata to read


@functools.cache
def package_version() -> str:
    """The installed package's version, read once a process (the running code's: a metadata read costs ~2 ms,
    and GET /v1/status says it)."""
    try:
        return version("sessiond")
    except PackageNotFoundError:
        return UNINSTALLED


# (name, as people read it, the version written, those read)
_FORMATS: tuple[tuple[str, str, int | str, tuple[int | str, ...]], ...] = (
    ("share_code", "share code", sharecode.VERSION, (sharecode.VERSION,)),
    ("log", "log", pages.VERSION, (pages.VERSION,)),  # nodes, parts objects and manifests
    ("page", "page", pages.PAGE_VERSION, (pages.PAGE_VERSION,)),
    ("members", "members", membersobject.MEMBERS_VERSION, (membersobject.MEMBERS_VERSION,)),
    ("checkpoint", "checkpoint", checkpoint.VERSION, tuple(checkpoint.VERSIONS)),
    ("session_file", "session file", JSON_FORMAT, (JSON_FORMAT,)),
)


def versions() -> dict:
    """{"version", "schema", "formats": {name: {"writes", "reads"}}}."""
    return {
        "version": package_version(),
        "schema": SCHEMA_VERSION,
        "formats": {name: {"writes": w, "reads": list(r)} for name, _, w, r in _FORMATS},
    }


def versions_text() -> str:
    """versions() for people: the package's on the first line, as `sessiond VERSION`."""
    shown = [f"{said} {w}" + (f" (reads {', '.join(map(str, r))})" if r != (w,) else "") for _, said, w, r in _FORMATS]
    lines = [f"sessiond {package_version()}", f"database schema {SCHEMA_VERSION}"]
    return "\n".join([*lines, f"formats written (and read): {'; '.join(shown)}"])
