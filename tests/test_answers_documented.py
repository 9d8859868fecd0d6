"""Four answers were typed Any in the OpenAPI document (any JSON, `{}`): a session's export, the OpenAI-compatible
endpoint's chat completion and model list, and GET /v1/openapi.json itself. An app, or a client generated from
the document, learnt nothing of them. Each is documented now as what the daemon sends: the export as one of its
three formats (openai, json, markdown), the completion and the model list in OpenAI's shapes (as far as sessiond
reads them: the provider's own fields passed on beside), the document as an OpenAPI document. Every field of each
answer is in its schema, and each answer validates against the route's documented schema."""

from __future__ import annotations

import jsonschema_rs

try:  # the openai package's own HTTP library: httpx, renamed httpx2 in its newer releases
    import httpx2 as httpx
except ImportError:
    import httpx


def _ok(doc: dict, path: str, method: str = "get") -> dict:
    return doc["paths"][path][method]["responses"]["200"]["content"]["application/json"]["schema"]


def _named(doc: dict, schema: dict) -> list[str]:
    return [s.get("$ref", "").rsplit("/", 1)[-1] for s in schema.get("anyOf", [schema])]


def _fields(doc: dict, name: str) -> set[str]:
    return set(doc["components"]["schemas"][name].get("properties", {}))


def _holds(doc: dict, schema: dict, answer) -> None:
    jsonschema_rs.validate({**schema, "components": doc["components"]}, answer)


def test_export_the_openai_endpoint_and_the_document_are_typed(echo_daemon):
    d, _ = echo_daemon
    c = d.client()
    doc = c.openapi()
    sid = c.create_session(model="echo-1", system_prompt="be brief", settings={"temperature": 0.5})["id"]
    c.append(sid, "user", "hello", metadata={"k": 1})
    c.complete(sid, "one two")
    c.checkpoint(sid)

    export = _ok(doc, "/v1/sessions/{id}/export")
    assert _named(doc, export) == ["OpenAIExport", "SessionExport", "MarkdownExport"], export
    for fmt, name in (("openai", "OpenAIExport"), ("json", "SessionExport"), ("markdown", "MarkdownExport")):
        answer = c.export(sid, fmt)
        assert not set(answer) - _fields(doc, name), (fmt, answer)
        _holds(doc, export, answer)
    whole = c.export(sid, "json")
    for m in whole["messages"]:
        assert not set(m) - _fields(doc, "ExportedMessage"), m
    assert {"metadata", "usage", "response", "model"} <= {k for m in whole["messages"] for k in m}

    with httpx.Client(transport=httpx.HTTPTransport(uds=d.socket), base_url="http://localhost") as app:
        headers = {"X-Sessiond-Session": sid}
        body = {"model": "echo-1", "messages": [{"role": "user", "content": "three"}]}
        completion = app.post("/openai/v1/chat/completions", json=body, headers=headers).json()
        models = app.get("/openai/v1/models", headers=headers).json()
    ok = _ok(doc, "/openai/v1/chat/completions", "post")
    assert _named(doc, ok) == ["ChatCompletion"], ok
    assert completion["choices"][0]["message"]["content"], completion
    assert not set(completion) - _fields(doc, "ChatCompletion"), completion
    assert not set(completion["choices"][0]) - _fields(doc, "CompletionChoice"), completion
    _holds(doc, ok, completion)
    ok = _ok(doc, "/openai/v1/models")
    assert _named(doc, ok) == ["ModelList"], ok
    assert models["data"] and not set(models) - _fields(doc, "ModelList"), models
    assert not set(models["data"][0]) - _fields(doc, "ModelInfo"), models
    _holds(doc, ok, models)

    ok = _ok(doc, "/v1/openapi.json")
    assert _named(doc, ok) == ["OpenAPIDocument"], ok
    assert not set(doc) - _fields(doc, "OpenAPIDocument"), set(doc)
    _holds(doc, ok, doc)
