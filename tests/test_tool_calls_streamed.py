"""Streamed tool calls through the OpenAI-compatible endpoint, scripted delta by delta (the loopback
provider's faults.script): calls interleaved by index, ids arriving at different deltas or never, a stream
cut in the middle of a call, an app that leaves while a call's chunks are held for its id. What the app is
passed and what the session records name each call alike."""

from __future__ import annotations

import json
import threading

import pytest

import test_model
from conftest import run_cli
from test_tool_calls import _app, httpx
from waiting import wait_for

provider, setup = test_model.provider, test_model.setup


@pytest.fixture
def make(setup):
    return setup[0]


MSGS = [{"role": "user", "content": "look it up"}]
TOOLS = [{"type": "function", "function": {"name": "a", "parameters": {"type": "object", "properties": {}}}}]


def tc(index: int, args: str | None = None, *, id: str | None = None, name: str | None = None) -> dict:
    """A delta of call `index` (its id, its type and name, a piece of its arguments, as given)."""
    d: dict = {"index": index, **({"id": id} if id is not None else {})}
    if name is not None:
        d["type"] = "function"
    f = {"name": name, "arguments": args}
    d["function"] = {k: x for k, x in f.items() if x is not None}
    return {"tool_calls": [d]}


def gemini_calls(finish: str) -> list:
    """Two calls streamed as Gemini streams them (faults.script): no delta has an index, each call (its own
    id) in a chunk of its own, the second's arguments split over a further delta with no id either."""

    def gem(args: str, id: str | None = None, name: str | None = None) -> dict:
        d = tc(0, args, id=id, name=name)
        del d["tool_calls"][0]["index"]
        return d

    return [
        (gem('{"city": "x"}', id="call_1", name="a"), None),
        (gem('{"city"', id="call_2", name="b"), None),
        (gem(': "y"}'), None),
        ({}, finish),
    ]


def recorded(c, sid: str) -> list:
    return [
        (t["id"], t["function"]["name"], t["function"]["arguments"])
        for m in c.messages(sid)["messages"]
        for t in m.get("tool_calls") or ()
    ]


class App:
    """A streamed request to the OpenAI-compatible endpoint read in a thread, each chunk kept as it comes."""

    def __init__(self, d, sid: str):
        self.chunks: list = []
        self.done = threading.Event()
        body = {"model": "echo-1", "messages": MSGS, "tools": TOOLS, "stream": True}
        self._client = httpx.Client(transport=httpx.HTTPTransport(uds=d.socket), timeout=60)
        self._thread = threading.Thread(target=self._read, args=(body, sid), daemon=True)
        self._thread.start()

    def _read(self, body: dict, sid: str) -> None:
        try:
            with self._client.stream(
                "POST", "http://localhost/openai/v1/chat/completions", json=body, headers={"X-Sessiond-Session": sid}
            ) as r:
                for line in r.iter_lines():
                    if line.startswith("data: ") and line != "data: [DONE]":
                        self.chunks.append(json.loads(line[6:]))
        finally:
            self.done.set()

    def ended(self) -> list:
        assert self.done.wait(30)
        self._client.close()
        return self.chunks

    def ids(self) -> dict:
        """Each call index's ids as the app was passed them, in order."""
        seen: dict = {}
        for ch in self.chunks:
            for t in ((ch.get("choices") or [{}])[0].get("delta") or {}).get("tool_calls") or ():
                seen.setdefault(t["index"], []).extend([t["id"]] if t.get("id") else [])
        return seen


def test_calls_interleaved_by_index_each_get_their_own_late_id_once(make, provider):
    p, _ = provider
    p.faults.script = [
        (tc(0, "{", name="a"), None),
        (tc(1, "{", id="call_B", name="b"), None),
        (tc(0, '"x": 1', id="call_A"), None),
        (tc(1, "}"), None),
        (tc(0, "}"), None),
        ({}, "tool_calls"),
    ]
    d = make()
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    app = App(d, sid)
    app.ended()
    assert app.ids() == {0: ["call_A"], 1: ["call_B"]}
    assert recorded(c, sid) == [("call_A", "a", '{"x": 1}'), ("call_B", "b", "{}")]
    sid = c.create_session(model="echo-1")["id"]
    with _app(d, sid).chat.completions.stream(model="echo-1", messages=MSGS, tools=TOOLS) as s:
        final = s.get_final_completion()
    assert [t.id for t in final.choices[0].message.tool_calls] == ["call_A", "call_B"]


def test_a_call_whose_id_never_comes_is_not_held_to_its_end(make, provider):
    """A server that never gives a streamed call an id (vLLM's streams do not): the call's chunks were held
    back from the app until the model had ended the call, so an app saw nothing of it while the model wrote
    it (a long call, a file's text as its arguments: seconds to minutes of silence, which an idle timeout
    may end), and the daemon held every chunk parsed meanwhile (some 2 KB each: a call of a megabyte's
    arguments, half a gigabyte). Now the id is waited for over a few chunks only, then one is made and the
    call passed on as it streams; an id the server gives later still is not passed on again (the app has
    the made one, which the session records)."""
    p, _ = provider
    pieces = [tc(0, "{", name="a")] + [tc(0, f'"k{i}": {i}, ') for i in range(20)]
    p.faults.script = [(x, None) for x in pieces] + [(tc(0, '"z": 0}', id="call_late"), None), ({}, "tool_calls")]
    p.faults.script_wait = len(pieces)  # the model pauses before the rest of its call
    d = make()
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    app = App(d, sid)
    try:
        made = wait_for(lambda: app.ids().get(0), timeout=10, what="the call's first chunks")
    finally:
        p.resume.set()
    app.ended()
    assert made[0].startswith("call_") and app.ids() == {0: made}
    args = "{" + "".join(f'"k{i}": {i}, ' for i in range(20)) + '"z": 0}'
    assert recorded(c, sid) == [(made[0], "a", args)]


def test_a_stream_cut_while_a_call_waits_for_its_id_passes_on_what_arrived_before_the_error(make, provider):
    """The connection to the provider drops while a call's chunks are held for its id: the app is passed
    them, with an id made for the call (the one recorded, the answer marked interrupted), before the
    error event; an id given by then is the one passed on."""
    p, _ = provider
    p.faults.script = [(tc(0, "{", name="a"), None), (tc(1, "{", name="b"), None), (tc(1, '"y"', id="call_B"), None)]
    p.faults.script_cut = True
    d = make()
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    app = App(d, sid)
    chunks = app.ended()
    assert chunks[-1]["error"]["code"] == "provider_stream_cut", chunks[-1]
    made = app.ids()[0]
    assert made[0].startswith("call_") and app.ids() == {0: made, 1: ["call_B"]}
    [answer] = [m for m in c.messages(sid)["messages"] if m["role"] == "assistant"]
    assert answer["interrupted"] and answer["error"] == "provider_stream_cut", answer
    assert recorded(c, sid) == [(made[0], "a", "{"), ("call_B", "b", '{"y"')]


def test_calls_streamed_without_an_index_are_recorded_each_whole(make, provider):
    """Gemini's OpenAI-compatible streams give a call's deltas no `index`, each parallel call (its own id) in
    a chunk of its own, its arguments sometimes split over further deltas with neither index nor id. Each
    delta was put together by its place in its chunk's list, 0: every call one, recorded with the first's
    id and name and all the arguments run together (`{"city": "x"}{"city": "y"}`, no JSON), the others
    lost, from `sessiond ask` as from an app. Now a delta without an index is the call its id names (a new
    one for an id not seen yet), and one with no id either goes on with the call begun last."""
    p, _ = provider

    p.faults.script = gemini_calls("stop")
    d = make()
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    run_cli(d.home, "ask", sid, "weather in x and y?", check=True)
    assert recorded(c, sid) == [("call_1", "a", '{"city": "x"}'), ("call_2", "b", '{"city": "y"}')]
    sid = c.create_session(model="echo-1")["id"]  # the OpenAI-compatible endpoint records them so too
    App(d, sid).ended()
    assert recorded(c, sid) == [("call_1", "a", '{"city": "x"}'), ("call_2", "b", '{"city": "y"}')]


def test_calls_streamed_without_an_index_reach_the_app_with_the_index_they_were_given(make, provider):
    """Gemini's streamed call deltas have no `index`, and their chunks were passed on to the app as their
    bytes: OpenAI's SDK's stream helper (`chat.completions.stream`), which puts a call's deltas together by
    their index, failed on the first of them, and an app reading the raw chunks could not tell two calls'
    deltas apart. Now such a chunk reaches the app with each delta given the index sessiond put it together
    under (only those chunks encoded again), and the SDK's helper gets the calls whole, as recorded."""
    p, _ = provider

    p.faults.script = gemini_calls("tool_calls")
    d = make()
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    app = App(d, sid)
    app.ended()
    assert app.ids() == {0: ["call_1"], 1: ["call_2"]}
    sid = c.create_session(model="echo-1")["id"]
    with _app(d, sid).chat.completions.stream(model="echo-1", messages=MSGS, tools=TOOLS) as s:
        final = s.get_final_completion()
    got = [(t.id, t.function.name, t.function.arguments) for t in final.choices[0].message.tool_calls]
    assert got == [("call_1", "a", '{"city": "x"}'), ("call_2", "b", '{"city": "y"}')]
    assert recorded(c, sid) == got
