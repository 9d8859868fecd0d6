"""tests/servers/openai_server.py's loopback model answering as xAI's reasoning models count their usage: REASONING
hidden tokens said apart in completion_tokens_details.reasoning_tokens and counted beside completion_tokens, not in
them (total_tokens adds the three; Faults.reasoning_beside). Usage: PORT REASONING"""

from __future__ import annotations

import os
import sys

from aiohttp import web

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests"))
from servers.openai_server import Faults, Provider, make_app

faults = Faults(reasoning=int(sys.argv[2]), reasoning_beside=True)
web.run_app(make_app(Provider(faults=faults)), host="127.0.0.1", port=int(sys.argv[1]), print=None)
