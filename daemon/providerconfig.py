"""The [providers.NAME] tables of a home's config.toml (daemon/home.py's Config reads the file): each model
provider's URL, how its API key is found (a file or an environment variable, never the key itself in the
file) and its timeouts, checked before the daemon starts."""

from __future__ import annotations

import math
import os
import re

from ..api.locate import HomeError
from ..storage.redact import is_api_key

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # an environment variable's name, as a shell takes it
PROVIDER_KEYS = ("base_url", "api_key_file", "api_key_env", "timeout", "connect_timeout", "top_k")


def check_providers(path: str, value, top_keys: tuple[str, ...]) -> dict:
    """The [providers.NAME] tables of config.toml at `path`, each checked; the key itself is never read here
    (only when needed). `top_keys`: the file's top-level settings, named when one was written below a table."""
    if not isinstance(value, dict):
        raise HomeError(f"{path}: 'providers' must be tables: [providers.NAME] with base_url = \"http://...\"")
    out = {}
    for name, p in value.items():
        where = f"{path}: [providers.{name}]"
        if not isinstance(p, dict):
            raise HomeError(f'{where} must be a table with base_url = "http://host:port/v1"')
        extra = sorted(set(p) - set(PROVIDER_KEYS))
        top = [k for k in extra if k in top_keys]
        if top:  # appended at the end of the file, after this table: TOML puts it in the table
            raise HomeError(
                f"{where}: {', '.join(top)} is a top-level setting, but in TOML a key below a [table] "
                f"header belongs to that table; move it above the first [ line of the file"
            )
        if extra:
            raise HomeError(f"{where}: unknown key(s) {', '.join(extra)}; allowed: {', '.join(PROVIDER_KEYS)}")
        url = p.get("base_url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")) or len(url) < 10:
            raise HomeError(
                f"{where}: base_url must be an http:// or https:// URL such as "
                f'"http://127.0.0.1:11434/v1" (the part before /chat/completions)'
            )
        if "api_key_file" in p and "api_key_env" in p:
            raise HomeError(f"{where}: give api_key_file or api_key_env, not both")
        for k in ("api_key_file", "api_key_env"):
            if k in p and (not isinstance(p[k], str) or not p[k]):
                raise HomeError(f"{where}: {k} must be a non-empty string")
        if "api_key_file" in p and is_api_key(p["api_key_file"]):
            # not quoted back, as api_key_env's: taken as a file name, every error naming it showed the key
            raise HomeError(
                f"{where}: api_key_file must be the path of a file holding the key (such as api_key_file = "
                f'"openai-key", a file beside config.toml, chmod 600), not the key itself: write the key in that file'
            )
        if "api_key_env" in p and not _ENV_NAME.fullmatch(p["api_key_env"]):
            # not quoted back: what is there is most likely the key itself, which no message may show
            raise HomeError(
                f"{where}: api_key_env must be the name of an environment variable (letters, digits and _, "
                f'such as api_key_env = "OPENAI_API_KEY"), not the key itself: the key goes in that variable, '
                f"or in a file named by api_key_file"
            )
        for k in ("timeout", "connect_timeout"):
            if k in p and (isinstance(p[k], bool) or not isinstance(p[k], (int, float)) or not 0 < p[k] < math.inf):
                raise HomeError(f"{where}: {k} must be a positive number of seconds")
        if "top_k" in p and not isinstance(p["top_k"], bool):
            raise HomeError(f"{where}: top_k must be true (the provider accepts top_k) or false")
        out[name] = {
            "base_url": url.rstrip("/"),
            # a relative path is the home's (beside config.toml), not the daemon's working directory
            "api_key_file": (
                os.path.join(os.path.dirname(os.path.abspath(path)), os.path.expanduser(p["api_key_file"]))
                if "api_key_file" in p
                else None
            ),
            "api_key_env": p.get("api_key_env"),
            "timeout": float(p.get("timeout", 120)),
            "connect_timeout": float(p.get("connect_timeout", 10)),
            "top_k": p.get("top_k", False),
        }
    return out
