"""README.md lists every command `sessiond --help` shows, every route of the socket API and every key
config.toml takes, and its and docs/*.md's links lead somewhere: a command, route or setting added without
its line in the user's guide fails here rather than stays unknown to its users."""

from __future__ import annotations

import re
from pathlib import Path

from sessiond.cli.parser import build_parser
from sessiond.daemon.home import TOP_KEYS
from sessiond.daemon.provider_config import PROVIDER_KEYS
from sessiond.daemon.routes import ROUTES

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def section(title: str) -> str:
    """The README's `## title` section, up to the next `## ` heading."""
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


def commands(help_text: str) -> list[str]:
    """The commands a `--help` text lists under its COMMAND positional (indented four spaces)."""
    listed = help_text.split("positional arguments:", 1)[1].split("options:", 1)[0]
    return re.findall(r"^ {4}([a-z][a-z-]*)\b", listed, re.M)


def test_every_command_of_sessiond_help_is_in_the_readmes_cli_table():
    names = commands(build_parser().format_help())
    assert len(names) > 30 and "uncompact" in names and "serve" in names, names
    table = section("The CLI")
    missing = [n for n in names if not re.search(rf"`(sessiond )?{re.escape(n)}[ `]", table)]
    assert not missing, f"commands in `sessiond --help` that README's CLI section does not list: {missing}"


def test_every_route_of_the_daemon_is_in_the_readmes_socket_api_section():
    api = section("The socket API")
    lines = api.splitlines()

    def listed(method: str, path: str) -> bool:
        if path == "/v1/openapi.json":
            return f"GET {path}" in api
        tail = path.removeprefix("/v1/sessions/{id}/")
        forms = [re.escape(path) + r"[`?\[ ]"]
        if tail != path:  # a route of a session, listed in a row as `.../tail` or `/tail` after its first
            forms += [r"\.\.\./" + re.escape(tail) + r"[`?\[ ]", r"`/" + re.escape(tail) + "`"]
        return any(method in line and any(re.search(f, line) for f in forms) for line in lines)

    missing = [(r.method, r.path) for r in ROUTES if not listed(r.method, r.path)]
    assert not missing, f"routes README's socket API section does not list: {missing}"


def test_every_key_config_toml_takes_is_in_the_readmes_configuration():
    block = section("Configuration").split("```toml", 1)[1].split("```", 1)[0]
    keys = [k for k in TOP_KEYS if k != "providers"]
    missing = [k for k in keys if not re.search(rf"^(# )?{k} =", block, re.M)]
    missing += [k for k in PROVIDER_KEYS if not re.search(rf"^# {k} =|\b{k} = ", block, re.M)]
    assert "[providers." in block and not missing, f"config.toml keys README's Configuration leaves out: {missing}"


def anchors(text: str) -> set[str]:
    """GitHub's anchors of a Markdown text's headings."""
    heads = re.findall(r"^#+\s+(.*?)\s*$", text, re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in heads}


def test_every_link_of_the_readme_and_docs_leads_to_a_file_and_heading_there():
    broken = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
            if re.match(r"[a-z]+:", target):
                continue  # a web address
            path, _, fragment = target.partition("#")
            file = (doc.parent / path).resolve() if path else doc
            if not file.exists() or (fragment and fragment not in anchors(file.read_text())):
                broken.append(f"{doc.name}: {target}")
    assert not broken, broken


def test_the_set_up_says_how_to_give_make_run_the_daemons_options():
    """`make run` runs the daemon on its defaults (the user's own home); the Makefile hands it the options of
    `ARGS` (`make run ARGS="--home DIR"`), which the Set-up did not say: a newcomer trying it in a home of
    its own had to read the Makefile to find how."""
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("\nrun:", 1)[1].split("\n\n", 1)[0]
    variables = re.findall(r"\$\((ARGS|[A-Z_]*ARGS)\)", recipe)
    assert variables, recipe
    setup = section("Set-up: two commands")
    missing = [v for v in variables if not re.search(rf"make run {v}=", setup)]
    assert not missing, f"README's Set-up does not say how to give `make run` {missing}"


def test_the_readmes_commands_run_the_tests_servers_with_the_venvs_python():
    """The section "Talk to a model" said `python tests/servers/openai_server.py 8000`: in a shell without the virtual
    environment (a third one, beside the daemon's and the CLI's) the system's python has no aiohttp, and the
    loopback provider failed with ModuleNotFoundError. The README names `.venv/bin/python`, which `make run`
    made and filled."""
    bare = re.findall(r"(?<![/\w])python3? (tests/\S+)", README)
    assert not bare, f"README runs {bare} with a bare python, not .venv/bin/python"
    assert ".venv/bin/python tests/servers/openai_server.py" in section("Talk to a model")


def _every_command() -> list[tuple[str, ...]]:
    """Every command `sessiond --help` lists, and every action of a group (`chat new`, `serve invite`)."""
    parser = build_parser()
    found = []
    for name in commands(parser.format_help()):
        found.append((name,))
        text = _help(name)
        if "ACTION" in text.split("\n\n", 1)[0]:
            found += [(name, action) for action in commands(text)]
    return found


def _help(*argv: str) -> str:
    """`sessiond ARGV --help` as printed (argparse exits after printing it)."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        build_parser().parse_args([*argv, "--help"])
    return out.getvalue()


def test_every_commands_help_ends_with_an_example_that_parses():
    """A newcomer's `sessiond new --help` said what each option is but not how a whole command looks: most
    commands' help had no example (`show`, `log`, `ask`, `import`, `sync`...). Each command and each action of a
    group ends its help with one to copy, and each example is a command line this parser takes (an option
    renamed or made required fails here, not in a user's shell)."""
    import shlex

    from sessiond.cli.examples import EXAMPLES

    every = _every_command()
    assert ("chat", "new") in every and ("serve", "invite") in every and ("service", "install") in every, every
    missing = []
    for argv in every:
        text = _help(*argv)
        tail = text.rsplit("\n\nexample", 1)
        if len(tail) != 2 or f"sessiond {' '.join(argv)}" not in tail[1]:
            missing.append(" ".join(argv))
    assert not missing, f"commands whose --help ends with no example of themselves: {missing}"
    # and the session id each takes says what it is, where it comes from (its line was a bare `id`)
    bare = [" ".join(argv) for argv in every if re.search(r"^  id\s*$", _help(*argv), re.M)]
    assert not bare, f"commands whose --help lists `id` with nothing said of it: {bare}"
    assert set(EXAMPLES) == {" ".join(argv) for argv in every}, set(EXAMPLES) ^ {" ".join(a) for a in every}
    for command, lines in EXAMPLES.items():
        for line in lines:
            words = shlex.split(line.split("sessiond ", 1)[1].split(" > ")[0].split(" < ")[0].split(")")[0])
            assert words[: len(command.split())] == command.split(), line
            build_parser().parse_args(words)  # (a usage error raises, naming the example's fault)
