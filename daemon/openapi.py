"""The OpenAPI 3 document, generated from the route table so that it always matches the routes."""
from __future__ import annotations

import re

_str = {"type": "string"}
_nstr = {"type": ["string", "null"]}
_num = {"type": "number"}
_nnum = {"type": ["number", "null"]}
_obj = {"type": "object"}
_nobj = {"type": ["object", "null"]}  # in a request: null is the same as {} (PATCH: clears it)

SETTINGS = {"type": "object", "additionalProperties": False, "properties": {
    "temperature": {"type": ["number", "null"], "minimum": 0, "maximum": 10},
    "top_k": {"type": ["integer", "null"], "minimum": 1},
    "top_p": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
    "max_tokens": {"type": ["integer", "null"], "minimum": 1},
    "provider": {"type": ["string", "null"], "minLength": 1, "maxLength": 100, "pattern": "^[^\\x00]*$"}}}
ROLE = {"type": "string", "enum": ["system", "user", "assistant", "tool"]}
MESSAGE_IN = {"type": "object", "required": ["role", "content"], "additionalProperties": False, "properties": {
    "role": ROLE, "content": _str, "tokens": {"type": ["integer", "null"], "minimum": 0}, "chat": _nstr,
    "name": _nstr, "tool_call_id": _nstr, "metadata": {"type": ["object", "null"]}}}
ID = {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"}

SCHEMAS: dict[str, dict] = {
    "Any": {},
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["code", "message"],
        "properties": {"code": _str, "message": _str, "details": _obj}}}},
    "Settings": SETTINGS,
    "MessageIn": MESSAGE_IN,
    "SessionCreate": {"type": "object", "additionalProperties": False, "properties": {
        "id": ID, "user": _nstr, "name": _nstr, "system_prompt": _nstr, "model": _nstr,
        "settings": {"anyOf": [{"$ref": "#/components/schemas/Settings"}, {"type": "null"}]},
        "initial_messages": {"type": ["array", "null"], "items": {"$ref": "#/components/schemas/MessageIn"}},
        "metadata": _nobj, "tags": {"type": ["array", "null"], "items": {"type": "string", "minLength": 1, "maxLength": 100}},
        "preferences": _nobj, "expires_at": _nnum, "expires_in": {"type": ["number", "null"], "minimum": 1}}},
    "SessionPatch": {"type": "object", "additionalProperties": False, "minProperties": 1, "properties": {
        "user": _nstr, "name": _nstr, "system_prompt": _nstr, "model": _nstr,
        "settings": {"anyOf": [{"$ref": "#/components/schemas/Settings"}, {"type": "null"}]},
        "initial_messages": {"type": ["array", "null"], "items": {"$ref": "#/components/schemas/MessageIn"}},
        "metadata": _nobj, "tags": {"type": ["array", "null"], "items": {"type": "string", "minLength": 1, "maxLength": 100}},
        "preferences": _nobj, "expires_at": _nnum, "expires_in": {"type": ["number", "null"], "minimum": 1}}},
    "Session": {"type": "object", "required": ["id", "status", "current_chat", "created_at"], "properties": {
        "id": _str, "user": _nstr, "name": _nstr, "system_prompt": _nstr, "model": _nstr,
        "settings": _obj, "initial_messages": {"type": "array"}, "metadata": _obj,
        "tags": {"type": "array", "items": _str}, "preferences": _obj,
        "status": {"type": "string", "enum": ["active", "paused", "ended"]}, "current_chat": _nstr,
        "created_at": _num, "last_activity": _num, "expires_at": _nnum, "message_count": {"type": "integer"},
        "chat_count": {"type": "integer"}, "tokens": {"type": "integer"}, "sync": _obj}},
    "SessionList": {"type": "object", "required": ["sessions", "next"], "properties": {
        "sessions": {"type": "array", "items": {"$ref": "#/components/schemas/Session"}}, "next": _nstr}},
    "Deleted": {"type": "object", "required": ["deleted"], "properties": {"deleted": _str}},
    "ChatCreate": {"type": "object", "additionalProperties": False, "properties": {
        "id": ID, "name": _nstr, "system_prompt": _nstr, "model": _nstr,
        "settings": {"$ref": "#/components/schemas/Settings"}, "switch": {"type": ["boolean", "null"]}}},
    "Chat": {"type": "object", "required": ["id", "current"], "properties": {
        "id": _str, "name": _nstr, "system_prompt": _nstr, "model": _nstr, "settings": _obj, "created_at": _num,
        "current": {"type": "boolean"}}},
    "ChatList": {"type": "object", "required": ["chats"], "properties": {
        "chats": {"type": "array", "items": {"$ref": "#/components/schemas/Chat"}}}},
    "Switch": {"type": "object", "required": ["chat"], "additionalProperties": False, "properties": {"chat": _str}},
    "Append": {"oneOf": [
        {"$ref": "#/components/schemas/MessageIn"},
        {"type": "object", "required": ["messages"], "additionalProperties": False, "properties": {
            "messages": {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/MessageIn"}},
            "chat": _nstr}}]},
    "Message": {"type": "object", "required": ["id", "chat", "role", "content", "created_at"], "properties": {
        "id": _str, "chat": _str, "role": ROLE, "content": _str, "tokens": {"type": ["integer", "null"]},
        "created_at": _num, "device": _str, "seq": {"type": "integer"}, "lamport": {"type": "integer"}}},
    "Appended": {"oneOf": [{"$ref": "#/components/schemas/Message"}, {
        "type": "object", "required": ["count", "ids", "chat"],
        "properties": {"count": {"type": "integer"}, "ids": {"type": "array", "items": _str}, "chat": _str,
                       "created_at": _num, "first_seq": {"type": "integer"}, "last_seq": {"type": "integer"}}}]},
    "MessageList": {"type": "object", "required": ["messages", "next"], "properties": {
        "messages": {"type": "array", "items": {"$ref": "#/components/schemas/Message"}}, "next": _nstr}},
    "Status": {"type": "object", "required": ["version", "device_id", "uptime", "counts"], "properties": {
        "version": _str, "device_id": _str, "pid": {"type": "integer"}, "uptime": _num, "socket": _str,
        "home": _str, "counts": _obj, "store": _nstr, "sync": _obj}},
    "SyncRequest": {"type": "object", "additionalProperties": False, "properties": {
        "session": _nstr, "wait": {"type": "boolean"}, "timeout": {"type": "number", "minimum": 0, "maximum": 3600}}},
    "SyncResult": _obj,
    "ShareRequest": {"type": "object", "additionalProperties": False, "properties": {
        "write": {"type": "boolean"}, "passphrase": {"type": ["string", "null"], "minLength": 8},
        "expires_in": {"type": ["number", "null"], "minimum": 1}}},
    "ShareResult": {"type": "object", "required": ["code", "session", "capability"], "properties": {
        "code": _str, "session": _str, "capability": {"type": "string", "enum": ["read-only", "read-write"]},
        "expires_at": {"type": ["integer", "null"]}, "store": _nstr, "protected": {"type": "boolean"}}},
    "RekeyRequest": {"type": "object", "additionalProperties": False, "properties": {
        "drop": {"type": "array", "items": _str}}},
    "RekeyResult": {"type": "object", "required": ["session", "kept", "dropped"], "properties": {
        "session": _str, "kept": {"type": "array", "items": _str}, "dropped": {"type": "array", "items": _str}}},
    "Quota": {"type": "object", "required": ["session", "tokens_used", "level"], "properties": {
        "session": _str, "tokens_used": {"type": "integer"}, "token_quota": {"type": ["integer", "null"]},
        "remaining": {"type": ["integer", "null"]},
        "level": {"type": "string", "enum": ["safe", "warning", "critical", "exhausted"]}, "thresholds": _obj}},
    "Context": {"type": "object", "required": ["session", "chat"], "properties": {
        "session": _str, "chat": _str, "policy": _obj, "compacted_upto": _nstr,
        "active_messages": {"type": "integer"}, "active_tokens": {"type": "integer"},
        "compacted_messages": {"type": "integer"}, "messages": {"type": "integer"}}},
    "Compact": {"type": "object", "additionalProperties": False, "properties": {
        "chat": _nstr, "target_tokens": {"type": ["integer", "null"], "minimum": 0}}},
    "Uncompact": {"type": "object", "additionalProperties": False, "properties": {"chat": _nstr}},
    "Clone": {"type": "object", "additionalProperties": False, "properties": {"id": ID, "name": _nstr}},
    "Fork": {"type": "object", "required": ["at"], "additionalProperties": False, "properties": {
        "at": _str, "id": ID, "name": _nstr}},
    "Checkpoint": {"type": "object", "required": ["number", "hash", "signature"], "properties": {
        "session": _str, "device": _str, "number": {"type": "integer"}, "hash": _str, "tokens": {"type": "integer"},
        "messages": {"type": "integer"}, "frontier": _obj, "created_at": _num, "pk": _str, "signature": _str}},
    "CheckpointList": {"type": "object", "required": ["checkpoints"], "properties": {
        "checkpoints": {"type": "array", "items": {"$ref": "#/components/schemas/Checkpoint"}}}},
    "ProofRequest": {"type": "object", "required": ["proof"], "additionalProperties": False, "properties": {
        "proof": _obj}},
    "ProofResult": {"type": "object", "required": ["ok"], "properties": {"ok": {"type": "boolean"}}},
    "ImportFile": {"type": "object", "required": ["format", "data"], "additionalProperties": False, "properties": {
        "format": {"type": "string", "enum": ["openai", "json", "chatgpt"]}, "data": {}}},
    "ImportFileResult": {"type": "object", "required": ["sessions"], "properties": {
        "sessions": {"type": "array", "items": {"$ref": "#/components/schemas/Session"}}}},
    "Cleanup": {"type": "object", "required": ["older_than"], "additionalProperties": False, "properties": {
        "older_than": {"type": "number", "minimum": 0}, "dry_run": {"type": "boolean"}}},
    "CleanupResult": {"type": "object", "required": ["sessions"], "properties": {
        "sessions": {"type": "array"}, "deleted": {"type": "boolean"}}},
    "ImportRequest": {"type": "object", "required": ["code"], "additionalProperties": False, "properties": {
        "code": _str, "passphrase": _nstr}},
    "ImportResult": {"type": "object", "required": ["session"], "properties": {
        "session": _str, "new": {"type": "integer"}, "capability": _str, "already": {"type": "boolean"},
        "devices": {"type": "integer"}}},
    "Complete": {"type": "object", "additionalProperties": False, "properties": {
        "content": _nstr, "chat": _nstr, "model": {"type": ["string", "null"], "maxLength": 200},
        "provider": {"type": ["string", "null"], "maxLength": 100}, "stream": {"type": "boolean"}}},
    "ChatCompletionRequest": {"type": "object", "required": ["messages"], "properties": {
        "model": {"type": "string", "maxLength": 200}, "stream": {"type": "boolean"},
        "messages": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["role"], "properties": {
                "role": {"type": "string", "enum": ["system", "developer", "user", "assistant", "tool"]},
                "content": {"type": ["string", "array", "null"]}}}}}},
    "VerifyRequest": {"type": "object", "additionalProperties": False, "properties": {"session": _nstr}},
    "VerifyReport": {"type": "object", "required": ["ok", "sessions"], "properties": {
        "ok": {"type": "boolean"}, "sessions": {"type": "array"}}},
}

QUERY = {
    "user": _str, "status": {"type": "string", "enum": ["active", "paused", "ended"]}, "tag": _str,
    "limit": {"type": "integer", "minimum": 1}, "after": _str, "before": _str, "chat": _str,
    "all": {"type": "string", "enum": ["0", "1", "true", "false"]},
    "format": {"type": "string", "enum": ["openai", "json"]}, "session": _str,
}

HEADERS = {
    "Idempotency-Key": {
        "description": "Makes an append safe to retry. A new random key (e.g. a UUID) per request; send the "
                       "same key again only to retry that request (after a broken connection): the daemon then "
                       "answers with the first result (the same message ids) and stores nothing twice. Keys are "
                       "remembered per session, durably, for 24 hours (the last 1,000 per session). The same "
                       "key with other messages is refused with 422 idempotency_key_reused.",
        "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]([ -~]*[!-~])?$"}},
    "X-Sessiond-Session": {
        "description": "The session that records this call (absent: a new session, whose id comes back in "
                       "this header of the answer)", "schema": {"type": "string", "pattern": "^[!-~]{1,128}$"}},
}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(desc: str) -> dict:
    return {"description": desc, "content": {"application/json": {"schema": _ref("Error")}}}


def build_openapi(routes, version: str) -> dict:
    paths: dict[str, dict] = {}
    for r in routes:
        op: dict = {"summary": r.summary, "operationId": r.handler.__name__}
        params = [{"name": name, "in": "path", "required": True, "schema": _str}
                  for name in re.findall(r"{(\w+)}", r.path)]
        params += [{"name": q, "in": "query", "required": False, "schema": QUERY[q]} for q in r.query]
        params += [{"name": h, "in": "header", "required": False, **HEADERS[h]} for h in r.headers]
        if params:
            op["parameters"] = params
        if r.request:
            op["requestBody"] = {"required": False, "content": {"application/json": {"schema": _ref(r.request)}}}
        if r.response:
            ok_resp = {"description": "success", "content": {"application/json": {"schema": _ref(r.response)}}}
        else:
            ok_resp = {"description": "an event stream", "content": {"text/event-stream": {"schema": _str}}}
        if r.stream and r.response:  # with "stream": true, the same answer as server-sent events
            ok_resp["content"]["text/event-stream"] = {"schema": _str}
        op["responses"] = {str(r.status): ok_resp, "400": _error("malformed request"),
                           "404": _error("unknown session, chat or message"), "409": _error("conflict"),
                           "422": _error("invalid field"), "429": _error("a limit was reached"),
                           "503": _error("the store is unavailable")}
        for status in r.errors:
            op["responses"][str(status)] = _error({502: "the model provider failed, refused or cannot be reached",
                                                   504: "the model provider timed out"}[status])
        if r.stream:  # a streamed answer's status is 200 (the stored message comes last in the stream)
            op["responses"].setdefault("200", ok_resp)
        paths.setdefault(r.path, {})[r.method.lower()] = op
    return {"openapi": "3.1.0",
            "info": {"title": "sessiond socket API", "version": version,
                     "description": "The local API of the sessiond daemon, served on its Unix socket."},
            "servers": [{"url": "http://localhost"}],
            "paths": paths, "components": {"schemas": SCHEMAS}}
