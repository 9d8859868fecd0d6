"""Fuzzing the socket API from its own OpenAPI document: for every route, generated requests (bodies
built from the schema's fields with arbitrary values, arbitrary JSON, arbitrary query strings) must
never get a 5xx, errors must be the documented JSON shape, and successes must carry the schema's
required fields."""

from __future__ import annotations

import json
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import UnixHTTP

SEEN: dict[int, int] = {}
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", 20))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    max_leaves=12,
)


def resolve(doc, schema):
    while isinstance(schema, dict) and "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def body_strategy(doc, schema):
    schema = resolve(doc, schema)
    alternatives = schema.get("oneOf") or schema.get("anyOf")
    options = [schema] if not alternatives else [resolve(doc, s) for s in alternatives]
    props = {}
    for o in options:
        props.update(o.get("properties", {}))
    if not props:
        return json_values
    keyed = st.fixed_dictionaries({}, optional=dict.fromkeys(props, json_values))
    return st.one_of(keyed, json_values)


def check_response(doc, route, status, data):
    assert status < 500, (route, status, data)
    if status >= 400:
        assert isinstance(data, dict) and isinstance(data.get("error"), dict), (route, data)
        assert isinstance(data["error"].get("code"), str) and isinstance(data["error"].get("message"), str)
        return
    schema = route["responses"].get(str(status)) or next(
        (r for code, r in route["responses"].items() if code.startswith("2")), None
    )
    assert schema is not None, (route, status)
    content = schema.get("content", {}).get("application/json")
    if content is None:
        return
    s = resolve(doc, content["schema"])
    alternatives = s.get("oneOf") or s.get("anyOf")
    if alternatives:
        assert any(all(k in data for k in resolve(doc, o).get("required", [])) for o in alternatives), (route, data)
    else:
        for k in s.get("required", []):
            assert k in data, (route["operationId"], k, data)


def routes(doc):
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if path == "/v1/events":
                continue
            yield method.upper(), path, op


def test_fuzz_every_route(api_target):
    proc, doc = api_target
    for method, path, op in routes(doc):
        req = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
        queries = [p["name"] for p in op.get("parameters", []) if p["in"] == "query"]

        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        @given(
            body=body_strategy(doc, req) if req else st.none(),
            raw=st.one_of(st.none(), st.binary(max_size=40)),
            sid=st.sampled_from(["fuzz", "missing", "fuzz%2F..", "%00", "x" * 200]),
            query=st.dictionaries(st.sampled_from(queries or ["x"]), st.text(max_size=12), max_size=3),
        )
        def one(body, raw, sid, query):
            target = path.replace("{id}", sid)
            if query:
                from urllib.parse import urlencode

                target += "?" + urlencode(query)
            if isinstance(body, dict) and "timeout" in body:
                body["timeout"] = 1  # a fuzzed sync may wait, but not for an hour
            payload = (
                raw
                if raw is not None and method != "GET"
                else (json.dumps(body).encode() if body is not None else None)
            )
            c = UnixHTTP(proc.socket)
            try:
                c.request(method, target, body=payload, headers={"Content-Type": "application/json"})
                r = c.getresponse()
                text = r.read()
            finally:
                c.close()
            data = json.loads(text) if text else None
            check_response(doc, {**op, "path": path}, r.status, data)
            SEEN[r.status // 100] = SEEN.get(r.status // 100, 0) + 1

        one()
    # and the daemon is still well
    assert proc.client().status()["version"]
    assert SEEN.get(2, 0) > 20 and SEEN.get(4, 0) > 100, SEEN  # both successes and errors were exercised
    print("fuzz responses by class:", SEEN)
