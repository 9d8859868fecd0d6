"""schemathesis against the daemon's own OpenAPI document, over its Unix socket.

For every operation, schemathesis generates valid requests (and, in a second pass, requests that break
the schema) and runs its checks on the answers: no 5xx, only documented status codes and content
types, response bodies that match their schema, and schema-breaking requests rejected with a 4xx.
Requests go through `requests` with a transport adapter that connects to the daemon's socket, so what
is tested is the real daemon process on its real socket, not an in-process app. In the positive pass
each request is aimed at a fresh real session, so most operations get through to a 2xx, and a valid
request (by the document) that is refused as invalid is a failure: document and handlers must agree.
"""

from __future__ import annotations

import os
import socket
import time

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from requests.adapters import HTTPAdapter
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)
from urllib3.connection import HTTPConnection
from urllib3.connectionpool import HTTPConnectionPool

EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", 15))
BASE = "http://sessiond"  # the host is a placeholder: every request goes to the socket


class _UnixConnection(HTTPConnection):
    def __init__(self, path: str, *args, **kwargs):
        super().__init__("localhost", *args, **kwargs)
        self._socket_path = path

    def _new_conn(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout if isinstance(self.timeout, (int, float)) else 30)
        sock.connect(self._socket_path)
        return sock


class _UnixPool(HTTPConnectionPool):
    def __init__(self, path: str, **kwargs):
        super().__init__("localhost", **kwargs)
        self._socket_path = path

    def _new_conn(self) -> HTTPConnection:
        return _UnixConnection(self._socket_path, timeout=self.timeout.connect_timeout)


class UnixAdapter(HTTPAdapter):
    """requests over a Unix socket (the daemon's), whatever the URL's host."""

    def __init__(self, path: str):
        self._socket_path = path
        super().__init__()

    def get_connection_with_tls_context(self, request, verify, proxies=None, cert=None):
        return _UnixPool(self._socket_path)

    def get_connection(self, url, proxies=None):  # requests < 2.32
        return _UnixPool(self._socket_path)


@pytest.fixture(scope="module")
def api(api_target):
    proc, doc = api_target
    session = requests.Session()
    session.mount(BASE, UnixAdapter(proc.socket))
    yield proc, doc, session
    session.close()


def _operations(doc: dict):
    schema = schemathesis.openapi.from_dict(doc)
    for result in schema.get_all_operations():
        yield result.ok()


POSITIVE = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
NEGATIVE = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
# What a schema cannot say: a generated id, chat or message names nothing that exists (404), a generated
# share code, proof or file (import-file's data is any JSON; its importer checks it) is not one. Every other
# operation must answer some valid request with a 2xx.
NEED_REAL_VALUES = {
    "POST /v1/import",
    "POST /v1/sessions/{id}/verify-proof",
    "POST /v1/import-file",
    "POST /v1/sessions/{id}/rekey",  # rekey: only a session shared read-write has keys to rotate
    "POST /v1/sessions/{id}/unshare",  # unshare (a rekey too): only a session shared before
    # the model routes answer 2xx only with a model provider configured (this daemon has none;
    # tests/test_model.py drives them against a loopback provider)
    "POST /v1/sessions/{id}/complete",
    "POST /openai/v1/chat/completions",
    "GET /openai/v1/models",
    # the append stream: a WebSocket (101), which a plain GET is refused (400); tests/test_append_stream.py
    "GET /v1/appends",
}


class Seeds:
    """A fresh session per generated request (with a message and a second chat), so that path ids and
    the references in bodies hit real things: a DELETE or an end does not spoil the next request."""

    def __init__(self, client):
        self.client, self.n = client, 0

    def fresh(self) -> tuple[str, str]:
        self.n += 1
        sid = self.client.create_session(id=f"seed-{self.n}", name="seed", max_context_tokens=100_000)["id"]
        msg = self.client.append(sid, "user", "hello")["id"]
        self.client.create_chat(sid, name="side")
        return sid, msg

    def aim(self, case) -> None:
        if "id" in (case.path_parameters or {}):
            sid, msg = self.fresh()
            case.path_parameters = {**case.path_parameters, "id": sid}
            if "chat" in case.path_parameters:  # PATCH .../chats/{chat}: one of the seed's chats, by name
                case.path_parameters["chat"] = "side"
            if isinstance(case.body, dict):
                if "at" in case.body:
                    case.body["at"] = msg
                if isinstance(case.body.get("chat"), str):
                    case.body["chat"] = "side"
            if isinstance(case.query, dict) and "chat" in case.query:
                case.query["chat"] = "main"
                if case.path.endswith("/export") and case.query.get("format", "json") != "openai":
                    del case.query["chat"]  # a chat picks the chat of an openai export; the others hold every chat
                if case.path.endswith("/messages") and case.query.get("all") in ("true", "1"):
                    del case.query["all"]  # one chat's messages, or every chat's: not both
            if isinstance(case.query, dict):  # a page marker is a message id or nothing
                for k in ("before", "after"):
                    case.query.pop(k, None)
        if isinstance(case.query, dict) and case.query.get("no_user") in ("true", "1", True):
            case.query.pop("user", None)  # a user's sessions, or those with none: not both (list, stats, search)
        if isinstance(case.body, dict) and isinstance(case.body.get("policy"), dict):
            for k in case.body["policy"]:  # a policy field in policy or as its shortcut, not both
                case.body.pop(k, None)
        if isinstance(case.body, dict) and isinstance(case.body.get("expires_at"), (int, float)):
            case.body["expires_at"] = time.time() + 3600  # a time to come: one past is refused (its description says)
        if isinstance(case.body, dict):  # a generated tool_call_id names no call of the chat (refused: 422), and
            # generated call_fields no call of the message (a reference the schema cannot say)
            for m in [case.body, *(case.body.get("messages") or [])]:
                if isinstance(m, dict):
                    m.pop("tool_call_id", None)
                    m.pop("call_fields", None)
            for m in case.body.get("initial_messages") or []:
                if isinstance(m, dict):
                    m.pop("call_fields", None)
        if isinstance(case.body, dict) and case.body.get("wait") and case.body.get("timeout", 60) > 5:
            case.body["timeout"] = 5  # a sync may wait, but not for an hour


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_schemathesis_every_operation(api, mode):
    proc, doc, session = api
    seeds = Seeds(proc.client())
    checked: list[str] = []
    statuses: dict[int, int] = {}
    succeeded: set[str] = set()  # operations that answered a generated request with a 2xx
    refused: list = []  # valid requests (by the schema) that the handler refused as invalid
    for op in _operations(doc):
        if op.path in ("/v1/events",):  # a stream that stays open: covered by tests/test_daemon.py
            continue
        name = f"{op.method.upper()} {op.path}"
        gen_mode = GenerationMode.POSITIVE if mode == "positive" else GenerationMode.NEGATIVE
        checks = POSITIVE if mode == "positive" else NEGATIVE

        @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(case=op.as_strategy(generation_mode=gen_mode))
        def run(case):
            if mode == "positive":
                seeds.aim(case)
            response = case.call(base_url=BASE, session=session, timeout=30)
            if response.status_code == 400 and response.text.startswith("Got more than 8190 bytes"):
                return  # a request line or header past aiohttp's 8 KiB, refused by its HTTP parser (plain text, README)
            statuses[response.status_code // 100] = statuses.get(response.status_code // 100, 0) + 1
            if response.status_code < 300:
                succeeded.add(name)
            elif (
                mode == "positive"
                and response.status_code == 422
                and response.json()["error"]["code"] == "invalid"
                and name not in NEED_REAL_VALUES
            ):
                refused.append((name, case.body, case.query, response.json()["error"]["message"]))
            case.validate_response(response, checks=checks)

        try:
            run()
        except Unsatisfiable:
            assert mode == "negative"  # nothing in this operation can break its schema (no parameters)
            continue
        checked.append(name)
    assert proc.proc.poll() is None, "the daemon died under schemathesis"
    assert len(checked) >= (30 if mode == "positive" else 20), checked  # every route was driven
    assert statuses.get(5, 0) == 0
    if mode == "positive":
        # the document is the handlers' contract: what it calls valid, they accept
        assert not refused, [(r[0], r[3][-150:]) for r in refused[:8]]
        # valid requests do get through, not only 404s: with real ids, (nearly) every operation
        # answers some of them with a 2xx
        missed = sorted(set(checked) - succeeded)
        assert len(succeeded) >= 0.8 * len(checked) and set(missed) <= NEED_REAL_VALUES, (missed, statuses)
    else:
        assert statuses.get(4, 0) > 50, statuses
