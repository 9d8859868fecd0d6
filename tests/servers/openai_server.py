"""A loopback OpenAI-compatible chat-completions server (the wire format of POST /v1/chat/completions
and GET /v1/models, as OpenAI documents it and Ollama, llama.cpp and vLLM serve it), with a
deterministic model: it answers "echo: " + the last user message, word by word. Offered `tools` and
given a user's message last, it answers with a call of the first tool instead, its arguments
`{"q": the message}` (streamed as OpenAI streams a call: the id and name first, the arguments in pieces).

Streaming (server-sent events, `data: {chunk}` ... `data: [DONE]`, the usage chunk when
stream_options.include_usage is set) and non-streaming answers, usage counts, and `faults` that make
it misbehave the ways a real provider does: 401, 404 for an unknown model, 429 with Retry-After, 500,
a stream cut off in the middle, a slow stream, no answer at all, a tool call without its id or name, a
streamed call whose id comes in its second delta, a request's `n` answers streamed together (each chunk
naming its choice's index), a stream given delta by delta (`script`, paused at a
chunk until `resume` is set, or cut after it), calls signed as Gemini 3 signs them (`signed`: each call carries
`extra_content: {"google": {"thought_signature"}}`, and a history whose call of the current turn lacks the
signature given with it is refused, as Gemini 3 refuses it). Like
OpenAI's API it refuses (400, invalid_request_error) a history whose call has a function name not matching
^[a-zA-Z0-9_-]{1,64}$ or arguments that are not JSON text, or no id; whose tool message has no tool_call_id
or answers no call of the assistant's message just before it; or whose call no tool message answers (at
the history's end too).
It keeps every request it got, and notices when a client goes away in the middle of a stream."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from dataclasses import dataclass, field

from aiohttp import web

MODELS = ("echo-1", "echo-2")


def _gone(request: web.Request) -> bool:
    """Whether the request's client has gone away (its connection closed)."""
    return request.transport is None or request.transport.is_closing()


async def _silent(request: web.Request, seconds: float) -> None:
    """The model says nothing for `seconds`, or until the client goes away: aiohttp does not cancel a handler
    whose client left, so a plain sleep held every test of a client leaving a silent model for the whole
    silence (~5 s each) before the server noticed. What the client sees is the same: nothing until then."""
    end = time.monotonic() + seconds
    while not _gone(request) and (left := end - time.monotonic()) > 0:
        await asyncio.sleep(min(left, 0.05))


@dataclass
class Faults:
    status: int | None = None  # answer the next `times` completions with this status (401, 429, 500)
    times: int = 1
    retry_after: int | None = None  # Retry-After of a 429
    cut_after: int | None = None  # a stream closes its connection after this many word chunks, no [DONE]
    delay: float = 0.0  # seconds between two chunks of a stream
    hang: float = 0.0  # seconds before answering anything
    held: bool = False  # each completion waits for `resume` before it is answered (a model thinking, held)
    eof_delay: float = 0.0  # seconds between a stream's [DONE] and the end of its body (a proxy's late flush)
    role_chunk: bool = True  # a stream begins with a chunk of no text (OpenAI's); else with the first word's
    first_delay: float = 0.0  # seconds between a stream's first chunk of no text and its first word
    repeat: int = 1  # the answer's text this many times over (an answer longer than a question can be)
    empty: bool = False  # the model answers nothing (no text: a stream of no word chunks)
    call_unasked: str | None = None  # the model calls this tool even when the request offers none
    call_without: str | None = None  # "id" or "name": its tool call is given without it (as some servers do)
    call_text: str = ""  # what the model says beside its tool call (before it, in a stream)
    call_id_late: bool = False  # a stream gives its call's id in the call's second delta, not its first
    finish_chunk: bool = True  # a stream's last chunk before the usage and [DONE] gives its finish_reason
    # a stream's deltas as given, each (delta, finish_reason), in place of its answer (after the role chunk)
    script: list | None = None
    script_cut: bool = False  # after the script, the connection drops (no [DONE])
    script_wait: int | None = None  # after this many of the script's chunks, wait for `resume` (then go on)
    # Gemini 3's thought signatures: each call carries one (its extra_content), a stream's in the call's first
    # delta, and a history whose call of the current turn (after the last user's message) lacks it is refused
    signed: bool = False
    # a reasoning model's hidden tokens: counted in its usage's completion_tokens (billed), and said apart in
    # completion_tokens_details.reasoning_tokens, as OpenAI's o-series and gpt-5 models report them
    reasoning: int = 0
    # the reasoning tokens counted beside completion_tokens, not in them (total_tokens adds the three), as xAI's do
    reasoning_beside: bool = False


@dataclass
class Provider:
    key: str | None = None  # the bearer key it requires, if any
    faults: Faults = field(default_factory=Faults)
    requests: list = field(default_factory=list)  # every completion request's JSON body
    peers: list = field(default_factory=list)  # each completion request's client address (a reused connection)
    streams_stopped: int = 0  # streams whose client went away before the end
    cuts: int = 0  # streams it cut (faults.cut_after): what it wrote is sent, then the connection dropped
    left_unanswered: int = 0  # requests whose client went away while it was still thinking (`hang`)
    arrived: int = 0  # completion requests that reached the provider, counted before any fault
    completed: int = 0
    words_sent: int = 0  # a stream's word chunks written, all streams together
    models: tuple = MODELS  # what its GET /v1/models lists
    resume: threading.Event = field(default_factory=threading.Event)  # (faults.script_wait, faults.held)
    scripted: int = 0  # the script's chunks written, all streams together

    def answer(self, body: dict) -> str:
        last = next((m for m in reversed(body["messages"]) if m.get("role") == "user"), None)
        text = last.get("content") if last else ""
        if isinstance(text, list):
            text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
        return "echo: " + (text or "(nothing)")

    def tool_call(self, body: dict) -> dict | None:
        """The call of the first tool offered, when the last message is the user's (else None: text)."""
        tools, msgs = body.get("tools"), body["messages"]
        if self.faults.call_unasked:
            tools = [{"type": "function", "function": {"name": self.faults.call_unasked}}]
        if not tools or not msgs or msgs[-1].get("role") != "user":
            return None
        n = sum(len(m.get("tool_calls") or ()) for m in msgs)
        args = json.dumps({"q": msgs[-1].get("content") or ""})
        call = {
            "id": f"call_{n + 1}",
            "type": "function",
            "function": {"name": tools[0]["function"]["name"], "arguments": args},
        }
        if self.faults.signed:
            call["extra_content"] = {"google": {"thought_signature": signature(call["id"])}}
        if self.faults.call_without == "id":
            del call["id"]
        elif self.faults.call_without == "name":
            del call["function"]["name"]
        return call

    @staticmethod
    def prompt_tokens(body: dict) -> int:
        return sum(len(str(m.get("content") or "")) // 4 + 4 for m in body["messages"])


def _err(status: int, message: str, typ: str, code: str | None, headers: dict | None = None) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": typ, "param": None, "code": code}}, status=status, headers=headers
    )


def signature(call_id: str) -> str:
    """The thought signature the model gives its call `call_id` (faults.signed)."""
    return "sig-" + call_id


def unsigned(msgs: list) -> tuple[str, str] | None:
    """(message, param) of Gemini 3's refusal of a history whose call of the current turn (the messages after
    the last user's) lacks the thought signature given with it, else None."""
    last_user = max((i for i, m in enumerate(msgs) if isinstance(m, dict) and m.get("role") == "user"), default=-1)
    for i, m in enumerate(msgs[last_user + 1 :], last_user + 1):
        for j, c in enumerate((m.get("tool_calls") or ()) if isinstance(m, dict) else ()):
            sig = ((c.get("extra_content") or {}).get("google") or {}).get("thought_signature")
            if sig != signature(str(c.get("id"))):
                name = (c.get("function") or {}).get("name")
                return (
                    f"Function call is missing a thought_signature in functionCall parts. This is required for "
                    f"tools to work correctly. Additional data, function call `default_api:{name}` , position "
                    f"{i + 1}.",
                    f"messages.[{i}].tool_calls.[{j}]",
                )
    return None


NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")  # a function's name, as OpenAI's API takes it


def _unanswered(ids: list) -> tuple[str, str]:
    return (
        "An assistant message with 'tool_calls' must be followed by tool messages responding to each "
        f"'tool_call_id'. The following tool_call_ids did not have response messages: {', '.join(ids)}",
        "messages",
    )


def refused_history(msgs: list) -> tuple[str, str] | None:
    """(message, param) of what OpenAI's API refuses with a 400 in a request's history, else None: a call
    with no id, its function name not matching NAME, its arguments not JSON text; a tool's message with no
    tool_call_id, or answering no call of the assistant's message just before it (its tool messages
    between); and a call no tool's message answers before the next message of another role, or before the
    history's end (a request ending in a call is refused too)."""
    open_ids: set = set()
    unanswered: list = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            continue
        if m.get("role") == "tool":
            if not m.get("tool_call_id"):
                return (
                    "Missing parameter 'tool_call_id': messages with role 'tool' must have a 'tool_call_id'.",
                    f"messages.[{i}].tool_call_id",
                )
            if m.get("tool_call_id") not in open_ids:
                return (
                    "Invalid parameter: messages with role 'tool' must be a response to a preceeding message "
                    "with 'tool_calls'.",
                    f"messages.[{i}].role",
                )
            unanswered = [u for u in unanswered if u != m.get("tool_call_id")]
            continue
        if unanswered:
            return _unanswered(unanswered)
        open_ids = set()
        for j, c in enumerate(m.get("tool_calls") or ()):
            if not isinstance(c.get("id"), str) or not c["id"]:
                return (
                    f"Missing required parameter: 'messages[{i}].tool_calls[{j}].id'.",
                    f"messages.[{i}].tool_calls.[{j}].id",
                )
            f = c.get("function") or {}
            where = f"messages[{i}].tool_calls[{j}].function"
            if not isinstance(f.get("name"), str) or not NAME.match(f["name"]):
                return (
                    f"Invalid '{where}.name': string does not match pattern. Expected a string that matches "
                    "the pattern '^[a-zA-Z0-9_-]{1,64}$'.",
                    f"{where}.name",
                )
            try:
                json.loads(f.get("arguments"))
            except (TypeError, ValueError):
                return (f"Invalid '{where}.arguments': the arguments are not valid JSON.", f"{where}.arguments")
            open_ids.add(c.get("id"))
            unanswered.append(c.get("id"))
    return _unanswered(unanswered) if unanswered else None


def make_app(p: Provider) -> web.Application:
    def auth(request: web.Request) -> web.Response | None:
        if p.key is not None and request.headers.get("Authorization") != f"Bearer {p.key}":
            return _err(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        return None

    async def models(request: web.Request):
        if (bad := auth(request)) is not None:
            return bad
        return web.json_response(
            {
                "object": "list",
                "data": [{"id": m, "object": "model", "created": 1700000000, "owned_by": "loopback"} for m in p.models],
            }
        )

    async def completions(request: web.Request):
        f = p.faults
        p.arrived += 1
        if f.hang:
            await _silent(request, f.hang)  # the fault itself (a provider that does not answer), not a wait
            if _gone(request):  # its client stopped waiting
                p.left_unanswered += 1
                return web.Response(status=499)
        if (bad := auth(request)) is not None:
            return bad
        body = await request.json()
        p.requests.append(body)
        if f.held:
            await asyncio.to_thread(p.resume.wait, 30)  # the fault itself: a model that thinks until let go
        p.peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        if f.status is not None and f.times > 0:
            f.times -= 1
            status = f.status
            if f.times == 0:
                f.status = None
            if status == 429:
                return _err(
                    429,
                    "Rate limit reached for requests",
                    "requests",
                    "rate_limit_exceeded",
                    {"Retry-After": str(f.retry_after)} if f.retry_after is not None else None,
                )
            if status == 401:
                return _err(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
            return _err(status, "The server had an error while processing your request.", "server_error", None)
        refused = refused_history(body.get("messages") or [])
        if refused is None and f.signed:
            refused = unsigned(body.get("messages") or [])
        if refused is not None:
            return web.json_response(
                {
                    "error": {
                        "message": refused[0],
                        "type": "invalid_request_error",
                        "param": refused[1],
                        "code": "invalid_value",
                    }
                },
                status=400,
            )
        model = body.get("model")
        if model not in MODELS:
            return _err(
                404,
                f"The model `{model}` does not exist or you do not have access to it.",
                "invalid_request_error",
                "model_not_found",
            )
        call = p.tool_call(body)
        text = "" if call else p.answer(body) * f.repeat
        words = text.split(" ") if text else []
        pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
        if call:  # its arguments in pieces of 4 characters, as a stream delivers them
            a = call["function"]["arguments"]
            pieces = [a[i : i + 4] for i in range(0, len(a), 4)]
        elif f.empty:
            text, pieces = "", []
        # `n` answers (a request's n): answer j > 0 is the first's in capitals; the usage counts them all, as
        # OpenAI bills them (a stream's chunks of the first are each followed by the others', naming its index)
        n = body.get("n") if isinstance(body.get("n"), int) and body["n"] > 1 and not call else 1
        usage = {
            "prompt_tokens": p.prompt_tokens(body),
            "completion_tokens": len(pieces) * n,
            "total_tokens": p.prompt_tokens(body) + len(pieces) * n,
        }
        if f.reasoning:
            usage["completion_tokens"] += 0 if f.reasoning_beside else f.reasoning
            usage["total_tokens"] += f.reasoning
            usage["completion_tokens_details"] = {"reasoning_tokens": f.reasoning}
        cid, created = f"chatcmpl-{len(p.requests)}", int(time.time())
        if not body.get("stream"):
            raw = json.dumps(
                {
                    "id": cid,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {
                            "index": j,
                            "message": {"role": "assistant", "content": f.call_text or None, "tool_calls": [call]}
                            if call
                            else {"role": "assistant", "content": text.upper() if j else text},
                            "finish_reason": "tool_calls" if call else "stop",
                            "logprobs": None,
                        }
                        for j in range(n)
                    ],
                    "usage": usage,
                }
            ).encode()
            if f.cut_after is not None:  # half the body, then the connection drops
                resp = web.StreamResponse(headers={"Content-Type": "application/json"})
                resp.content_length = len(raw)
                await resp.prepare(request)
                await resp.write(raw[: len(raw) // 2])
                request.transport.abort()
                return resp
            p.completed += 1
            return web.Response(body=raw, content_type="application/json")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        with_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: dict, finish: str | None = None, index: int = 0) -> bytes:
            c = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}],
            }
            if with_usage:
                c["usage"] = None
            return b"data: " + json.dumps(c).encode() + b"\n\n"

        try:
            if f.script is not None:
                await resp.write(chunk({"role": "assistant", "content": ""}))
                for i, (delta, finish) in enumerate(f.script):
                    if f.script_wait is not None and i == f.script_wait:
                        await asyncio.to_thread(p.resume.wait, 30)  # the fault itself: a model that pauses
                    await resp.write(chunk(delta, finish))
                    p.scripted += 1
                if f.script_cut:
                    request.transport.abort()
                    p.cuts += 1
                    return resp
                pieces, call = [], None
            elif f.role_chunk:
                await resp.write(chunk({"role": "assistant", "content": ""}))
                if f.first_delay:
                    await _silent(request, f.first_delay)  # the fault itself (a model slow to begin), not a wait
            for i, piece in enumerate(pieces):
                if f.cut_after is not None and i >= f.cut_after:
                    request.transport.abort()  # the connection drops: no [DONE], no end of the chunked body
                    p.cuts += 1
                    return resp
                if f.delay and i:
                    await _silent(request, f.delay)  # the fault itself (a slow stream), not a wait
                if call:
                    if i == 0 and f.call_text:
                        await resp.write(chunk({"content": f.call_text}))
                    head = {k: call[k] for k in ("id", "type", "extra_content") if k in call}
                    head["function"] = {k: v for k, v in call["function"].items() if k == "name"}
                    part = {"index": 0, **(head if i == 0 else {}), "function": {"arguments": piece}}
                    if i == 0:
                        part["function"] = {**head["function"], "arguments": piece}
                    if f.call_id_late and "id" in call and i < 2:  # (its arguments are at least 2 pieces)
                        part.pop("id", None)
                        if i == 1:
                            part["id"] = call["id"]
                    await resp.write(chunk({"tool_calls": [part]}))
                else:
                    await resp.write(chunk({"content": piece}))
                    for j in range(1, n):
                        await resp.write(chunk({"content": piece.upper()}, index=j))
                p.words_sent += 1
            if f.finish_chunk and f.script is None:
                for j in range(n):
                    await resp.write(chunk({}, "tool_calls" if call else "stop", index=j))
            if with_usage:
                await resp.write(
                    b"data: "
                    + json.dumps(
                        {
                            "id": cid,
                            "object": "chat.completion.chunk",
                            "created": created,
                            "model": model,
                            "choices": [],
                            "usage": usage,
                        }
                    ).encode()
                    + b"\n\n"
                )
            await resp.write(b"data: [DONE]\n\n")
            if f.eof_delay:
                await _silent(request, f.eof_delay)  # the fault itself (a late end of the body), not a wait
            await resp.write_eof()
            p.completed += 1
        except (ConnectionResetError, ConnectionError, RuntimeError):
            p.streams_stopped += 1
        except asyncio.CancelledError:
            p.streams_stopped += 1
            raise
        return resp

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", completions)
    return app


def serve_threaded(provider: Provider | None = None):
    """(provider, running server in its own thread); base URL: f"http://127.0.0.1:{server.port}/v1"."""
    from .s5portal import Threaded

    provider = provider or Provider()
    return provider, Threaded(make_app(provider)).start()


if __name__ == "__main__":  # python tests/servers/openai_server.py PORT: a loopback model to try sessiond with
    import sys

    web.run_app(make_app(Provider()), host="127.0.0.1", port=int(sys.argv[1]) if len(sys.argv) > 1 else 8000)
