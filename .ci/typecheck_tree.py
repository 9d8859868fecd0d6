"""Build .typecheck/sessiond/ so mypy sees the import package as it is installed.

The repository's top-level folders install as `sessiond.<folder>` through [tool.setuptools.package-dir]
(there is no sessiond/ folder), so from the source tree mypy cannot resolve `sessiond.*` nor the relative
imports between folders (`from ..storage import database`). This links each mapped folder under
.typecheck/sessiond/ (read from pyproject.toml, so a new package is picked up) and removes stale links;
mypy then runs with mypy_path = .typecheck on the package `sessiond`. Usage: python .ci/typecheck_tree.py
"""

from __future__ import annotations

import os
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "sessiond"


def mapped_folders(pyproject: Path) -> dict[str, str]:
    """{sub-package name: folder} for each top-level sub-package of `sessiond` in package-dir."""
    with pyproject.open("rb") as f:
        package_dir = tomllib.load(f)["tool"]["setuptools"]["package-dir"]
    out = {}
    for name, folder in package_dir.items():
        parts = name.split(".")
        if parts[0] != PACKAGE or len(parts) != 2:
            continue  # nested mappings live inside a linked folder
        out[parts[1]] = folder
    return out


def main() -> int:
    base = ROOT / ".typecheck" / PACKAGE
    base.mkdir(parents=True, exist_ok=True)
    wanted = mapped_folders(ROOT / "pyproject.toml")
    for entry in base.iterdir():
        if entry.name not in wanted:
            entry.unlink()
    for name, folder in wanted.items():
        link = base / name
        target = os.path.relpath(ROOT / folder, base)
        if link.is_symlink() and os.readlink(link) == target:
            continue
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target, target_is_directory=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
