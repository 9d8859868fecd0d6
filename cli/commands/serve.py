"""`sessiond serve`: run the relay (relay/); `sessiond serve invite`: make a one-time invite; `sessiond serve
accounts` / `revoke`: list the relay's accounts, cut one off (a lost device) or restore it."""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import os
import re
import shlex
import sys
import unicodedata

from ...relay.conns import DEFAULT_PER_ADDRESS
from ..errors import EXIT_USAGE, CliError, UsageError
from ..options import count, duration
from ..output import safe
from . import Arguments

_SIZE = re.compile(r"^(\d+)\s*([KMGT]?)(i?B)?$", re.IGNORECASE)


def size(text: str) -> int:
    m = _SIZE.match(text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (examples: 500M, 2G, 1048576)")
    return int(m.group(1)) * 1024 ** " KMGT".index((m.group(2) or " ").upper())


MIN_QUOTA = 1024  # a session's objects are some hundreds of bytes each: less is a relay that holds next to nothing


def quota(text: str) -> int:
    """--quota: a size (as size()) of at least MIN_QUOTA; 0 made a relay that refused every upload."""
    value = size(text)
    if value < MIN_QUOTA:
        raise argparse.ArgumentTypeError(
            f"must be at least 1K ({MIN_QUOTA} bytes), not {text!r}: less room holds next to nothing "
            "(examples: 500M, 2G)"
        )
    return value


def default_data() -> str:
    import platformdirs

    return platformdirs.user_data_dir("sessiond-relay", appauthor=False)


def register(commands) -> None:
    help = "run a relay for your own devices (the S5 portal API, with a change feed on heads)"
    p = commands.add("serve", cmd_serve, help)
    p.add_argument(
        "--listen",
        default="127.0.0.1:5050",
        help="HOST:PORT to listen on (default 127.0.0.1:5050; port 0 picks a free one)",
    )
    p.add_argument("--data", default=None, help="the relay's folder (default: the user data folder's sessiond-relay)")
    p.add_argument(
        "--open-registration",
        action="store_true",
        dest="open_registration",
        help="let any key register (default: only with an invite from `sessiond serve invite`)",
    )
    p.add_argument("--quota", type=quota, default=1 << 30, help="storage per account, at least 1K (default 1G)")
    p.add_argument(
        "--token-ttl",
        type=token_ttl,
        default=30 * 86400,
        dest="token_ttl",
        help="how long a device's login token holds, with its unit (e.g. 12h, 30d; default 30d); a device logs in "
        "again by itself",
    )
    p.add_argument(
        "--max-connections-per-address",
        type=count,
        default=DEFAULT_PER_ADDRESS,
        dest="max_connections_per_address",
        metavar="N",
        help=f"connections one client address may hold open at once (default {DEFAULT_PER_ADDRESS}); past them a"
        " new one is refused (HTTP 429). Every client on this machine, a reverse proxy too, is one address",
    )
    p.add_argument("--cert", help="TLS certificate chain (PEM); serve HTTPS")
    p.add_argument("--key", help="TLS private key (PEM), with --cert")
    p.add_argument(
        "--access-log",
        action="store_true",
        dest="access_log",
        help="log every request (method, path, status; never a header) to standard error",
    )
    relay_defaults = {dest: ("--" + dest.replace("_", "-"), p.get_default(dest)) for dest in _RELAY_OPTIONS}
    actions = commands.actions(p, "serve_command")
    q = actions.add("invite", cmd_invite, "print a one-time invite for a new device")
    _add_data(q)
    q.add_argument("--label", default=None, help="a name for the device (shown by `serve accounts`; `revoke` takes it)")
    q.set_defaults(prepare=_action_options(relay_defaults))
    q = actions.add("accounts", cmd_accounts, "list the relay's accounts (label, use, tokens, revoked)")
    _add_data(q)
    q.set_defaults(prepare=_action_options(relay_defaults))
    q = actions.add("revoke", cmd_revoke, "cut an account off (a lost device): its tokens go and it cannot log in")
    q.add_argument("account", metavar="ACCOUNT", help="the account's id (or a unique start of it) or label")
    _add_data(q)
    q.add_argument("--undo", action="store_true", help="restore a revoked account: its device logs in again")
    q.set_defaults(prepare=_action_options(relay_defaults))


# What only the relay itself (`sessiond serve` with no action) takes: given to an action, it is refused.
_RELAY_OPTIONS = (
    "listen",
    "open_registration",
    "quota",
    "token_ttl",
    "max_connections_per_address",
    "cert",
    "key",
    "access_log",
)


def _add_data(q: Arguments) -> None:
    # SUPPRESS: the action's own --data, when given, wins; else `serve --data D ACTION`'s stays (argparse would
    # otherwise overwrite it with this parser's default, and the action would use the default folder).
    q.add_argument("--data", default=argparse.SUPPRESS, help="the relay's folder (as given to `sessiond serve`)")


def _action_options(relay_defaults: dict):
    """An action's check of its arguments (main's `prepare`): a relay option given before it is refused."""

    def prepare(args) -> None:
        for dest, (option, default) in relay_defaults.items():
            if getattr(args, dest, default) != default:
                raise UsageError(
                    f"{option} is an option of `sessiond serve`, which runs the relay; `serve {args.serve_command}`"
                    " does not take it"
                )

    return prepare


def token_ttl(text: str) -> float:
    value = duration(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1s, not {text!r} (examples: 12h, 30d)")
    return value


def cmd_invite(args) -> int:
    from ...relay.accounts import new_invite
    from ...relay.serving import noted_url, with_invite

    data = args.data or default_data()
    _check_label(args.label)
    served = os.path.isdir(os.path.join(data, "accounts"))  # (a relay's first start makes accounts/)
    try:
        code = new_invite(data, args.label)
    except OSError as exc:  # a file where the folder should be, a folder not writable
        raise CliError(f"cannot use the data folder {data}: {exc.strerror or exc}", EXIT_USAGE) from None
    if not served:  # made before the relay's first start, or a --data mistyped: the invite works only at a relay on D
        print(
            f"sessiond: no relay has served {data} yet: the invite works once `sessiond serve --data"
            f" {shlex.quote(data)}` serves it (if a relay already runs, check that this is its --data)",
            file=sys.stderr,
        )
    served_at = noted_url(data)  # the URL the relay serving `data` noted at its last start
    store_url = with_invite(served_at, code) if served_at else None
    if args.json:
        print(json.dumps({"invite": code, "data": data, "label": args.label, "store_url": store_url}))
    else:
        print(code)
        where = (
            f"{store_url} (the address the relay last served on: a device elsewhere may reach it by another name)"
            if store_url
            else f"s5+http://{code}@HOST:PORT"
        )
        print(
            f"one use; on the new device: put {where} in a file (chmod 600) and start with"
            ' --store-file FILE, keeping the invite out of `ps` (or store = "..." in its config.toml)',
            file=sys.stderr,
        )
    return 0


LABEL_MAX = 100  # characters of an invite's label: one line of `serve accounts`, typed again for `serve revoke`


def _check_label(label: str | None) -> None:
    """An invite's label names the account it registers (`serve accounts`, `serve revoke LABEL`): one that could
    not (empty or blank: `--label "$NAME"` with NAME unset; control characters, a newline; very long) is refused."""
    if label is None:
        return
    if not label.strip():
        raise UsageError("--label is empty: give the device's name (`serve revoke` takes it), or leave --label out")
    if any(unicodedata.category(ch) == "Cc" for ch in label):
        raise UsageError("--label holds a control character (a newline, a tab): give the device's name on one line")
    if len(label) > LABEL_MAX:
        raise UsageError(f"--label is {len(label)} characters long; a device's name takes at most {LABEL_MAX}")


def _data_folder(args) -> str:
    """The relay's folder for `accounts` and `revoke`: one a relay made (it has accounts/), else a usage error."""
    data = args.data or default_data()
    if not os.path.isdir(os.path.join(data, "accounts")):
        raise CliError(
            f"{data} is not a relay's data folder (no accounts/ in it); give the --data of `sessiond serve`", EXIT_USAGE
        )
    return data


def _when(t: int | None) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else "-"


def cmd_accounts(args) -> int:
    from ...relay.admin import list_accounts

    data = _data_folder(args)
    try:
        accounts = list_accounts(data)
    except OSError as exc:
        raise CliError(f"cannot read the data folder {data}: {exc.strerror or exc}") from None
    if args.json:
        print(json.dumps({"data": os.path.abspath(data), "accounts": accounts}))
        return 0
    if not accounts:
        print("no accounts yet (sessiond serve invite makes an invite for a device)")
    for a in accounts:
        state = (
            f"REVOKED {_when(a['revoked'])}"
            if a["revoked"]
            else f"{a['tokens']} token(s), last login {_when(a['last_login'])}"
        )
        print(
            f"{a['id']}  {safe(a['label']) or '-'}  created {_when(a['created'])}  {a['used']} bytes, "
            f"{a['heads']} head(s)  {state}"
        )
    return 0


def cmd_revoke(args) -> int:
    from ...relay.admin import NoSuchAccount, find_account, revoke

    data = _data_folder(args)
    try:
        acct = find_account(data, args.account)
        done = revoke(data, acct, undo=args.undo)
    except NoSuchAccount as exc:
        raise CliError(str(exc), kind="not_found") from None
    except OSError as exc:
        raise CliError(f"cannot change the data folder {data}: {exc.strerror or exc}") from None
    if args.json:
        print(json.dumps(done))
    elif args.undo:
        print(f"restored {acct} ({safe(done['label']) or 'no label'}): its device logs in again on its next request")
    else:
        print(
            f"revoked {acct} ({safe(done['label']) or 'no label'}): {done['tokens_deleted']} token(s) deleted; "
            f"its device can no longer log in (undo: sessiond serve revoke --undo {acct} --data {shlex.quote(data)})"
        )
    return 0


def _tls(tls_context, cert: str, key: str):
    """The TLS context of --cert and --key, or a usage error naming the option whose file is wrong (it said
    "check --cert and --key" of whichever failed)."""
    import ssl

    texts = {}
    for option, path in (("--cert", cert), ("--key", key)):
        try:
            with open(path, "rb") as f:
                texts[option] = f.read(1 << 20)
        except OSError as exc:
            raise CliError(f"{option} {path}: cannot read it: {exc.strerror or exc}", EXIT_USAGE) from None
    if b"-----BEGIN CERTIFICATE-----" not in texts["--cert"]:
        raise CliError(f"--cert {cert} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", EXIT_USAGE)
    if not re.search(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----", texts["--key"]):
        raise CliError(f"--key {key} holds no PEM private key (-----BEGIN ... PRIVATE KEY-----)", EXIT_USAGE)
    if b"ENCRYPTED" in texts["--key"]:
        raise CliError(
            f"--key {key} is encrypted: a relay starts unattended, so give it the key without a passphrase"
            " (e.g. `openssl pkey -in KEY -out PLAIN`, kept readable by you alone)",
            EXIT_USAGE,
        )
    try:
        return tls_context(cert, key)
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc) or "key values mismatch" in str(exc):
            raise CliError(f"--key {key} is not the key of the certificate in --cert {cert}", EXIT_USAGE) from None
        raise CliError(f"cannot load --cert {cert} with --key {key}: {exc}", EXIT_USAGE) from None
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot load --cert {cert} with --key {key}: {exc}", EXIT_USAGE) from None


def cmd_serve(args) -> int:
    from ...daemon.nocore import no_core_dumps
    from ...relay.app import Relay, listen, parse_listen, run, tls_context

    no_core_dumps()  # before a token or a TLS key is read: a crash leaves no core file holding them
    from ...storage import clock

    try:  # (SESSIOND_TEST_CLOCK_FILE: the tests' clock, as a daemon's: storage/clock.py; the logins' times)
        clock.configure()
    except clock.TestClockError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None

    try:
        host, port = parse_listen(args.listen)
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    if bool(args.cert) != bool(args.key):
        raise CliError("--cert and --key go together: give both to serve HTTPS, or neither", EXIT_USAGE)
    ctx = _tls(tls_context, args.cert, args.key) if args.cert else None
    try:
        socks = listen(host, port)  # first: a port in use leaves no data folder behind
    except OSError as exc:  # (socket.gaierror too: a host that does not resolve)
        raise CliError(_cannot_listen(args.listen, exc), EXIT_USAGE) from None
    data = args.data or default_data()
    try:
        relay = Relay(data, open_registration=args.open_registration, quota=args.quota, token_ttl=args.token_ttl)
    except OSError as exc:
        for s in socks:
            s.close()
        raise CliError(f"cannot use the data folder {data}: {exc.strerror or exc}", EXIT_USAGE) from None

    def ready(url: str, bound: int) -> None:
        if args.json:
            print(
                json.dumps(
                    {
                        "url": url,
                        "port": bound,
                        "data": os.path.abspath(data),
                        "open_registration": args.open_registration,
                    }
                ),
                flush=True,
            )
        else:
            print(
                f"sessiond relay serving on {url} (data {os.path.abspath(data)}, registration "
                f"{'open' if args.open_registration else 'by invite'})",
                flush=True,
            )

    import logging

    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO if args.access_log else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        asyncio.run(
            run(
                relay,
                host,
                port,
                ssl_context=ctx,
                on_ready=ready,
                access_log=args.access_log,
                socks=socks,
                per_address=args.max_connections_per_address,
            )
        )
    except OSError as exc:
        raise CliError(_cannot_listen(args.listen, exc), EXIT_USAGE) from None
    return 0


def _cannot_listen(where: str, exc: OSError) -> str:
    """Why the relay cannot listen on `where` (--listen), with the way on when the failure says it."""
    said = f"cannot listen on {where}: {exc.strerror or exc}"
    if exc.errno == errno.EADDRINUSE:
        return f"{said} (another program holds that port, a relay running already?): stop it, or give another --listen"
    if exc.errno == errno.EACCES:
        return f"{said} (a port below 1024 is root's): give a port above 1023 with --listen, or serve behind a proxy"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{said} (no network interface of this machine has that address): give one of its own, or 0.0.0.0"
    return said
