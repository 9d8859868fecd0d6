"""Options shared by several commands: durations (90s, 7d), a chat's sampling settings and its
context/quota policy; each group is added to a parser here and read back from the parsed arguments here."""

from __future__ import annotations

import argparse
import math
import re
import shlex
from datetime import datetime
from typing import Any

from .commands import Arguments
from .errors import EXIT_USAGE, CliError

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw]?)$")
EPOCH_LAST = 1e11  # the latest expires_at the daemon takes, in seconds since the epoch (api/sessions.py): year 5138
YEARS_10 = 10 * 365 * 86400  # the daemon's longest expiry or idle time (api/types.py: not imported, no pydantic)


def duration(text: str) -> float:
    """Seconds in a duration: 90s, 30m, 12h, 7d, 2w. A bare number (but 0, the same in any unit) is refused,
    naming the units, for every option that takes a duration: an expiry, an idle time, a clean-up's age, a
    grace, a login's life. 7 meant as 7 days and read as 7 seconds ends a session, a share code or a login
    early, or deletes or frees what was meant to stay. (A wait the CLI does, `--timeout S`, is in seconds,
    as every tool's timeout is, its unit taken but not needed: `seconds()` below.)"""
    m = _DURATION.match(text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (examples: 90s, 30m, 12h, 7d, 2w)")
    if not m.group(2) and float(m.group(1)) != 0:
        n = m.group(1)
        raise argparse.ArgumentTypeError(
            f"{text!r} has no unit: write {n}s for seconds, or {n}m, {n}h, {n}d, {n}w (minutes, hours, days, weeks)"
        )
    value = float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m.group(2)]
    if not math.isfinite(value):  # (more digits than a float holds: infinity, which no option can take)
        raise argparse.ArgumentTypeError(f"{text[:20]!r}... is too long to be a duration (examples: 90s, 12h, 7d)")
    return value


def counted(n: float, noun: str) -> str:
    """`n` of `noun` in words: 1 token, 2 tokens, 0 messages."""
    shown = f"{n:g}" if isinstance(n, float) else str(n)  # (an int whole, however large: :g writes 1.2e+07)
    return f"{shown} {noun}{'' if n == 1 else 's'}"


def span(secs: float) -> str:
    """A number of seconds in words, in the largest unit it is a whole number of: 1 second, 1 hour, 10 years."""
    for unit, size in (("year", 365 * 86400), ("week", 604800), ("day", 86400), ("hour", 3600), ("minute", 60)):
        if secs >= size and secs % size == 0:
            return counted(int(secs // size), unit)
    return counted(secs, "second")


def instant(text: str) -> float:
    """An argparse type: a point in time as ISO 8601 with its zone (2027-01-31T18:00:00Z, or +01:00 for a
    zone's offset), as seconds since the epoch. One without a zone is refused, not read in this machine's
    zone: a session's expiry syncs to devices in other zones, and the user meant one of them."""
    try:
        t = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO 8601 time: {text!r} (e.g. 2027-01-31T18:00:00Z for UTC, 2027-01-31T19:00:00+01:00)"
        ) from None
    if t.tzinfo is None:
        bare = t.strftime("%Y-%m-%dT%H:%M:%S")
        raise argparse.ArgumentTypeError(
            f"{text!r} has no time zone: give one, e.g. {bare}Z for UTC or {bare}+01:00 for a zone's offset"
        )
    if not 0 <= t.timestamp() <= EPOCH_LAST:
        raise argparse.ArgumentTypeError(f"{text!r} is out of range: give a time from 1970 to 5138")
    return t.timestamp()


def duration_in(low: float, high: float):
    """An argparse type: a duration (as duration()) that the daemon takes, from `low` to `high` seconds; one
    out of that range is a usage error naming the option as typed, not the daemon's 'expires_in must be...'."""

    def parse(text: str) -> float:
        value = duration(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"must be at least {span(low)} and at most {span(high)}, not {text!r} (examples: 90s, 30m, 12h, 7d)"
            )
        return value

    return parse


def count(text: str) -> int:
    """How many at most (--limit): a whole number, 1 or more."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a count: {text!r} (a whole number, 1 or more)")
    return value


_WAIT = re.compile(r"^(.*?)\s*([smh]?)$")
WAIT_EXAMPLES = "e.g. 15, 2.5 or 5s; s, m or h may follow the number"


def _wait(text: str) -> float:
    """Seconds in a wait: a number of seconds (15, 2.5) or one with its unit, s, m or h (5s, 2m, 1h), as every
    duration takes one (`--expires 1h`); NaN for anything else. The number is any Python's float() reads, as a
    --timeout took before it took a unit: `1e3`, `5.`, `+5`, which a script computing its wait may pass."""
    m = _WAIT.match(text.strip())
    try:
        return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)] if m else math.nan
    except ValueError:
        return math.nan


def seconds(text: str) -> float:
    """A wait in seconds: a finite number, 0 or more, 10 years at most (or one with its unit: 30s, 2m). (More: a
    socket's timeout past the platform's time_t, OverflowError's traceback at the client's first call.)"""
    value = _wait(text)
    if not math.isfinite(value) or not 0 <= value <= YEARS_10:
        raise argparse.ArgumentTypeError(
            f"not a number of seconds: {text!r} (0 or more, 10 years at most, {WAIT_EXAMPLES})"
        )
    return value


def positive_seconds(text: str) -> float:
    """A wait in seconds that must be some wait: a finite number more than 0, 10 years at most (or one with its
    unit)."""
    value = _wait(text)
    if not math.isfinite(value) or not 0 < value <= YEARS_10:
        raise argparse.ArgumentTypeError(
            f"not a number of seconds more than 0: {text!r} (10 years at most, {WAIT_EXAMPLES})"
        )
    return value


def seconds_up_to(high: float):
    """An argparse type: a wait in seconds (as seconds()) of at most `high`, the daemon's limit."""

    def parse(text: str) -> float:
        value = _wait(text)
        if not math.isfinite(value) or not 0 <= value <= high:
            raise argparse.ArgumentTypeError(
                f"not a number of seconds from 0 to {high:g} ({span(high)}): {text!r} ({WAIT_EXAMPLES})"
            )
        return value

    return parse


ID_HELP = "the session's id (`sessiond ls` lists them)"
NO_USER_HELP = "the sessions with no user (none set, or an empty one an older sessiond stored)"


def user_or_none(args) -> None:
    """A filter's --user and --no-user (ls, stats, search): refused together, and an empty --user refused
    saying what to give instead."""
    if args.user is not None and args.no_user:
        raise CliError("give --user (that user's sessions) or --no-user (the sessions with none), not both", EXIT_USAGE)
    if args.user == "":
        raise CliError(
            "--user must not be empty: leave it out for every user's sessions, or give --no-user for the sessions"
            " with none",
            EXIT_USAGE,
        )


def add_settings(p: Arguments) -> None:
    p.add_argument("--temperature", type=float)
    p.add_argument("--top-k", type=int, dest="top_k")
    p.add_argument("--top-p", type=float, dest="top_p")
    p.add_argument("--max-tokens", type=int, dest="max_tokens")


def settings_of(args) -> Any:  # a Settings body or None (the daemon checks it)
    s = {
        k: getattr(args, k)
        for k in ("temperature", "top_k", "top_p", "max_tokens", "provider")
        if getattr(args, k, None) is not None
    }
    return s or None


def add_policy(p: Arguments, chat: bool = False) -> None:
    p.add_argument(
        "--max-context-tokens",
        type=int,
        dest="max_context_tokens",
        help="context budget; the chat compacts itself past budget x margin",
    )
    p.add_argument("--context-margin", type=float, dest="context_margin", help="safety margin (default 0.8)")
    p.add_argument(
        "--auto-compact",
        action=argparse.BooleanOptionalAction,
        dest="auto_compact",
        help="past the budget, compact (the default) or, with --no-auto-compact, refuse the append (context_overflow)",
    )
    if not chat:
        p.add_argument("--token-quota", type=int, dest="token_quota", help="tokens this session may use in all")
        p.add_argument(
            "--checkpoint-interval",
            type=int,
            dest="checkpoint_interval",
            help="make a signed checkpoint every N tokens (default 1000)",
        )
        p.add_argument(
            "--idle-timeout",
            type=duration_in(1, YEARS_10),
            dest="idle_timeout",
            help="end the session after this idle time, with its unit (1 second to 10 years, e.g. 1h)",
        )


def policy_of(args) -> Any:  # a ChatPolicy body, maybe empty (the daemon checks it)
    out = {}
    for k in ("token_quota", "max_context_tokens", "context_margin", "checkpoint_interval", "idle_timeout"):
        if getattr(args, k, None) is not None:
            out[k] = getattr(args, k)
    if getattr(args, "auto_compact", None) is not None:
        out["auto_compact"] = args.auto_compact
    return out


# What `--unset OPTION` clears: OPTION (a change command's option, without its dashes) -> (the option's dest,
# where it is in the PATCH body: a field, or settings/policy and a field of it). The body's null clears it.
_SETTINGS_UNSET = {
    "temperature": ("temperature", ("settings", "temperature")),
    "top-k": ("top_k", ("settings", "top_k")),
    "top-p": ("top_p", ("settings", "top_p")),
    "max-tokens": ("max_tokens", ("settings", "max_tokens")),
}
_CHAT_POLICY_UNSET = {
    "max-context-tokens": ("max_context_tokens", ("policy", "max_context_tokens")),
    "context-margin": ("context_margin", ("policy", "context_margin")),
    "auto-compact": ("auto_compact", ("policy", "auto_compact")),
}
CHAT_UNSET = {
    "name": ("name", ("name",)),
    "system": ("system", ("system_prompt",)),
    "model": ("model", ("model",)),
    "provider": ("provider", ("settings", "provider")),
    **_SETTINGS_UNSET,
    **_CHAT_POLICY_UNSET,
}
SESSION_UNSET = {
    **CHAT_UNSET,
    "user": ("user", ("user",)),
    "tag": ("tag", ("tags",)),
    "metadata": ("metadata", ("metadata",)),
    "expires-in": ("expires_in", ("expires_at",)),
    "expires-at": ("expires_at", ("expires_at",)),
    "preferences": ("preferences", ("preferences",)),
    "token-quota": ("token_quota", ("policy", "token_quota")),
    "checkpoint-interval": ("checkpoint_interval", ("policy", "checkpoint_interval")),
    "idle-timeout": ("idle_timeout", ("policy", "idle_timeout")),
}


# A command's own option that fills an API field of the same name (its dest): command -> {dest: option}.
_COMMAND_FIELDS = {
    "add": {"tokens": "--tokens", "tool_call_id": "--tool-call-id", "name": "--name", "chat": "--chat"},
    "ask": {"chat": "--chat", "provider": "--provider"},
    "compact": {"target_tokens": "--target-tokens", "chat": "--chat"},
    "uncompact": {"chat": "--chat"},
    "unshare": {"device": "--device"},
}


def option_error(args: Any, exc: Any) -> CliError | None:
    """A daemon's 422 naming the API field an option the user gave fills ("policy.token_quota must be
    between 1 and ..."), said of the option as typed (--token-quota ...), as a usage error (exit 2): the
    value given is what is wrong; a field the daemon asks for, named as the option to give. None for anything
    else (the daemon's message stands)."""
    if getattr(exc, "status", None) != 422:
        return None
    field, _, rest = str(getattr(exc, "message", "")).partition(" ")
    field = field.removeprefix("body.")  # (the checks of the request's raw JSON name its fields so)
    if field == "query" and rest.startswith("parameter "):  # a filter: `ls --user U` ("query parameter user ...")
        field, _, rest = rest.removeprefix("parameter ").partition(" ")
        if rest and getattr(args, field, None) is not None:  # `ls --tag`, `log --chat`
            return CliError(f"--{field.replace('_', '-')} {rest}", EXIT_USAGE)
    for name, (dest, path) in SESSION_UNSET.items():
        api = ".".join(path)
        if getattr(args, dest, None) is None or not rest:
            continue
        if field == api:
            if rest.startswith("must not be empty:"):  # a model or user given as "": the API's null is --unset
                unset = f" (--unset {name} clears it)" if hasattr(args, "unset") else ""
                rest = rest.replace(" (null clears it)", unset)
            if name == "expires-at":  # (the API's alternative, said as the CLI's; the time as typed, a date)
                rest = rest.replace("(or expires_in, seconds from now)", "(or --expires-in, a duration from now)")
                rest = re.sub(r"^\S+ \(([^)]*)\) is past", r"\1 is past", rest)  # not the seconds since 1970
                rest = rest.replace("(POST /v1/sessions/{id}/end, `sessiond end ID`)", "(`sessiond end ID`)")
            return CliError(f"--{name} {rest}", EXIT_USAGE)
        # a value inside the option's JSON
        if field.startswith((api + ".", api + "[")) and name in ("metadata", "preferences"):
            return CliError(f"--{name}{field[len(api) :]} {rest}", EXIT_USAGE)
        if field.startswith(api + "[") and name == "tag":  # one of the --tag options given: named by its value
            value = _indexed(getattr(args, dest), field[len(api) :])
            if value is not None:
                shown = value if len(value) <= 40 else value[:40] + "…"
                return CliError(f"--{name} {shown!r} {rest}", EXIT_USAGE)
    if field.startswith("tool_calls[") and getattr(args, "tool_calls", None) and rest:  # add's --tool-call
        return CliError(f"--tool-call {field} {rest}", EXIT_USAGE)
    if field.startswith("call_fields") and getattr(args, "call_fields", None) and rest:  # add's --call-fields
        return _call_fields_error(args.call_fields, f"{field} {rest}".removeprefix("call_fields"))
    for dest, option in _COMMAND_FIELDS.get(getattr(args, "command", ""), {}).items():
        if field == dest and getattr(args, dest, None) is not None and rest:
            return CliError(f"{option} {rest}", EXIT_USAGE)
    # `share --passphrase-file F`: the passphrase is the file's text, never typed as an option's value
    passphrase_file = getattr(args, "passphrase_file", None)
    if field == "passphrase" and passphrase_file and rest:
        where = "on standard input" if passphrase_file == "-" else f"in {passphrase_file}"
        return CliError(f"--passphrase-file: the passphrase {where} {rest}", EXIT_USAGE)
    # the options no `set` has: a new session's or chat's own id ("session id must be ..."; a session named
    # by its positional ID is a 404, never this), and `new --initial` ("initial_messages[0].role ...")
    id_dest = {"new": "id", "clone": "new_id", "fork": "new_id", "chat": "chat_id"}.get(getattr(args, "command", ""))
    if field in ("session", "chat") and rest.startswith("id ") and id_dest and getattr(args, id_dest, None) is not None:
        return CliError(f"--id {rest[3:]}", EXIT_USAGE)
    if field.startswith("initial_messages") and getattr(args, "initial", None) is not None and rest:
        return CliError(f"--initial{field[len('initial_messages') :]} {rest}", EXIT_USAGE)
    # an option needed and not given: `compact` of a chat with no context budget ("... give target_tokens, ...")
    message = str(getattr(exc, "message", ""))
    if getattr(args, "command", "") == "fork" and message.startswith("not a message id"):  # `fork --at x`
        return CliError(f"--at: {message}", EXIT_USAGE)
    if getattr(args, "command", "") == "import" and message.startswith("store: "):  # `import --store URL`
        option = "--store-file" if getattr(args, "store_file", None) else "--store"
        return CliError(f"{option}: {message.removeprefix('store: ').removeprefix('store ')}", EXIT_USAGE)
    if (
        getattr(args, "command", "") == "compact"
        and getattr(args, "target_tokens", 0) is None
        and "give target_tokens" in message
    ):
        return CliError(message.replace("give target_tokens", "give --target-tokens N"), EXIT_USAGE)
    return None


def _call_fields_error(given: list[list[str]], said: str) -> CliError:
    """The daemon's refusal of `add --call-fields ID FIELDS_JSON` (`said`, after its "call_fields": `['ID'] ...`
    or `.ID...` of one call's fields, ` names 'ID', ...` of an ID that is no call of the message) said of the
    option, with the ID as typed."""
    for call_id, _ in given:  # its checks name a call's fields by the id's repr cut at 80 characters, pydantic's as is
        for named in (f"[{call_id!r:.80}]", f".{call_id}"):
            if said.startswith(named) and said[len(named) : len(named) + 1] in (" ", ".", "["):
                return CliError(f"--call-fields {shlex.quote(call_id)}{said[len(named) :]}", EXIT_USAGE)
    if said.startswith(" names "):  # no call of the message has that id
        return CliError(f"--call-fields{said} (give the call with --tool-call-with-id ID NAME ARGS_JSON)", EXIT_USAGE)
    return CliError(f"--call-fields{said}", EXIT_USAGE)


def _indexed(values: Any, index: str) -> str | None:
    """`values[i]` for an API field's index ("[1]", of "tags[1]"), None if it names none."""
    if not (isinstance(values, list) and index.startswith("[") and index.endswith("]") and index[1:-1].isdigit()):
        return None
    i = int(index[1:-1])
    return values[i] if i < len(values) else None


def add_unset(p: Arguments, fields: dict, what: str) -> None:
    p.add_argument(
        "--unset",
        action="append",
        choices=list(fields),
        metavar="OPTION",
        help=f"clear one of {what}'s settings (repeatable): OPTION is the option's name without its dashes, one of "
        f"{', '.join(fields)}; e.g. --unset max-tokens. A cleared setting no longer applies"
        + (
            " (the session's own does, or the daemon's default)"
            if what == "the chat"
            else " (the daemon's default does)"
        ),
    )


def unset_into(args, fields: dict, body: dict) -> dict:
    """`body` (a PATCH body) with a null for each `--unset OPTION`; an option both given and unset is a usage
    error, as is nothing to change at all."""
    for name in dict.fromkeys(getattr(args, "unset", None) or ()):
        path = fields[name][1]
        for given, (other, other_path) in fields.items():  # (--expires-in and --expires-at set one field)
            if other_path == path and getattr(args, other, None) is not None:
                raise CliError(f"--{given} and --unset {name} contradict each other: give one of them", EXIT_USAGE)
        if len(path) == 1:
            body[path[0]] = None
        else:
            body.setdefault(path[0], {})[path[1]] = None
    return body
