"""The Python client's calls say what they return, so that an app's type checker knows the answer's fields."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

from sessiond.client import AsyncClient, Client
from sessiond.client.calls import Api

UNTYPED = {"models"}  # the provider's own list, passed on as it answers it (OpenAI's shape, or another)


def test_every_call_of_the_clients_declares_its_answer():
    """`complete` declared no return type: an app's `c.complete(sid, "q")["content"]` was Any to its type
    checker, while `append` and every other call give the message's TypedDict."""
    untyped = [
        f"{cls.__name__}.{name}"
        for cls in (Api, Client, AsyncClient)
        for name, f in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_") and name not in UNTYPED and f.__annotations__.get("return", "Any") == "Any"
    ]
    assert not untyped, f"client calls with no declared answer: {untyped}"


def test_a_stored_answer_declares_the_fields_a_model_s_answer_carries():
    """The README's "Talk to a model": `ask` and `complete` record the answer "with the model, the provider, its
    usage and its response times" (and `interrupted` when cut short), and every message read back has them; the
    API's `Message` (what `complete`, `append` and `messages` answer, in the OpenAPI document and to an app's
    type checker) declared none of them, only a session file's `ExportedMessage` did: `answer["usage"]` was a
    type error in an app, and openapi.json did not name the fields."""
    from sessiond.api.messages import Message
    from sessiond.client.calls import Api

    assert Api.complete.__annotations__["return"] == "Message"
    answer_fields = {"model", "provider", "usage", "response", "interrupted", "error", "metadata"}
    assert answer_fields <= set(Message.__annotations__), answer_fields - set(Message.__annotations__)


ROOT = Path(__file__).resolve().parent.parent


def _methods(path: Path, cls: str) -> dict[str, ast.FunctionDef | ast.AsyncFunctionDef]:
    """The public methods of class `cls` in `path`, wherever in the module it is defined (aiocalls.py's under
    TYPE_CHECKING)."""
    [node] = [n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.ClassDef) and n.name == cls]
    return {
        f.name: f
        for f in node.body
        if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef) and not f.name.startswith("_")
    }


def test_the_async_client_s_type_has_every_call_of_api_awaited():
    """AsyncClient's type (aiocalls.AsyncApi) has each of Api's calls, and no other: the same parameters (names,
    kinds, defaults, annotations) and an `async def` of the same answer; a call added to Api or changed there,
    and not to it, fails here (python .ci/aiocalls.py writes it again)."""
    sync = _methods(ROOT / "client" / "calls.py", "Api")
    aio = _methods(ROOT / "client" / "aiocalls.py", "AsyncApi")
    assert sorted(aio) == sorted(sync)
    for name, f in sync.items():
        g, mend = aio[name], "(python .ci/aiocalls.py writes it from Api)"
        assert isinstance(g, ast.AsyncFunctionDef), f"AsyncApi.{name} is not async {mend}"
        assert ast.dump(g.args) == ast.dump(f.args), f"AsyncApi.{name}'s parameters are not Api.{name}'s {mend}"
        assert ast.dump(g.returns) == ast.dump(f.returns), f"AsyncApi.{name}'s answer is not Api.{name}'s {mend}"


def test_the_generated_async_calls_are_what_the_script_writes():
    res = subprocess.run(
        [sys.executable, str(ROOT / ".ci" / "aiocalls.py"), "--check"], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_the_async_client_runs_api_s_own_calls():
    """The async types are for type checkers only: at run time AsyncClient's calls are Api's functions, run over
    its coroutine `_call` (no second copy of any call that could drift)."""
    from sessiond.client.aiocalls import AsyncApi

    assert AsyncApi is Api
    for name, f in inspect.getmembers(Api, inspect.isfunction):
        if not name.startswith("_"):
            assert getattr(AsyncClient, name) is f, name


def test_the_streams_take_the_blocking_client_s_parameters():
    """complete_stream, events and event_stream are each client's own (a stream object, an async iterator in
    AsyncClient's): the same parameters in both."""
    for name in ("complete_stream", "events", "event_stream"):
        sync = inspect.signature(getattr(Client, name)).parameters
        aio = inspect.signature(getattr(AsyncClient, name)).parameters
        assert list(aio.values()) == list(sync.values()), name
