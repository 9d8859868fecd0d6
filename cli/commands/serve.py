"""`sessiond serve`: run the relay (relay/); `sessiond serve invite`: make a one-time invite."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys

from ..errors import EXIT_USAGE, CliError

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
    p.add_argument("--cert", help="TLS certificate chain (PEM); serve HTTPS")
    p.add_argument("--key", help="TLS private key (PEM), with --cert")
    p.add_argument(
        "--access-log",
        action="store_true",
        dest="access_log",
        help="log every request (method, path, status; never a header) to standard error",
    )
    q = commands.actions(p, "serve_command").add("invite", cmd_invite, "print a one-time invite for a new device")
    q.add_argument("--data", default=None, help="the relay's folder (as given to `sessiond serve`)")


def cmd_invite(args) -> int:
    from ...relay.accounts import new_invite

    data = args.data or default_data()
    try:
        code = new_invite(data)
    except OSError as exc:  # a file where the folder should be, a folder not writable
        raise CliError(f"cannot use the data folder {data}: {exc.strerror or exc}", EXIT_USAGE) from None
    if args.json:
        print(json.dumps({"invite": code, "data": data}))
    else:
        print(code)
        print(
            f'one use; on the new device: --store s5+http://{code}@HOST:PORT (or store = "..." in its config.toml)',
            file=sys.stderr,
        )
    return 0


def cmd_serve(args) -> int:
    from ...relay.app import Relay, parse_listen, run, tls_context

    try:
        host, port = parse_listen(args.listen)
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    if bool(args.cert) != bool(args.key):
        raise CliError("--cert and --key go together: give both to serve HTTPS, or neither", EXIT_USAGE)
    ctx = None
    if args.cert:
        try:
            ctx = tls_context(args.cert, args.key)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise CliError(f"cannot load the TLS certificate/key ({exc}); check --cert and --key", EXIT_USAGE) from None
    data = args.data or default_data()
    try:
        relay = Relay(data, open_registration=args.open_registration, quota=args.quota)
    except OSError as exc:
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
        asyncio.run(run(relay, host, port, ssl_context=ctx, on_ready=ready, access_log=args.access_log))
    except OSError as exc:
        raise CliError(f"cannot listen on {args.listen}: {exc.strerror or exc}", EXIT_USAGE) from None
    return 0
