"""A session imported from ChatGPT's export keeps its tools' names and code as exported (`dalle.text2im`,
`python` with Python source as its arguments, a tool's output that answers no call, a call whose output,
an image, is not imported): sent to a model as
they are, OpenAI's API refused the whole request (400: a function name outside ^[a-zA-Z0-9_-]{1,64}$,
arguments that are not JSON, a tool message answering no call, a call no tool message answers), so the
conversation could not be continued. Now the request is made sendable (README, "Talk to a model"), the
stored messages unchanged."""

from __future__ import annotations

import json
import os

from conftest import cli_json, started_with_provider
from servers.openai_server import Provider, serve_threaded

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "chatgpt_tools_conversations.json")


def test_an_imported_chatgpt_conversation_with_tool_use_can_be_continued(make_daemon):
    p, server = serve_threaded(Provider())
    try:
        d = started_with_provider(make_daemon, f"http://127.0.0.1:{server.port}/v1")
        [made] = cli_json(d.home, "import-file", FIXTURE, "--format", "chatgpt")["sessions"]
        sid = made["id"]
        before = d.client().messages(sid)["messages"]
        answer = cli_json(d.home, "ask", sid, "--model", "echo-1", "How long should it proof?")
        assert answer["content"] == "echo: How long should it proof?"
        [req] = p.requests
        sent = req["messages"]
        calls = [c["function"] for m in sent for c in m.get("tool_calls") or ()]
        # names mapped (invalid characters to "_"), arguments that are not JSON sent as {"input": the text}
        assert calls == [
            {"name": "python", "arguments": json.dumps({"input": "print(2**10)"})},
            {"name": "browser", "arguments": json.dumps({"input": 'search("sourdough")'})},
            {"name": "dalle_text2im", "arguments": '{"prompt": "a sourdough loaf", "size": "1024x1024"}'},
        ]
        tools = [m for m in sent if m["role"] == "tool"]
        assert [m["content"] for m in tools] == [
            "1024",
            "# 0 Sourdough - Wikipedia\n\nSourdough is a bread.",  # a call's several outputs, as one
            "(no result of this call was recorded)",  # its output was an image, which is not imported
        ]
        # the output answering no call: a note in the user's turn, naming the tool
        [note] = [m for m in sent if "Code execution state reset." in (m["content"] or "")]
        assert note["role"] == "user" and "python" in note["content"]
        # what the session holds is as imported
        after = d.client().messages(sid)["messages"]
        assert after[: len(before)] == before
        assert [c["function"]["name"] for m in after for c in m.get("tool_calls") or ()] == [
            "python",
            "browser",
            "dalle.text2im",
        ]
    finally:
        server.stop()
