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
def wheel_file(tmp_path_factory) -> Path:
    # built from a copy, so no build/ or egg-info lands in the working tree; without build isolation, so
    # offline and in seconds (setuptools comes with the test extras)
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=SKIP)
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    res = subprocess.run([*pip_wheel, "-w", str(tmp / "out"), str(src)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    [whl] = (tmp / "out").glob("sessiond-*.whl")
    return whl


@pytest.fixture(scope="module")
def wheel(wheel_file):
    with zipfile.ZipFile(wheel_file) as z:
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


def test_the_wheel_installed_on_its_own_runs_a_daemon(wheel_file, tmp_path):
    """What `pipx install .` does: the wheel into a venv of its own, run from elsewhere than this tree. Its
    dependencies come from this environment's site-packages as a plain path (no .pth of it runs, so the
    editable install of this tree is not seen): whatever the wheel lacks fails here."""
    import site
    import sysconfig

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    py = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "-q"]
    res = subprocess.run([*pip, str(wheel_file)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    purelib = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    deps = {sysconfig.get_paths()["purelib"], *site.getsitepackages()}
    Path(purelib, "deps.pth").write_text("\n".join(sorted(deps)) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    sessiond = str(venv / "bin" / "sessiond")
    where = subprocess.run(
        [str(py), "-c", "import sessiond.cli.main as m; print(m.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert where.startswith(str(venv)), where  # the installed copy, not this tree
    home = tmp_path / "home"
    res = subprocess.run(
        [sessiond, "start", "--home", str(home), "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    try:
        assert res.returncode == 0, res.stderr
        res = subprocess.run(
            [sessiond, "new", "--home", str(home), "--name", "from the wheel", "--json"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert res.returncode == 0, res.stderr
    finally:
        subprocess.run([sessiond, "stop", "--home", str(home)], cwd=tmp_path, env=env, capture_output=True, timeout=60)
