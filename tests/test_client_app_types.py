"""An app's type checker reads the client's types from the installed package: mypy (--strict, as many apps run
it) over small apps using Client and AsyncClient, with sessiond installed from its wheel as an app has it,
finds no error; `assert_type` in them pins what each call gives (the API's TypedDicts, not Any)."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SKIP = shutil.ignore_patterns(".*", "__pycache__", "*.pyc", "build", "dist", "*.egg-info", "tests", "bench", "docs")

BLOCKING_APP = """
    from typing import Any, assert_type

    from sessiond.api.manage import Quota
    from sessiond.api.messages import Message, MessageList
    from sessiond.api.meta import Status
    from sessiond.api.sessions import Session
    from sessiond.client import Client, CompletionStream


    def main() -> None:
        with Client() as c:
            assert_type(c.status(), Status)
            s = c.create_session(name="x")
            assert_type(s, Session)
            assert_type(c.append(s["id"], "user", "hi"), Message)
            assert_type(c.complete(s["id"], "hi")["content"], str)
            assert_type(c.messages(s["id"], limit=5), MessageList)
            assert_type(c.quota(s["id"]), Quota)
            assert_type(c.models(), Any)
            with c.complete_stream(s["id"], "hi") as stream:
                assert_type(stream, CompletionStream)
                for text in stream:
                    assert_type(text, str)
                assert_type(stream.message, Message | None)
            with c.events() as events:
                for ev in events:
                    assert_type(ev, dict[Any, Any])
                assert_type(events.last_event_id, str | None)
"""

ASYNC_APP = """
    from typing import Any, assert_type

    from sessiond.api.manage import Quota
    from sessiond.api.messages import AppendedBatch, Message, MessageList
    from sessiond.api.meta import Status
    from sessiond.api.sessions import Session, SessionList
    from sessiond.client import AsyncClient
    from sessiond.client.sentlater import AsyncCompletionStream, AsyncEvents


    async def main() -> None:
        async with AsyncClient() as c:
            assert_type(await c.status(), Status)
            s = await c.create_session(name="x", system_prompt="Be brief.")
            assert_type(s, Session)
            assert_type(await c.list_sessions(limit=2), SessionList)
            assert_type(await c.append(s["id"], "user", "hi", idempotency_key="k"), Message)
            batch = await c.append_many(s["id"], [{"role": "user", "content": "a"}])
            assert_type(batch, AppendedBatch)
            answer = await c.complete(s["id"], "hi", model="m")
            assert_type(answer["content"], str)
            assert_type(await c.messages(s["id"], last=True), MessageList)
            quota = await c.quota(s["id"])
            assert_type(quota, Quota)
            level: str = quota["level"]
            print(level, quota["tokens_used"] + 1)
            assert_type(await c.models(provider="p"), Any)
            await c.sync(wait=True)

            # a streamed answer: awaited, or entered; its texts, then the stored answer
            stream = await c.complete_stream(s["id"], "hi")
            assert_type(stream, AsyncCompletionStream)
            async for item in stream:
                assert_type(item, str | Message)
                if isinstance(item, str):
                    print(item.upper())
                else:
                    print(item["id"])
            assert_type(stream.message, Message | None)
            async with c.complete_stream(s["id"], "again") as entered:
                async for item in entered:
                    pass
            await stream.aclose()

            # change events: iterated, entered, awaited
            async for ev in c.events(reconnect=False):
                assert_type(ev, dict[Any, Any])
                break
            async with c.events() as events:
                assert_type(events, AsyncEvents)
                assert_type(events.last_event_id, str | None)
            one = await c.event_stream()
            assert_type(one, AsyncEvents)
            await one.aclose()
        await c.close()
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The package as an app has it: the wheel, installed into a folder of its own (its dependencies, mypy's
    to read, from this environment)."""
    tmp = tmp_path_factory.mktemp("installed")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=SKIP)  # (built from a copy: no build/ in the working tree)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    res = subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "out"), str(src)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    [whl] = (tmp / "out").glob("sessiond-*.whl")
    target = tmp / "site"
    res = subprocess.run(
        [*pip, "install", "--no-deps", "--no-index", "--target", str(target), str(whl)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    return target


@pytest.fixture(scope="module")
def mypy_cache(tmp_path_factory) -> Path:
    """One mypy cache for the module's runs: each run checked the standard library's stubs, pydantic and aiohttp
    again from nothing (--no-incremental), ~4 of the ~5 s of CPU a run; mypy reads a module's cached result only
    while its file (path, size, hash) is the one cached, so each run still checks the sessiond it finds."""
    return tmp_path_factory.mktemp("mypy-cache")


def mypy_errors(app: str, installed: Path | None, tmp_path: Path, cache: Path, python: str = sys.executable) -> str:
    """mypy --strict's errors over `app`, with sessiond found among the installed packages (PYTHONPATH: a path of
    the app's Python, where mypy asks a package for its py.typed; or those of the app's `python`, its .pth files
    read), not as source of the app's own. `cache`: the mypy_cache fixture's folder."""
    (tmp_path / "app.py").write_text(textwrap.dedent(app))
    (tmp_path / "mypy.ini").write_text("[mypy]\n")  # (none of this repository's settings)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **({"PYTHONPATH": str(installed)} if installed else {})}
    res = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", "mypy.ini", "--strict"]
        + ["--cache-dir", str(cache), "--python-executable", python, "app.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert res.returncode in (0, 1), res.stderr  # 2: mypy itself failed
    return res.stdout if res.returncode else ""


def test_an_app_s_type_checker_reads_the_blocking_client_s_types(installed, tmp_path, mypy_cache):
    """The wheel shipped no py.typed marker: an app's mypy said `module is installed, but missing library stubs
    or py.typed marker` at `from sessiond.client import Client`, and every answer was Any."""
    assert mypy_errors(BLOCKING_APP, installed, tmp_path, mypy_cache) == ""


def test_an_app_s_type_checker_reads_the_async_client_s_calls_as_awaitables(installed, tmp_path, mypy_cache):
    """AsyncClient inherited Client's signatures (calls.Api's, `status() -> Status`): an app's
    `s = await c.status()` was `Incompatible types in "await" (actual type "Status", expected type
    "Awaitable[Any]")`, and every answer Any; a streamed answer's and the change events' items were Any too."""
    assert mypy_errors(ASYNC_APP, installed, tmp_path, mypy_cache) == ""


def _readme_editable_install() -> list[str]:
    """The arguments of `pip install` the README gives for an editable install an app's type checker reads."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    said = [line for line in readme.splitlines() if line.startswith("pip install -e ") and "editable_mode=" in line]
    assert said, "the README names no editable install that an app's type checker reads"
    return shlex.split(said[0].partition("#")[0])[2:]


def test_an_editable_install_is_read_by_an_app_s_type_checker_as_the_readme_says(tmp_path, mypy_cache):
    """`pip install -e` of a checkout (setuptools' default editable mode) maps the folders to `sessiond.<folder>`
    by an import hook, which Python runs and mypy does not: an app's mypy said `Cannot find implementation or
    library stub for module named "sessiond.client"`, py.typed shipped or not. The README's command (setuptools'
    strict mode: a tree of links under the checkout's build/, named by a .pth file) is one mypy reads."""
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=SKIP)  # (installed from a copy: its build/ is the copy's)
    venv = tmp_path / "app-venv"  # the app's environment: sessiond installed into it, editable
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    [site] = (venv / "lib").glob("python3*/site-packages")
    python = str(venv / "bin" / "python")

    def install(args: list[str]) -> None:
        # by this environment's pip, into the app's (-I: this environment's own sessiond left alone)
        pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", "install", "--no-deps"]
        res = subprocess.run(
            [*pip, "--no-build-isolation", "--no-index", "-I", "--prefix", str(venv), *args],
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert res.returncode == 0, res.stderr
        # sessiond's dependencies (pydantic, ...), for mypy to read: this environment's
        (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    install(["-e", str(src)])
    assert 'named "sessiond.client"' in mypy_errors(
        BLOCKING_APP, None, tmp_path, mypy_cache, python
    )  # (the README says so)
    (site / "deps.pth").unlink()
    args = _readme_editable_install()
    assert "-e" in args, args
    args[args.index("-e") + 1] = str(src)  # (the README's path to the checkout)
    install(args)
    assert mypy_errors(BLOCKING_APP, None, tmp_path, mypy_cache, python) == ""
