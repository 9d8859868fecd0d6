"""The argument parser of `sessiond`: the options every command shares, the list of command modules
(each adds its commands with `register()`), and argument errors raised rather than exited on."""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import shlex
from collections.abc import Collection

from .commands import (
    Commands,
    chats,
    daemon,
    doctor,
    files,
    formatter_at,
    keys,
    manage,
    messages,
    search,
    serve,
    service,
    sessions,
    sync,
    terminal_width,
    with_stand_ins,
)

# Every command module, in the order `sessiond --help` lists their commands. A new command (for
# example `sessiond serve` or `sessiond ask`) is a module in commands/ with register(), listed here.
COMMAND_MODULES = (daemon, sessions, chats, messages, search, manage, files, sync, doctor, keys, serve, service)


class ParseError(Exception):
    """An argument error, with the (sub)parser that met it (for its usage line)."""

    def __init__(self, parser: argparse.ArgumentParser, message: str):
        super().__init__(message)
        self.parser = parser


class _Parser(argparse.ArgumentParser):
    """Argument errors are raised, not printed and exited on, so that main() can answer them in JSON
    when --json is given (subcommand parsers are of this class too)."""

    # A command whose optional positional may come after its options (`add ID --role assistant --tool-call F
    # ARGS [TEXT]`): parsed as parse_known_intermixed_args does, else the optional positional is taken, empty,
    # with the first one (ID) and TEXT given after the options is refused as unrecognized. (Commands.add)
    intermixed = False
    _in_intermixed = False
    # A command given secrets (share's passphrase, import's code, the device key's words): a word of its command line
    # that its parse refuses (left over, or not one of its actions) is not quoted, only counted; an option's name is.
    # (Its own checks refuse a secret given on the command line without quoting it, but only once the parse is
    # through.) (Commands.add)
    unquoted = False

    def parse_known_args(self, args=None, namespace=None):
        if self._in_intermixed:  # (one of parse_known_intermixed_args' own passes: its extras are its business)
            return super().parse_known_args(args, namespace)
        if not self.intermixed:
            parsed, extras = super().parse_known_args(args, namespace)
        else:
            self._in_intermixed = True  # (it calls parse_known_args itself, for each of its two passes)
            try:
                parsed, extras = self.parse_known_intermixed_args(args, namespace)
            finally:
                self._in_intermixed = False
        if extras:  # refused here, by the command that met them, not by `sessiond`'s own parser after it
            raise ParseError(self, self._unrecognized(extras))
        return parsed, extras

    def _unrecognized(self, extras: list[str]) -> str:
        """What parse_args says of arguments no option or positional takes, with the option most like the
        first one that looks like an option (a typo, or another command's), and where the options are. An option
        named for a secret (`--passphrase`, `--api-key`: _SECRET_OPTION) is named without its value ('...'); in an
        unquoted parser, no word that is no option's name is quoted, nor what follows an option's letter
        (`-pSECRET`, as `mysql -pPASSWORD` is typed)."""
        shown: list[str] = []
        words = 0  # (unquoted: the words left over, counted)
        value_hidden = after_secret = False
        for a in extras:
            name, eq, _value = a.partition("=")
            if after_secret and not self.unquoted and not a.startswith("--"):  # (its value, `-SECRET` too)
                shown.append("...")
                value_hidden, after_secret = True, False
            elif _OPTION_LIKE.fullmatch(a):
                secret = self.unquoted or _SECRET_OPTION.search(name) is not None
                after_secret = secret and not eq
                if self.unquoted and not a.startswith("--") and len(name) > 2:
                    shown.append(a[:2] + "...")
                    value_hidden = True
                elif eq and secret:
                    shown.append(name + "=...")
                    value_hidden = True
                else:
                    shown.append(a)
            elif after_secret and not self.unquoted:
                shown.append("...")
                value_hidden = after_secret = True
            elif self.unquoted:
                words += 1
            else:
                shown.append(a)
        if words:
            shown.append(f"{words} word(s), not quoted here (a secret given on the command line?)")
        message = f"unrecognized arguments: {' '.join(shown)}"
        if value_hidden:
            message += " ('...': a value not quoted here, as it may be a secret)"
        typed = next((a.partition("=")[0] for a in extras if a.startswith("--") and len(a) > 2), None)
        if typed is not None:
            # every option of this command, as its usage line lists them (argparse has no public list of them;
            # its help's prose may name another command's)
            known = sorted(set(re.findall(r"(?<![\w-])--[a-z0-9][a-z0-9-]*", self.format_usage())))
            close = difflib.get_close_matches(typed, known, n=1, cutoff=0.6)
            if close:
                message += f" (did you mean {close[0]}?)"
        return f"{message}; see `{self.prog} --help`"

    def error(self, message: str):
        m = re.fullmatch(r"(ambiguous option: -[^\s=]*)=.* (could match .*)", message, re.S)
        if m:  # (`--pass=SECRET`: what followed the '=' quoted with the abbreviation, a passphrase, a code)
            message = f"{m[1]}=... {m[2]} (its value not quoted here)"
        m = re.fullmatch(r"argument (\S+): ignored explicit argument .*", message, re.S)
        if m:  # (`--qr=SECRET`, `-hSECRET`: what followed a flag's '=' or its letter, a secret typed there?)
            flag = m[1].split("/")[-1]
            message = (
                f"argument {m[1]} takes no value: what was typed with it (after its '=' or its letter) is not quoted"
                f" here, as it may be a secret; give {flag} alone"
            )
        elif self.unquoted and message.startswith("argument "):
            # (a command given secrets: a value its type or choices refuse, `share ID --expires SECRET`, unquoted)
            message = _QUOTED_VALUE.sub("the value given (not quoted here, as it may be a secret)", message, count=1)
        raise ParseError(self, _guessed(message, self.prog, self.unquoted) + self._values_said(message))

    def _values_said(self, message: str) -> str:
        """For the options argparse says are required and were left out, the values each takes (its choices, as
        its usage line lists them: `--role {system,user,...}`): the refusal said only "the following arguments are
        required: --role", not what to give. '' for any other refusal, and for an option that takes any value."""
        m = re.fullmatch(r"the following arguments are required: (.*)", message)
        if m is None:
            return ""
        usage = self.format_usage()
        said = []
        for option in m[1].split(", "):
            listed = re.search(rf"(?<![\w-]){re.escape(option)}\s+\{{([^}}]*)\}}", usage)
            if option.startswith("-") and listed:
                *first, last = listed[1].split(",")
                said.append(f"{option} {', '.join(first)} or {last}" if first else f"{option} {last}")
        return f" (give {'; '.join(said)})" if said else ""


# Other tools' words for a command (what `sessiond list` meant): named as the likely one when typed
OTHER_WORDS = {"list": "ls", "delete": "rm", "remove": "rm", "create": "new", "append": "add", "history": "log"}


def _swapped(typed: str, name: str) -> bool:
    """Whether `typed` is `name` with two neighbouring letters swapped."""
    if len(typed) != len(name) or typed == name:
        return False
    at = [i for i, (a, b) in enumerate(zip(typed, name)) if a != b]
    return len(at) == 2 and at[1] == at[0] + 1 and typed[at[0]] == name[at[1]] and typed[at[1]] == name[at[0]]


def _guessed(message: str, prog: str, unquoted: bool = False) -> str:
    """argparse's refusal of a command it does not know, with the likely one named (a typo, or another tool's word
    for it), as a mistyped option's names its likely one; `prog`, the refusing parser's (`sessiond chat`: a group's
    action is named with its group); `unquoted`: the word typed not quoted (_Parser.unquoted)."""
    m = re.fullmatch(r"argument (?:COMMAND|ACTION): invalid choice: '(.*)' \(choose from (.*)\)", message, re.S)
    if m is None:
        return message
    typed, known = m[1], re.findall(r"'([^']*)'", m[2])
    # (unquoted: `key WORD...`, `import` left out, the first of the device key's words where the action goes)
    shown = "given (not quoted here: one of the key's words?)" if unquoted else repr(typed)
    kind = "command" if prog == "sessiond" else "action"
    if typed == "help":  # (`sessiond help [COMMAND]`, git's way: the help is an option's)
        return (
            f"no {kind} 'help': `{prog} --help` lists the {kind}s, `{prog} {kind.upper()} --help` tells of one"
            f" (e.g. `{prog} {known[0]} --help`)"
        )
    word = OTHER_WORDS.get(typed)
    if word not in known:  # two neighbouring letters swapped, the commonest slip, first (`strat`: not `stats`)
        word = next((k for k in known if _swapped(typed, k)), None)
    guess = word if word in known else next(iter(difflib.get_close_matches(typed, known, n=1, cutoff=0.6)), None)
    if guess is None:  # (the list of every command is then the help)
        return f"argument ACTION: not one of {m[2]}, the word {shown}" if unquoted else message
    # the guess alone: at the end of argparse's list of all the commands, it was lost far off to the right
    return f"no {kind} {shown}: did you mean `{prog} {guess}`? (see `{prog} --help`)"


class _Version(argparse.Action):
    """`sessiond --version`: the installed package's version, the database schema's and the wire formats'
    (daemon/versions.py), looked up only when asked (the CLI starts fast)."""

    def __init__(self, option_strings, dest, as_json: bool = False, **kw):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kw)
        self.as_json = as_json  # --json given anywhere on the line (it may come after --version)

    def __call__(self, parser, namespace, values, option_string=None):
        from ..daemon.versions import versions, versions_text

        print(json.dumps(versions()) if self.as_json else versions_text())
        parser.exit()


def _add_common(p: argparse.ArgumentParser) -> None:
    """The options every command takes (after its -h, before its own)."""
    p.add_argument(
        "--home",
        default=argparse.SUPPRESS,
        help="the daemon's home folder (default: $SESSIOND_HOME or the user data folder)",
    )
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON for scripts")


def build_parser(wants_json: bool = False, argv: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The CLI's parser; `wants_json`: --json was given (what --version, which answers at once, prints). `argv`: the
    command line it is to parse: only the commands among its words are built (the one it names is), the others
    listed with their help (commands.NotBuilt), a twentieth of the CPU of building all 56; None: all, to parse any."""
    width = terminal_width()

    parser = _Parser(
        prog="sessiond",
        description="Private, durable LLM chat sessions on every device.",
        formatter_class=formatter_at(width),
    )
    parser.add_argument("--version", action=_Version, as_json=wants_json, help="print sessiond's version and exit")
    parser.add_argument("--home", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", default=False, help=argparse.SUPPRESS)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=with_stand_ins(_Parser))
    commands = Commands(subparsers, _add_common, width, named=None if argv is None else frozenset(argv))
    for module in COMMAND_MODULES:
        module.register(commands)
    return parser


def not_utf8(argv: list[str]) -> str | None:
    """The first argument that is not UTF-8 text (Python carries such bytes as lone surrogates)."""
    from .output import UTF8_LOCALE_WAY, ascii_locale

    for i, arg in enumerate(argv, 1):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            raw = os.fsencode(arg)
            if ascii_locale() and is_utf8(raw):  # (UTF-8 text, but Python took only ASCII in this locale)
                return f"argument {i} ({ascii(raw)[1:]}) is not ASCII, all this locale reads; {UTF8_LOCALE_WAY}"
            return f"argument {i} ({ascii(raw)[1:]}) is not UTF-8 text; give text as UTF-8"
    return None


def is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


# an option's name that says it holds a secret: its value is not quoted when the option is refused (_unrecognized)
_SECRET_OPTION = re.compile(r"pass|key|token|secret|code|invite|auth|cred|word|mnemonic", re.I)
# a value as argparse's refusals and the types' quote it (repr: in single quotes, or double ones if it holds one)
_QUOTED_VALUE = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")
# an option as typed: `--name`, `-h` (not a value that begins with a dash, `-1h`, `-draft note`, `---`)
_OPTION_LIKE = re.compile(r"--?[A-Za-z][A-Za-z0-9-]*(=.*)?")


def _may_hold_secret(parser: argparse.ArgumentParser, option: str, value: str) -> bool:
    """Whether `value`, given after `option`, may be a secret not to quote: in a command given secrets (share,
    import, key), after an option named for one (--passphrase-file, --api-key), or a URL's user part ('@')."""
    return getattr(parser, "unquoted", False) or bool(_SECRET_OPTION.search(option)) or "@" in value


def dash_hint(parser: argparse.ArgumentParser, argv: list[str], message: str) -> str:
    """What to add to argparse's `message` when a value that begins with a dash was read as an option: its
    words ("expected one argument", "the following arguments are required", "unrecognized arguments") do
    not say so, nor how to give such a value. '' when no value was read so."""
    head = argv[: argv.index("--")] if "--" in argv else argv
    m = re.match(r"argument (-[^\s/:]+)(?:/\S+)?: expected (?:one|\d+) argument", message)
    if m:  # `--name -draft`: the option given no value, the next argument read as an option
        option = m.group(1)
        for i, arg in enumerate(head[:-1]):
            value = head[i + 1]
            if arg == option and value.startswith("-") and value != "-":
                if _may_hold_secret(parser, option, value):  # (quoted nowhere, nor to be put on the line)
                    return (
                        f" (the value given after {option} begins with a dash, so it was read as an option; not quoted"
                        " here, as it may be a secret)"
                    )
                return (
                    f" ('{value}' begins with a dash, so it was read as an option, not as {option}'s value: "
                    f"give it as {shlex.quote(f'{option}={value}')})"
                )
        return ""
    if "required" not in message and "unrecognized arguments" not in message:
        return ""
    if getattr(parser, "unquoted", False):
        return ""  # (the hint quotes the word: one of a secret's)
    if not any(not a.option_strings and a.nargs != argparse.PARSER for a in parser._actions):
        return ""  # a command that takes no text nor query (`ls -l`): an option mistyped, not a value
    known = set(re.findall(r"(?<![\w-])--?[a-zA-Z0-9][a-zA-Z0-9-]*", parser.format_usage()))
    for i, arg in enumerate(head):
        if len(arg) > 1 and arg.startswith("-") and arg.partition("=")[0] not in known:
            if _OPTION_LIKE.fullmatch(arg) and arg.startswith("--"):
                continue  # an option mistyped, or another command's: the message names it (did you mean)
            if i and _may_hold_secret(parser, head[i - 1], arg):
                return ""  # (the value of an option named for a secret: _unrecognized quoted it as '...')
            return (
                f" ('{arg}' begins with a dash, so it was read as an option: to give it as an argument (a text, a "
                f"query, an id), put `--` before it, after the options: `{parser.prog} ... -- {shlex.quote(arg)}`)"
            )
    return ""
