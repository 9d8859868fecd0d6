"""The Python client's calls say what they return, so that an app's type checker knows the answer's fields."""

from __future__ import annotations

import inspect

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
