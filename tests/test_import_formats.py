"""Other apps' histories in (Claude's conversations.json, Open WebUI's chat export, simonw/llm's logs.db)
and a session out as Markdown: end to end through the CLI against one daemon for the module, the
parsing rules in-process."""

from __future__ import annotations

import copy
import html
import json
import os
import shutil
import sqlite3
import tempfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from conftest import DaemonProc, cli_json, run_cli
from sessiond.daemon import formats, importers, markdown, webuifile
from sessiond.storage.errors import Invalid

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def fixture(name: str):
    with open(os.path.join(FIXTURES, name), encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def d():
    tmp = tempfile.mkdtemp(prefix="sd-fmt-")
    proc = DaemonProc(os.path.join(tmp, "home")).start()
    yield proc
    proc.stop()
    shutil.rmtree(tmp, ignore_errors=True)


def count(d) -> int:
    return d.client().stats()["sessions"]


def refused(d, path: str, *args: str, expect: str) -> None:
    """A malformed file: non-zero exit, one clear line naming the place, a JSON error, nothing imported."""
    before = count(d)
    res = run_cli(d.home, "import-file", path, *args)
    assert res.returncode != 0 and expect in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    res = run_cli(d.home, "import-file", path, *args, "--json")
    assert res.returncode != 0 and expect in json.loads(res.stdout)["error"]["message"], res.stdout
    assert count(d) == before


# ----------------------------------------------------------------------------------------- llm logs.db
LLM_SCHEMA = """
CREATE TABLE [_llm_migrations] ([name] TEXT PRIMARY KEY, [applied_at] TEXT);
CREATE TABLE [conversations] ([id] TEXT PRIMARY KEY, [name] TEXT, [model] TEXT);
CREATE TABLE [responses] (
   [id] TEXT PRIMARY KEY, [model] TEXT, [prompt] TEXT, [system] TEXT, [prompt_json] TEXT,
   [options_json] TEXT, [response] TEXT, [response_json] TEXT,
   [conversation_id] TEXT REFERENCES [conversations]([id]), [duration_ms] INTEGER, [datetime_utc] TEXT,
   [input_tokens] INTEGER, [output_tokens] INTEGER, [token_details] TEXT, [schema_id] TEXT, [resolved_model] TEXT
);
"""


def make_logs_db(path: str, responses: list[tuple]) -> str:
    """A logs.db with llm's tables (its migrations m010..m019) and these (id, conversation_id, prompt,
    system, response, datetime_utc) responses, in two conversations."""
    con = sqlite3.connect(path)
    con.executescript(LLM_SCHEMA)
    con.executemany(
        "INSERT INTO conversations VALUES (?,?,?)",
        [
            ("01hconv0000000000000000001", "Capital cities", "gpt-4o-mini"),
            ("01hconv0000000000000000002", None, "claude-3"),
        ],
    )
    con.executemany(
        "INSERT INTO responses(id, model, conversation_id, prompt, system, response, datetime_utc, duration_ms)"
        " VALUES (?,?,?,?,?,?,?,?)",
        [(r[0], "gpt-4o-mini", *r[1:], 800) for r in responses],
    )
    con.commit()
    con.close()
    return path


GOOD_RESPONSES = [
    # logged out of order on purpose: the import follows datetime_utc
    ("01hresp2", "01hconv0000000000000000001", "And Peru?", "Be brief.", "Lima.", "2024-06-01T10:01:00.000000"),
    (
        "01hresp1",
        "01hconv0000000000000000001",
        "Capital of France?",
        "Be brief.",
        "Paris.",
        "2024-06-01T10:00:00.500000",
    ),
    ("01hresp3", "01hconv0000000000000000002", "Hi", None, "Hello!", "2024-06-02T08:00:00"),
]


def test_llm_logs_db_imports_one_session_per_conversation(d, tmp_path):
    db = make_logs_db(str(tmp_path / "logs.db"), GOOD_RESPONSES)
    made = cli_json(d.home, "import-file", db)["sessions"]  # told a SQLite file by its first bytes
    assert [s["name"] for s in made] == ["Capital cities", None]
    first = made[0]
    assert first["model"] == "gpt-4o-mini" and first["system_prompt"] == "Be brief."
    assert first["metadata"] == {
        "source": "llm",
        "conversation": "01hconv0000000000000000001",
        "created_at": 1717236000.5,
    }
    log = cli_json(d.home, "log", first["id"])
    msgs = log["messages"] if isinstance(log, dict) else log
    assert [(m["role"], m["content"]) for m in msgs] == [
        ("user", "Capital of France?"),
        ("assistant", "Paris."),
        ("user", "And Peru?"),
        ("assistant", "Lima."),
    ]
    got = d.client().messages(first["id"])["messages"]
    assert got[3]["metadata"] == {
        "source": "llm",
        "response": "01hresp2",
        "created_at": 1717236060.0,
        "model": "gpt-4o-mini",
    }
    assert cli_json(d.home, "show", made[1]["id"])["message_count"] == 2


def test_llm_logs_db_malformed_imports_nothing(d, tmp_path):
    bad = make_logs_db(str(tmp_path / "bad.db"), [*GOOD_RESPONSES, ("01hresp4", None, "x", None, "y", "last tuesday")])
    refused(d, bad, "--format", "llm", expect="logs.db: responses row 3 (id 01hresp4).datetime_utc: 'last tuesday'")
    other = tmp_path / "other.db"
    sqlite3.connect(other).executescript("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
    refused(d, str(other), expect="has no responses table")


# llm's tool tables (its migrations m017_tools_tables, m018_tool_instances, m021_tool_results_exception)
LLM_TOOLS_SCHEMA = """
CREATE TABLE [tools] ([id] INTEGER PRIMARY KEY, [hash] TEXT, [name] TEXT, [description] TEXT, [input_schema] TEXT,
   [plugin] TEXT);
CREATE TABLE [tool_responses] ([tool_id] INTEGER, [response_id] TEXT, PRIMARY KEY ([tool_id], [response_id]));
CREATE TABLE [tool_calls] ([id] INTEGER PRIMARY KEY, [response_id] TEXT REFERENCES [responses]([id]),
   [tool_id] INTEGER, [name] TEXT, [arguments] TEXT, [tool_call_id] TEXT);
CREATE TABLE [tool_instances] ([id] INTEGER PRIMARY KEY, [plugin] TEXT, [name] TEXT, [arguments] TEXT);
CREATE TABLE [tool_results] ([id] INTEGER PRIMARY KEY, [response_id] TEXT REFERENCES [responses]([id]),
   [tool_id] INTEGER, [name] TEXT, [output] TEXT, [tool_call_id] TEXT, [instance_id] INTEGER, [exception] TEXT);
"""


def test_llm_tool_calls_and_results_come_in(d, tmp_path):
    """llm (0.26 on) logs a response's tool calls (tool_calls: name, arguments as JSON, the model's
    tool_call_id) and the results the next prompt sent back (tool_results: output, exception); the import
    read only the prompts and answers, so a tool chain came in as a question, an empty answer dropped, and
    the final answer. Now each response is: its prompt, the results it sent (tools' messages answering
    their calls), its answer's text with the calls it made."""
    responses = [
        ("r1", "01hconvtools", "Time in Paris and Lima?", None, "", "2024-06-01T10:00:00"),
        ("r2", "01hconvtools", "", None, "15:00 in Paris, 08:00 in Lima.", "2024-06-01T10:00:05"),
    ]
    db = make_logs_db(str(tmp_path / "logs.db"), responses)
    con = sqlite3.connect(db)
    con.executescript(LLM_TOOLS_SCHEMA)
    con.executemany(
        "INSERT INTO tool_calls(id, response_id, tool_id, name, arguments, tool_call_id) VALUES (?,?,?,?,?,?)",
        [
            (1, "r1", None, "get_time", '{"city": "Paris"}', "call_a"),
            (2, "r1", None, "get_time", '{"city": "Lima"}', None),
        ],
    )
    con.executemany(
        "INSERT INTO tool_results(id, response_id, tool_id, name, output, tool_call_id, exception)"
        " VALUES (?,?,?,?,?,?,?)",
        [(1, "r2", None, "get_time", "15:00", "call_a", None), (2, "r2", None, "get_time", "08:00", None, "slow")],
    )
    con.commit()
    con.close()
    made = cli_json(d.home, "import-file", db, "--format", "llm")["sessions"]
    [made] = [s for s in made if s["metadata"].get("conversation") == "01hconvtools"]
    msgs = d.client().messages(made["id"])["messages"]
    a = {"id": "call_a", "type": "function", "function": {"name": "get_time", "arguments": '{"city": "Paris"}'}}
    b = {"id": "r1.1", "type": "function", "function": {"name": "get_time", "arguments": '{"city": "Lima"}'}}
    keys = ("role", "content", "tool_calls", "tool_call_id", "name")
    assert [{k: m[k] for k in keys if k in m} for m in msgs] == [
        {"role": "user", "content": "Time in Paris and Lima?"},
        {"role": "assistant", "content": "", "tool_calls": [a, b]},
        {"role": "tool", "content": "15:00", "tool_call_id": "call_a", "name": "get_time"},
        {"role": "tool", "content": "08:00", "tool_call_id": "r1.1", "name": "get_time"},
        {"role": "assistant", "content": "15:00 in Paris, 08:00 in Lima."},
    ]
    assert msgs[3]["metadata"]["exception"] == "slow" and msgs[2]["metadata"]["response"] == "r2"
    # the rows as the API takes them: a malformed one refused, naming it
    rows = {"conversations": [], "responses": [{"id": "r", "prompt": "p", "response": "x"}]}
    with pytest.raises(Invalid, match=r"logs\.db: tool_calls row 0\.name"):
        importers.parse_llm({**rows, "tool_calls": [{"response_id": "r", "name": 5}]})
    with pytest.raises(Invalid, match=r"logs\.db: tool_results: expected a list"):
        importers.parse_llm({**rows, "tool_results": {}})


# --------------------------------------------------------------------------------------------- Claude
def test_claude_export_imports_each_conversation_as_a_session(d, tmp_path):
    made = cli_json(d.home, "import-file", os.path.join(FIXTURES, "claude_conversations.json"), "--format", "claude")
    first, second = made["sessions"]
    assert first["name"] == "Sourdough starter" and second["name"] is None
    assert first["metadata"]["conversation"] == "5b1c7c1e-2f0a-4a63-9d0e-0c1f1d7a9e01"
    listed = {s["id"] for s in cli_json(d.home, "ls")["sessions"]}
    assert {first["id"], second["id"]} <= listed
    msgs = d.client().messages(first["id"])["messages"]
    # blocks in order (thinking left out): the text before a tool's result, with the calls made, then the
    # result as the tool's message answering its call, then the text after it; the empty last turn skipped
    call = {
        "id": "a1000000-0000-4000-8000-000000000002.2",
        "type": "function",
        "function": {"name": "web_search", "arguments": '{"query": "starter ratio"}'},
    }
    shapes = [{k: m[k] for k in ("role", "content", "tool_calls", "tool_call_id", "name") if k in m} for m in msgs]
    assert shapes == [
        {"role": "user", "content": "How do I feed a sourdough starter?"},
        {
            "role": "assistant",
            "content": "Discard half, then add equal weights of flour and water.",
            "tool_calls": [call],
        },
        {"role": "tool", "content": "1:1:1", "tool_call_id": call["id"], "name": "web_search"},
        {"role": "assistant", "content": "Keep it warm."},
        {"role": "user", "content": "Here is my schedule."},
    ]
    assert msgs[0]["metadata"]["created_at"] == 1714554005.0
    assert msgs[4]["metadata"]["attachments"] == ["schedule.txt"]
    assert {m["metadata"]["id"] for m in msgs[1:4]} == {"a1000000-0000-4000-8000-000000000002"}


def test_claude_tool_blocks_become_calls_and_results():
    """Claude's export keeps a turn's tool use (tool_use: name, input) and results (tool_result: content,
    is_error) among its text blocks; they were left out, so an imported conversation lost what the
    model did. Each tool_use is a call (its own id when it has one; its input as the arguments' JSON),
    each tool_result the tool's message answering it (by tool_use_id when given, else the earliest call
    of that name not yet answered, else the earliest not answered)."""

    def turn(*blocks):
        m = {"uuid": "m2", "sender": "assistant", "text": "", "content": list(blocks)}
        conv = {"uuid": "c", "chat_messages": [{"uuid": "m1", "sender": "human", "text": "go"}, m]}
        return [
            {k: x for k, x in msg.items() if k != "metadata"}
            for msg in importers.parse_claude([conv])[0]["messages"][1:]
        ]

    def use(name, **kw):
        return {"type": "tool_use", "name": name, "input": {"n": name}, **kw}

    def res(name, text, **kw):
        return {"type": "tool_result", "name": name, "content": [{"type": "text", "text": text}], **kw}

    got = turn(
        use("a", id="toolu_1"),
        use("b"),
        {"type": "text", "text": "both asked"},
        res("b", "B"),
        res("a", "A", tool_use_id="toolu_1", is_error=True),
        {"type": "thinking", "thinking": "hm"},
        {"type": "text", "text": "done"},
    )
    a = {"id": "toolu_1", "type": "function", "function": {"name": "a", "arguments": '{"n": "a"}'}}
    b = {"id": "m2.1", "type": "function", "function": {"name": "b", "arguments": '{"n": "b"}'}}
    assert got == [
        {"role": "assistant", "content": "both asked", "tool_calls": [a, b]},
        {"role": "tool", "content": "B", "tool_call_id": "m2.1", "name": "b"},
        {"role": "tool", "content": "A", "tool_call_id": "toolu_1", "name": "a"},
        {"role": "assistant", "content": "done"},
    ]
    lone = {"uuid": "m2", "sender": "assistant", "content": [use("a"), res("a", "A", is_error=True)]}
    meta = importers.parse_claude([{"uuid": "c", "chat_messages": [lone]}])[0]["messages"]
    assert meta[1]["metadata"]["is_error"] is True
    # a result with no call before it: the tool's message with its name, answering none; a result's text
    # given as a string; a call with no name is left out (as before: nothing to call)
    assert turn({"type": "tool_result", "name": "x", "content": "plain"}, use("")) == [
        {"role": "tool", "content": "plain", "name": "x"}
    ]


def _gpt_node(nid: str, parent: str | None, child: str | None, role: str, content: dict, **msg) -> tuple:
    message = {"id": nid, "author": {"role": role, **msg.pop("author", {})}, "content": content, **msg}
    return nid, {"id": nid, "parent": parent, "children": [child] if child else [], "message": message}


def test_chatgpt_tool_use_becomes_calls_and_results(d, tmp_path):
    """ChatGPT's export writes the model's use of a tool as an assistant message to a `recipient` other than
    "all" (python, browser, dalle.text2im: its code or query as `code` content) and the tool's output as a
    message of author role "tool" (named by author.name; `execution_output` text, `tether_browsing_display`
    result, ...). The call came in as the assistant's text, its result as a tool message answering no
    call, and a browsing result (no `parts`, no `text`) refused the whole file. Now each is a call (id: the
    node's), and the tool's message answers it."""
    order = ["u1", "c1", "t1", "a1", "c2", "t2", "t2b", "t2c", "a2"]
    nodes = [
        ("user", {"content_type": "text", "parts": ["What is 2**10? Then look up sourdough."]}, {}),
        ("assistant", {"content_type": "code", "language": "python", "text": "print(2**10)"}, {"recipient": "python"}),
        ("tool", {"content_type": "execution_output", "text": "1024"}, {"author": {"name": "python"}}),
        ("assistant", {"content_type": "text", "parts": ["It is 1024."]}, {"recipient": "all"}),
        (
            "assistant",
            {"content_type": "code", "language": "unknown", "text": 'search("sourdough")'},
            {"recipient": "browser"},
        ),
        (
            "tool",
            {"content_type": "tether_browsing_display", "result": "# 0 Sourdough - Wikipedia"},
            {"author": {"name": "browser"}},
        ),
        ("tool", {"content_type": "tether_quote", "text": "Sourdough is a bread."}, {"author": {"name": "browser"}}),
        (
            "tool",
            {"content_type": "tether_browsing_code"},
            {"author": {"name": "browser"}},
        ),  # nothing to read: left out
        ("assistant", {"content_type": "text", "parts": ["Sourdough is a bread."]}, {}),
    ]
    mapping = dict(
        _gpt_node(n, order[i - 1] if i else None, order[i + 1] if i + 1 < len(order) else None, role, content, **msg)
        for i, (n, (role, content, msg)) in enumerate(zip(order, nodes, strict=True))
    )
    conv = {"id": "conv-tools", "title": "tools", "current_node": "a2", "mapping": mapping}
    py = {"id": "c1", "type": "function", "function": {"name": "python", "arguments": "print(2**10)"}}
    web = {"id": "c2", "type": "function", "function": {"name": "browser", "arguments": 'search("sourdough")'}}
    want = [
        {"role": "user", "content": "What is 2**10? Then look up sourdough."},
        {"role": "assistant", "content": "", "tool_calls": [py]},
        {"role": "tool", "content": "1024", "tool_call_id": "c1", "name": "python"},
        {"role": "assistant", "content": "It is 1024."},
        {"role": "assistant", "content": "", "tool_calls": [web]},
        {"role": "tool", "content": "# 0 Sourdough - Wikipedia", "tool_call_id": "c2", "name": "browser"},
        {"role": "tool", "content": "Sourdough is a bread.", "tool_call_id": "c2", "name": "browser"},  # same call
        {"role": "assistant", "content": "Sourdough is a bread."},
    ]
    keys = ("role", "content", "tool_calls", "tool_call_id", "name")
    [plan] = formats.parse_chatgpt([conv])
    assert [{k: m[k] for k in keys if k in m} for m in plan["messages"]] == want
    f = tmp_path / "conversations.json"
    f.write_text(json.dumps([conv]))
    [made] = cli_json(d.home, "import-file", str(f), "--format", "chatgpt")["sessions"]
    stored = d.client().messages(made["id"])["messages"]
    assert [{k: m[k] for k in keys if k in m} for m in stored] == want
    # a tool's output with no call before it (an older export): the tool's message, answering none
    lone = {**conv, "current_node": "t1", "mapping": {k: v for k, v in mapping.items() if k in ("u1", "t1")}}
    lone["mapping"]["t1"] = {**lone["mapping"]["t1"], "parent": "u1"}
    [plan] = formats.parse_chatgpt([lone])
    assert [{k: m[k] for k in keys if k in m} for m in plan["messages"]][1] == {
        "role": "tool",
        "content": "1024",
        "name": "python",
    }


def test_claude_export_malformed_imports_nothing(d, tmp_path):
    data = fixture("claude_conversations.json")
    data.append(copy.deepcopy(data[0]))
    data[2]["uuid"] = "feedface"
    data[2]["chat_messages"][1]["sender"] = "robot"
    f = tmp_path / "conversations.json"
    f.write_text(json.dumps(data))
    refused(
        d,
        str(f),
        expect="conversations.json: conversation 2 (uuid feedface): chat_messages[1].sender: expected 'human' or"
        " 'assistant', got 'robot'",
    )


def test_text_that_is_not_unicode_is_named_by_its_place_in_the_file(d, tmp_path):
    """A lone surrogate (an escape JSON allows, which is no text) was refused naming the request's field
    ("body.data[0].content ..."), a place in no file the user has; the error names the file and the place
    in it, as every other malformed file's does."""
    f = tmp_path / "chat.json"
    f.write_text('[{"role": "user", "content": "bad \\ud800 text"}]')
    refused(d, str(f), "--format", "openai", expect=f"{f}: [0].content is not valid Unicode text")
    f = tmp_path / "session.json"
    f.write_text('{"messages": [{"role": "user", "content": "\\ud800"}]}')
    refused(d, str(f), "--format", "openai", expect=f"{f}: messages[0].content is not valid Unicode text")
    res = run_cli(d.home, "import-file", "-", "--format", "openai", input=f.read_text())
    assert "standard input: messages[0].content is not valid Unicode text" in res.stderr, res.stderr


# ------------------------------------------------------------------------------------------ Open WebUI
def test_openwebui_export_imports_the_branch_the_user_sees(d):
    made = cli_json(d.home, "import-file", os.path.join(FIXTURES, "openwebui_export.json"))["sessions"]
    rust, old = made
    assert rust["name"] == "Rust lifetimes" and rust["model"] == "llama3.1:8b" and old["model"] == "gpt-4o"
    msgs = d.client().messages(rust["id"])["messages"]
    assert [m["content"] for m in msgs] == ["What does 'a mean?", "It names a lifetime.", "Thanks"]
    assert [m["metadata"]["created_at"] for m in msgs] == [1717236000.0, 1717236010.0, 1717236020.0]
    assert [m["content"] for m in d.client().messages(old["id"])["messages"]] == ["ping", "pong"]
    assert cli_json(d.home, "show", old["id"])["metadata"]["source"] == "openwebui"


def _webui_turn(cid: str, question: str, answer: str) -> dict:
    """An Open WebUI chat of one turn: the user's question, then the assistant's answer (its text as kept)."""
    return {
        "id": cid,
        "title": cid,
        "chat": {
            "models": ["m"],
            "history": {
                "currentId": "a",
                "messages": {
                    "u": {"id": "u", "parentId": None, "role": "user", "content": question, "timestamp": 1},
                    "a": {"id": "a", "parentId": "u", "role": "assistant", "content": answer, "timestamp": 2},
                },
            },
        },
    }


def test_openwebui_tool_calls_in_an_answer_come_in_as_calls_and_results(d, tmp_path):
    """Open WebUI keeps a model's tool calls inside the answer's text, each as an HTML block
    `<details type="tool_calls" done="true" id=... name=... arguments=... result=...>` (attributes
    HTML-escaped; arguments and result JSON, a string JSON-encoded once more by some versions); they came
    in as that markup. Now the text before them is the assistant's message with the calls, each result a
    tool's message answering its call, and the text after them the assistant's next message."""
    args = html.escape(json.dumps('{"city": "Lisbon"}'))  # (JSON text, JSON-encoded again: upstream's way)
    content = (
        '<details type="reasoning" done="true" duration="2">\n<summary>Thought</summary>\n> hm\n</details>\n'
        "Let me check.\n"
        f'<details type="tool_calls" done="true" id="call_1" name="get_weather" arguments="{args}"'
        f' result="{html.escape(json.dumps("21 degrees, sunny"))}" files="">\n'
        "<summary>Tool Executed</summary>\n</details>\n"
        '<details type="tool_calls" done="true" id="" name="get_time" arguments="{&quot;tz&quot;: &quot;WET&quot;}"'
        ' result="{&quot;h&quot;: 15}">\n<summary>Tool Executed</summary>\n</details>\n'
        "It is 21 degrees at 15:00."
    )
    chat = _webui_turn("owui-tools", "Lisbon?", content)
    weather = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Lisbon"}'},
    }
    clock = {"id": "a.1", "type": "function", "function": {"name": "get_time", "arguments": '{"tz": "WET"}'}}
    keys = ("role", "content", "tool_calls", "tool_call_id", "name")
    want = [
        {"role": "user", "content": "Lisbon?"},
        {
            "role": "assistant",
            "content": '<details type="reasoning" done="true" duration="2">\n<summary>Thought</summary>\n> hm\n'
            "</details>\nLet me check.",
            "tool_calls": [weather, clock],
        },
        {"role": "tool", "content": "21 degrees, sunny", "tool_call_id": "call_1", "name": "get_weather"},
        {"role": "tool", "content": '{"h": 15}', "tool_call_id": "a.1", "name": "get_time"},
        {"role": "assistant", "content": "It is 21 degrees at 15:00."},
    ]
    [plan] = webuifile.parse_openwebui([chat])
    assert [{k: m[k] for k in keys if k in m} for m in plan["messages"]] == want
    f = tmp_path / "owui.json"
    f.write_text(json.dumps([chat]))
    [made] = cli_json(d.home, "import-file", str(f), "--format", "openwebui")["sessions"]
    assert [{k: m[k] for k in keys if k in m} for m in d.client().messages(made["id"])["messages"]] == want


def test_openwebui_calls_in_two_turns_of_one_answer_get_ids_of_their_own(d, tmp_path):
    """An answer that calls a tool, says something, then calls another, with no ids in its blocks: each call's
    id is made of the answer's id and its place. The place was counted from 0 again after the text between
    them, so both calls (and both results) had the id "a.0": which result answered which call was lost."""
    block = '<details type="tool_calls" done="true" name="{}" arguments="{{}}" result="{}">\n</details>\n'
    content = f"Looking.\n{block.format('weather', 'sunny')}Now the time.\n{block.format('clock', 'noon')}Done."
    msgs = {
        "u": {"id": "u", "parentId": None, "role": "user", "content": "Weather and time?", "timestamp": 1},
        "a": {"id": "a", "parentId": "u", "role": "assistant", "content": content, "timestamp": 2},
    }
    chat = {"id": "owui-two", "title": "two", "chat": {"history": {"currentId": "a", "messages": msgs}}}
    f = tmp_path / "owui.json"
    f.write_text(json.dumps([chat]))
    [made] = cli_json(d.home, "import-file", str(f), "--format", "openwebui")["sessions"]
    stored = d.client().messages(made["id"])["messages"]
    calls = [c["id"] for m in stored for c in m.get("tool_calls") or ()]
    answers = [(m["name"], m["tool_call_id"]) for m in stored if m["role"] == "tool"]
    assert len(set(calls)) == 2, calls
    assert answers == [("weather", calls[0]), ("clock", calls[1])]


def test_openwebui_export_malformed_imports_nothing(d, tmp_path):
    data = fixture("openwebui_export.json")
    data[0]["chat"]["history"]["messages"]["m3"]["parentId"] = "gone"
    f = tmp_path / "chat-export.json"
    f.write_text(json.dumps(data))
    refused(
        d,
        str(f),
        "--format",
        "openwebui",
        expect="Open WebUI export: chat 0 (id 0c7f6a52-6a2e-4d0f-9b3e-7f1d2c3b4a01):"
        " chat.history.messages['m3'].parentId names message 'gone'",
    )
    data = fixture("openwebui_export.json")
    data[1]["chat"]["messages"][1]["role"] = "bot"
    f.write_text(json.dumps(data))
    refused(d, str(f), expect="chat 1 (id 0c7f6a52-6a2e-4d0f-9b3e-7f1d2c3b4a02): chat.messages[1].role")


# -------------------------------------------------------------------------------------------- Markdown
def shown(inline) -> str:
    """The text a reader sees of an inline token (escapes resolved, emphasis marks gone)."""
    return "".join(c.content for c in inline.children if c.type in ("text", "text_special", "code_inline"))


def test_markdown_export_keeps_structure_whatever_the_messages_hold(d, tmp_path):
    c = d.client()
    sid = c.create_session(
        name="Notes *draft*", model="gpt-x", settings={"temperature": 0.5}, system_prompt="Be kind."
    )["id"]
    tricky = "# heading\nSome `code` and a fence:\n```\nunclosed"
    c.append(sid, "user", tricky)
    c.append(sid, "assistant", "Sure:\n\n```python\nprint('x')\n```\n\n- a list")
    second = c.create_chat(sid, name="second")["id"]
    c.append(sid, "user", "## my notes\n````\ncode\n````", chat=second)
    res = run_cli(d.home, "export", sid, "--format", "markdown", check=True)
    text = res.stdout
    tokens = MarkdownIt("commonmark").parse(text)  # the structure a Markdown reader sees
    headings = [(t.tag, shown(tokens[i + 1])) for i, t in enumerate(tokens) if t.type == "heading_open"]
    assert headings[0] == ("h1", "Notes *draft*")
    assert [h for tag, h in headings if tag == "h2"] == ["Chat: main (current)", "Chat: second"]
    assert [h.split(" · ")[0] for tag, h in headings if tag == "h3"] == ["user", "assistant", "user"]
    assert len(headings) == 6
    code = [t.content for t in tokens if t.type == "fence"]
    assert code == [tricky + "\n", "print('x')\n", "## my notes\n````\ncode\n````\n"]
    assert "- Model: gpt-x" in text and "- Settings: temperature = 0.5" in text and "Be kind." in text
    # the tricky message is fenced, verbatim, by a fence longer than anything in it
    assert f"````text\n{tricky}\n````" in text
    assert "Sure:\n\n```python\nprint('x')\n```\n\n- a list" in text  # plain Markdown stays as it is
    assert "`````text\n## my notes\n````\ncode\n````\n`````" in text
    out = tmp_path / "s.md"
    assert cli_json(d.home, "export", sid, "--format", "markdown", "-o", str(out)) == {"written": str(out)}
    assert out.read_text() == text
    assert c.export(sid, "markdown") == {"format": "markdown", "markdown": text}


# ---------------------------------------------------------------------------------------- in-process
@pytest.mark.parametrize(
    "text,fenced",
    [
        ("plain *markdown* with `code`", False),
        ("```\ncode\n```\nafter", False),
        ("~~~\n# inside a fence\n~~~", False),
        ("# heading", True),
        ("  ## indented heading", True),
        ("title\n===", True),
        ("a\n---", True),
        ("* * *", True),
        ("<div>", True),
        ("```\nnever closed", True),
        ("said:\r# a heading after a lone carriage return", True),  # CommonMark ends a line at \r too
        ("title\r===", True),
        ("````\n```\n", True),
        ("", True),
    ],
)
def test_markdown_fences_what_could_break_the_document(text, fenced):
    out = markdown.block(text)
    assert (out != text) == fenced
    if fenced:
        fence = out.split("\n", 1)[0].removesuffix("text")
        assert out.endswith("\n" + fence) and text in out and fence not in text


@pytest.mark.parametrize(
    "data,fmt",
    [
        ([{"uuid": "u", "chat_messages": []}], "claude"),
        ([{"id": "c", "chat": {"messages": []}}], "openwebui"),
        ({"conversations": [], "responses": []}, "llm"),
        ([{"mapping": {}, "current_node": "x"}], "chatgpt"),
        ([{"role": "user", "content": "hi"}], "openai"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "openai"),
        ({"format": "sessiond.session.v1"}, "json"),
    ],
)
def test_detect_tells_formats_apart(data, fmt):
    assert importers.detect(data, "sessiond.session.v1") == fmt


@pytest.mark.parametrize("data", [[], {}, [{"uuid": "u", "chat_messages": []}, {"mapping": {}}], "text", 5])
def test_detect_asks_when_unsure(data):
    with pytest.raises(Invalid, match="--format"):
        importers.detect(data, "sessiond.session.v1")


def test_times_as_the_apps_write_them():
    assert importers.timestamp("2024-05-01T09:00:00Z", "t") == importers.timestamp("2024-05-01T09:00:00", "t")
    assert importers.timestamp(1717236000000, "t") == importers.timestamp(1717236000, "t") == 1717236000.0
    for bad in ("soon", -1, float("nan"), True, [1]):
        with pytest.raises(Invalid, match=r"^t: "):
            importers.timestamp(bad, "t")


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
KEYS = [
    "uuid",
    "chat_messages",
    "sender",
    "content",
    "text",
    "type",
    "created_at",
    "chat",
    "history",
    "currentId",
    "messages",
    "parentId",
    "role",
    "timestamp",
    "models",
    "responses",
    "conversations",
    "id",
    "prompt",
    "name",
    "input",
    "tool_use_id",
    "is_error",
]
SHAPED = st.recursive(
    JSON,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=5),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(SHAPED)
def test_importers_refuse_anything_malformed_with_invalid(data):
    """Whatever JSON arrives, an importer answers with a plan or Invalid (a 422), never another error (a 500)."""
    for parse in (importers.parse_claude, webuifile.parse_openwebui, importers.parse_llm):
        try:
            parse(data)
        except Invalid:
            pass
    try:
        importers.detect(data, "sessiond.session.v1")
    except Invalid:
        pass


def test_markdown_times_that_no_calendar_has_do_not_fail_the_export():
    m = {"role": "user", "content": "x", "chat": "main", "created_at": 1.0, "metadata": {"created_at": 1e300}}
    text = markdown.render({"id": "s", "created_at": 1e300}, [{"id": "main", "current": True}], [m])
    assert "### user · 1970-01-01 00:00:01 UTC" in text and "- Created: unknown time" in text


def test_sniffing_a_path_no_file_can_have_is_no_crash(tmp_path):
    from sessiond.cli.llmdb import is_sqlite

    assert not is_sqlite("a\0b") and not is_sqlite(str(tmp_path)) and not is_sqlite(str(tmp_path / "none"))


def test_session_file_round_trip_keeps_each_message_in_its_chat(d, tmp_path):
    """`export --format json` then `import-file`: each message goes back into the chat it was in, and the
    chats keep their order (every message went into "main", and "main" was listed after the others)."""
    c = d.client()
    sid = c.create_session(name="two chats")["id"]
    c.append(sid, "user", "in main")
    side = c.create_chat(sid, name="side")["id"]
    c.append(sid, "user", "in side", chat=side)
    c.append(sid, "assistant", "main again", chat="main")
    f = tmp_path / "two.json"
    run_cli(d.home, "export", sid, "-o", str(f), check=True)
    data = json.loads(f.read_text())
    data["session"]["id"] = "two-chats-copy"
    f.write_text(json.dumps(data))
    cli_json(d.home, "import-file", str(f))
    got = c.messages("two-chats-copy", all_chats=True)["messages"]
    assert [(m["chat"], m["content"]) for m in got] == [("main", "in main"), (side, "in side"), ("main", "main again")]
    chat_ids = [[ch["id"] for ch in c.list_chats(s)["chats"]] for s in (sid, "two-chats-copy")]
    assert chat_ids[0] == chat_ids[1] == ["main", side]
    data["messages"][1]["chat"] = "nowhere"
    data["session"]["id"] = "two-chats-bad"
    f.write_text(json.dumps(data))
    refused(d, str(f), expect="messages[1] is in chat 'nowhere'")


def test_openai_file_round_trip_keeps_the_model_settings(d, tmp_path):
    """`export --format openai` writes the chat's settings beside its model (temperature, top_p, max_tokens,
    top_k: an OpenAI request body); `import-file` of that file kept the model and dropped the settings."""
    c = d.client()
    settings = {"temperature": 0.25, "top_p": 0.9, "max_tokens": 300, "top_k": 40}
    sid = c.create_session(model="gpt-x", settings=settings)["id"]
    c.append(sid, "user", "hello")
    f = tmp_path / "oa.json"
    run_cli(d.home, "export", sid, "--format", "openai", "-o", str(f), check=True)
    assert {k: json.loads(f.read_text())[k] for k in settings} == settings
    new = cli_json(d.home, "import-file", str(f))["sessions"][0]
    assert new["model"] == "gpt-x" and new["settings"] == settings
    data = json.loads(f.read_text())
    data["temperature"] = "hot"
    f.write_text(json.dumps(data))
    refused(d, str(f), expect="temperature")


def test_a_session_file_imported_as_openai_is_refused_naming_the_json_format(d, tmp_path):
    """`import-file --format openai` of a sessiond session file (`export --format json`) imported only its
    messages, all into one chat, and dropped its other chats and its settings without a word; it is refused
    now, naming the format that keeps them, and nothing is imported."""
    c = d.client()
    sid = c.create_session(name="kept whole", settings={"temperature": 0.5})["id"]
    c.append(sid, "user", "in main")
    side = c.create_chat(sid, name="side")["id"]
    c.append(sid, "user", "in side", chat=side)
    f = tmp_path / "whole.json"
    run_cli(d.home, "export", sid, "-o", str(f), check=True)
    refused(d, str(f), "--format", "openai", expect="a sessiond session file")
    res = run_cli(d.home, "import-file", str(f), "--format", "openai")
    assert "--format json" in res.stderr, res.stderr


CALL = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
SIGNED = {"extra_content": {"google": {"thought_signature": "sig"}}}


@pytest.mark.parametrize(
    "fmt, message, expect",
    [
        ("openai", {"tool_calls": [{**CALL, **SIGNED}]}, None),
        ("json", {"tool_calls": [CALL], "call_fields": {"call_1": SIGNED}}, None),
        ("openai", {"tool_calls": [{**CALL, "extra": "x" * (64 << 10)}]}, "larger than 64 KiB"),
        ("json", {"tool_calls": [CALL], "call_fields": {"call_1": {"x": "y" * (64 << 10)}}}, "larger than 64 KiB"),
        ("json", {"tool_calls": [CALL], "call_fields": {"call_9": SIGNED}}, "messages[0].call_fields names 'call_9'"),
        ("json", {"tool_calls": [CALL], "call_fields": {"call_1": {"id": "x"}}}, "holds id"),
        ("json", {"tool_calls": [CALL], "call_fields": {"call_1": "sig"}}, "must be an object"),
        ("json", {"call_fields": {"call_1": SIGNED}}, "names 'call_1'"),
    ],
)
def test_a_file_s_calls_keep_their_provider_fields_checked_as_the_daemon_keeps_them(d, tmp_path, fmt, message, expect):
    """A call's provider fields in an OpenAI-shaped file (in the call, beside id, type and function) or a
    session file (`call_fields`, by call id) were dropped by `import-file`; they are kept now, checked as a
    model's answer's are (each call's at most 64 KiB as JSON, beside its own fields): a file that breaks that
    is refused, naming the place, and nothing is imported."""
    m = {"role": "assistant", "content": "", **message}
    if fmt == "json":
        data = {"format": formats.JSON_FORMAT, "session": {}, "messages": [m]}
    else:
        data = [{"role": "user", "content": "weather?"}, m]
    f = tmp_path / "calls.json"
    f.write_text(json.dumps(data))
    if expect is not None:
        return refused(d, str(f), "--format", fmt, expect=expect)
    [s] = cli_json(d.home, "import-file", str(f), "--format", fmt)["sessions"]
    [kept] = [x for x in d.client().messages(s["id"])["messages"] if x.get("tool_calls")]
    assert kept["tool_calls"] == [CALL] and kept["call_fields"] == {"call_1": SIGNED}, kept


def _chatgpt(cid: str, title: str, *texts: str) -> dict:
    """A linear ChatGPT conversation with its id (conversations.json's shape)."""
    mapping = {
        f"n{i}": {
            "id": f"n{i}",
            "parent": f"n{i - 1}" if i else None,
            "children": [f"n{i + 1}"] if i + 1 < len(texts) else [],
            "message": {"author": {"role": ("user", "assistant")[i % 2]}, "content": {"parts": [text]}},
        }
        for i, text in enumerate(texts)
    }
    return {"id": cid, "title": title, "mapping": mapping, "current_node": f"n{len(texts) - 1}"}


def test_an_export_imported_again_skips_the_conversations_already_here(daemon, tmp_path):
    """Importing the same ChatGPT, Claude or Open WebUI export twice made every conversation a second
    session; now a conversation already imported (its source and id, in the session's metadata) is skipped,
    naming the session that holds it, and only the new ones are made."""
    gpt = tmp_path / "conversations.json"
    gpt.write_text(json.dumps([_chatgpt("c-1", "first", "Hi", "Hello!")]))
    files = [
        (str(gpt), "chatgpt"),
        (os.path.join(FIXTURES, "claude_conversations.json"), "claude"),
        (os.path.join(FIXTURES, "openwebui_export.json"), "openwebui"),
    ]
    made = {}
    for path, fmt in files:
        made[fmt] = [s["id"] for s in cli_json(daemon.home, "import-file", path, "--format", fmt)["sessions"]]
    before = sorted(s["id"] for s in cli_json(daemon.home, "ls")["sessions"])
    for path, fmt in files:
        again = cli_json(daemon.home, "import-file", path, "--format", fmt)
        assert again["sessions"] == []
        assert [s["session"] for s in again["skipped"]] == made[fmt]
        assert {s["source"] for s in again["skipped"]} == {fmt}
    res = run_cli(daemon.home, "import-file", str(gpt), check=True)
    assert res.stdout == "" and f"already imported as session {made['chatgpt'][0]}" in res.stderr, res.stderr
    assert sorted(s["id"] for s in cli_json(daemon.home, "ls")["sessions"]) == before
    # the export made again later, with a new conversation beside the old: only the new one is imported
    gpt.write_text(json.dumps([_chatgpt("c-1", "first", "Hi", "Hello!"), _chatgpt("c-2", "second", "Yo")]))
    again = cli_json(daemon.home, "import-file", str(gpt))
    assert [s["name"] for s in again["sessions"]] == ["second"]
    assert [s["session"] for s in again["skipped"]] == made["chatgpt"]
    # deleted, a conversation imports again
    run_cli(daemon.home, "rm", made["chatgpt"][0], check=True)
    assert [s["name"] for s in cli_json(daemon.home, "import-file", str(gpt))["sessions"]] == ["first"]


def test_openwebui_arguments_nested_too_deeply_to_read_come_in_as_their_text(d):
    """An attribute of Open WebUI's call block is read as JSON when it is JSON; one nested deeper than Python's
    JSON reader goes (thousands of brackets) made the import a 500, "internal error". It is kept as its text, as
    an attribute that is not JSON is."""
    deep = "[" * 5000 + "]" * 5000
    content = f'<details type="tool_calls" id="t1" name="f" arguments="{deep}" result="ok">x</details> after'
    chat = _webui_turn("owui-deep", "go", content)
    [made] = d.client().import_file([chat], "openwebui")["sessions"]
    msgs = d.client().messages(made["id"])["messages"]
    assert msgs[1]["tool_calls"][0]["function"]["arguments"] == deep
    assert [m["content"] for m in msgs[2:]] == ["ok", "after"]
