"""The wheel holds the whole package (issue 18): every folder pyproject maps to a sub-package of
`sessiond`, each of its files at any depth (a nested package missing from `packages`, a data file missing
from `package-data` fail here), the `sessiond` command, and the license as an SPDX expression."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOT_PACKAGES = {"tests", "bench", "docs"}  # top-level folders that are not installed
SKIP = shutil.ignore_patterns(".*", "__pycache__", "*.pyc", "build", "dist", "*.egg-info", "tests", "bench")


@pytest.fixture(scope="module")
def project() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    # built from a copy, so no build/ or egg-info lands in the working tree; without build isolation, so
    # offline and in seconds (setuptools comes with the test extras)
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=SKIP)
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    res = subprocess.run([*pip_wheel, "-w", str(tmp / "out"), str(src)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    [whl] = (tmp / "out").glob("sessiond-*.whl")
    with zipfile.ZipFile(whl) as z:
        yield z


def test_every_package_folder_is_mapped(project):
    mapped = set(project["tool"]["setuptools"]["package-dir"].values())
    folders = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists() and p.name not in NOT_PACKAGES}
    assert folders <= mapped, f"folders not in [tool.setuptools.package-dir]: {sorted(folders - mapped)}"


def test_the_wheel_holds_every_file_of_every_package(project, wheel):
    names = set(wheel.namelist())
    missing = []
    for package, folder in project["tool"]["setuptools"]["package-dir"].items():
        base = ROOT / folder
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            for fn in filenames:
                if fn.endswith(".pyc"):
                    continue
                rel = (Path(dirpath) / fn).relative_to(base).as_posix()
                in_wheel = package.replace(".", "/") + "/" + rel
                if in_wheel not in names:
                    missing.append(in_wheel)
    assert not missing, (
        "not in the wheel (a nested package missing from [tool.setuptools] packages, or a "
        f"data file from package-data?): {missing}"
    )


def test_the_wheel_has_the_command_and_the_license(project, wheel):
    [dist_info] = {n.split("/")[0] for n in wheel.namelist() if ".dist-info/" in n}
    entry_points = wheel.read(f"{dist_info}/entry_points.txt").decode()
    assert "sessiond = sessiond.cli.main:main" in entry_points
    assert "sessiond/cli/main.py" in wheel.namelist()
    metadata = wheel.read(f"{dist_info}/METADATA").decode()
    assert f"License-Expression: {project['project']['license']}" in metadata
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    runtime = [r for r in requires if "extra ==" not in r]
    assert len(runtime) == len(project["project"]["dependencies"])  # the test tools are an extra only
