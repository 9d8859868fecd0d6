"""A model provider as config.toml names it (issue 16): an OpenAI-compatible chat-completions endpoint, with
where its API key is read from and its timeouts; and the errors talking to one raises.

Every failure is a `ProviderError` with its own code and HTTP status, so each caller can answer in its
own format (provider_failures.py names them). API keys are read from their file or environment variable
when a request needs them, and are never stored, logged, or put in an error message."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..storage.errors import SessiondError
from ..storage.redact import hide_everywhere, scrub_text, url_secrets


class NoProvider(SessiondError):
    """No provider of this device's config.toml can answer: none is configured, or the one named (by the
    request, or by the session's settings, which sync from devices configured otherwise) is not here. The
    request is valid; this device is not set up for it."""

    code = "no_provider"
    status = 409


class ProviderError(SessiondError):
    code = "provider_error"
    status = 502


def provider_error(code: str, status: int, message: str, **details) -> ProviderError:
    err = ProviderError(message, **details)
    err.code, err.status = code, status
    return err


@dataclass(frozen=True)
class Provider:
    name: str
    base_url: str
    api_key_file: str | None = None
    api_key_env: str | None = None
    timeout: float = 120.0  # seconds for a whole JSON answer, or between two chunks of a stream
    connect_timeout: float = 10.0
    top_k: bool = False  # whether the provider takes top_k (OpenAI's own API does not)

    def api_key(self) -> str | None:
        """The key, read now (never kept for the requests: a changed file is read at the next): from
        api_key_file, or api_key_env, or none (a local server). Each key read is hidden by its value from
        every error and log line of the daemon (storage/redact.py's hide_everywhere)."""
        key = self._read_key()
        hide_everywhere(key)
        return key

    def hide_secrets(self) -> None:
        """Hide this provider's secrets from the daemon's errors and logs from its start on, before any
        request reads its key: the key (if it reads now) and any credentials in base_url."""
        hide_everywhere(*url_secrets(self.base_url))
        try:
            self.api_key()
        except ProviderError:  # unreadable now: the request that needs it says so
            pass

    def _read_key(self) -> str | None:
        if self.api_key_file:
            try:
                with open(os.path.expanduser(self.api_key_file), encoding="utf-8") as f:
                    key = f.read().strip()
            except OSError as exc:
                raise provider_error(
                    "provider_key_unreadable",
                    502,
                    f"provider {self.name!r}: cannot read its api_key_file "
                    f"{self.api_key_file} ({exc.strerror}); fix the path in config.toml",
                ) from None
            except UnicodeDecodeError:  # (never quoted: it holds the key)
                raise provider_error(
                    "provider_key_unreadable",
                    502,
                    f"provider {self.name!r}: its api_key_file {self.api_key_file} is not UTF-8 text; write the"
                    f" key there as text (or fix the path in config.toml)",
                ) from None
            if not key:
                raise provider_error(
                    "provider_key_unreadable",
                    502,
                    f"provider {self.name!r}: its api_key_file {self.api_key_file} is empty",
                )
            return key
        if self.api_key_env:
            key = os.environ.get(self.api_key_env, "").strip()
            if not key:
                raise provider_error(
                    "provider_key_unreadable",
                    502,
                    f"provider {self.name!r}: the environment variable "
                    f"{self.api_key_env} (its api_key_env) is not set in the daemon's environment",
                )
            return key
        return None

    def headers(self) -> dict:
        key = self.api_key()
        return {"Authorization": f"Bearer {key}"} if key else {}

    def scrub(self, text: str) -> str:
        """Text the provider (or its HTTP library) wrote, safe to show and log: a provider may echo the
        key it refused ("Incorrect API key provided: sk-abc..."), whole or in part; that key, any piece
        of it, and anything shaped like a bearer token or an API key are replaced by ***."""
        try:
            key = self.api_key()
        except ProviderError:  # unreadable now: the patterns still apply
            key = None
        return scrub_text(text, [key], tokens=True)
