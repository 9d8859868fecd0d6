"""An official openai SDK app talking to a daemon's OpenAI endpoint. Usage: HOME_STATUS_JSON SID MESSAGES_JSON [N]
(HOME_STATUS_JSON: the output of `sessiond status --json`). Prints the text of choice PICK (environment, default 0)
and, on standard error, the response's count of choices and its usage. STREAM=1: asked as a stream (the text of
choice PICK put together from its chunks; no usage)."""

from __future__ import annotations

import json
import os
import sys

import openai

st = json.loads(sys.argv[1])["openai"]
key = open(st["api_key_file"]).read().strip()
headers = {"X-Sessiond-Session": sys.argv[2]}
app = openai.OpenAI(base_url=st["base_url"], api_key=key, max_retries=0, default_headers=headers)
n = {"n": int(sys.argv[4])} if len(sys.argv) > 4 else {}
pick = int(os.environ.get("PICK", "0"))
if os.environ.get("STREAM"):
    texts: dict[int, str] = {}
    for chunk in app.chat.completions.create(model="echo-1", messages=json.loads(sys.argv[3]), stream=True, **n):
        for c in chunk.choices:
            texts[c.index] = texts.get(c.index, "") + (c.delta.content or "")
    print(texts[pick])
    print(f"choices {len(texts)} (streamed)", file=sys.stderr)
else:
    r = app.chat.completions.create(model="echo-1", messages=json.loads(sys.argv[3]), **n)
    print(r.choices[pick].message.content)
    usage = f"{r.usage.prompt_tokens}/{r.usage.completion_tokens}" if r.usage else "none"
    print(f"choices {len(r.choices)} usage {usage}", file=sys.stderr)
