"""The OpenAPI 3.1 document, GENERATED from the API's models (api/) and the route table
(daemon/routes/__init__.py): request and answer schemas are the models' JSON Schemas (named ones as
components), parameters come from the routes' query and header models. Nothing here is written by
hand twice, so the document cannot drift from what the handlers accept."""

import re
from typing import Any, NotRequired, Required, get_args, get_origin, get_type_hints

from pydantic import TypeAdapter, ValidationError
from pydantic.json_schema import JsonSchemaMode

from ..api.errors import BODY_STATUSES, ERROR_STATUSES, EXTRA_STATUSES, Error
from ..api.types import JSON_VALUE_SCHEMA

REF = "#/components/schemas/{model}"
_PATH_PARAM = {"type": "string"}


def _simplify(node: Any) -> Any:
    """Tidy pydantic's output: drop generated titles; write `X or null` as `"type": [X, "null"]` where X
    is a plain type (not a reference), as JSON Schema 2020-12 allows."""
    if isinstance(node, list):
        return [_simplify(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: _simplify(x) for k, x in node.items() if k != "title" or not isinstance(x, str)}
    if "properties" in node:
        out["properties"] = {k: _simplify(x) for k, x in node["properties"].items()}
    opts = out.get("anyOf")
    if opts and len(opts) == 2 and {"type": "null"} in opts:
        other = opts[0] if opts[1] == {"type": "null"} else opts[1]
        if isinstance(other.get("type"), str) and "$ref" not in other:
            del out["anyOf"]
            out.update(other)
            out["type"] = [other["type"], "null"]
    return out


def _params(model: Any, where: str) -> list[dict]:
    """A query model's fields as OpenAPI parameters (optional, but those the model marks Required)."""
    hints = get_type_hints(model, include_extras=True)
    required: frozenset[str] = getattr(model, "__required_keys__", frozenset())
    out = []
    for name, tp in hints.items():
        if get_origin(tp) in (Required, NotRequired):  # kept by include_extras; the schema is of what it wraps
            tp = get_args(tp)[0]
        schema = _simplify(TypeAdapter(tp).json_schema())
        out.append({"name": name, "in": where, "required": name in required, "schema": schema})
    return out


def _needs_body(model: Any) -> bool:
    """Whether a request without a body (taken as {}) is refused: then the document says it is required."""
    try:
        TypeAdapter(model).validate_python({})
    except ValidationError:
        return True
    return False


def build_openapi(routes, version: str) -> dict:
    keyed: list[tuple[str, JsonSchemaMode, TypeAdapter[Any]]] = [("Error", "validation", TypeAdapter(Error))]
    for i, r in enumerate(routes):
        if r.request is not None:
            keyed.append((f"req{i}", "validation", TypeAdapter(r.request)))
        if r.response is not None:
            keyed.append((f"res{i}", "serialization", TypeAdapter(r.response)))
    by_key, defs = TypeAdapter.json_schemas(keyed, ref_template=REF)
    schemas = {key: _simplify(s) for (key, _), s in by_key.items()}
    error = {"content": {"application/json": {"schema": schemas["Error"]}}}

    paths: dict[str, dict] = {}
    for i, r in enumerate(routes):
        op: dict = {"summary": r.summary, "operationId": r.handler.__name__}
        params = [
            {"name": name, "in": "path", "required": True, "schema": _PATH_PARAM}
            for name in re.findall(r"{(\w+)}", r.path)
        ]
        if r.query is not None:
            params += _params(r.query, "query")
        params += [
            {
                "name": h.name,
                "in": "header",
                "required": False,
                "description": h.description,
                "schema": _simplify(TypeAdapter(h.model).json_schema()),
            }
            for h in r.headers
        ]
        if params:
            op["parameters"] = params
        if r.request is not None:
            op["requestBody"] = {
                "required": _needs_body(r.request),
                "content": {"application/json": {"schema": schemas[f"req{i}"]}},
            }
        ok: dict[str, Any]
        if r.websocket:  # the append stream: no JSON answer, a protocol switch
            ok = {"description": "switching to a WebSocket (its frames: README, The append stream)"}
        elif r.response is not None:
            ok = {"description": "success", "content": {"application/json": {"schema": schemas[f"res{i}"]}}}
        else:
            ok = {"description": "an event stream", "content": {"text/event-stream": {"schema": {"type": "string"}}}}
        if r.stream and r.response is not None:  # with "stream": true, the same answer as server-sent events
            ok["content"]["text/event-stream"] = {"schema": {"type": "string"}}
        op["responses"] = {
            str(r.status): ok,
            **{
                str(st): {"description": desc, **error}
                for st, desc in {
                    **ERROR_STATUSES,
                    **(BODY_STATUSES if "requestBody" in op else {}),
                    **{s: EXTRA_STATUSES[s] for s in r.errors},
                }.items()
            },
        }
        if r.stream:  # a streamed answer's status is 200 (the stored message comes last in the stream)
            op["responses"].setdefault("200", ok)
        paths.setdefault(r.path, {})[r.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "sessiond socket API",
            "version": version,
            "description": "The local API of the sessiond daemon, served on its Unix socket.",
        },
        "servers": [{"url": "http://localhost"}],
        "paths": paths,
        "components": {"schemas": {**_simplify(defs.get("$defs", {})), "JsonValue": JSON_VALUE_SCHEMA}},
    }
