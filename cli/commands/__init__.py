"""The commands of `sessiond`, one module per area. Each module has `register(commands: Commands)`,
which adds its commands (argparse parsers whose `fn` runs the command). A CLI call builds the parser of the
command it names only: the others are listed (their name and one-line help) by a NotBuilt, which drops what
register() adds to them.

To add a command: write a module here with `register()` and list it in `COMMAND_MODULES` in
cli/parser.py; its place in that list is its place in `sessiond --help`. A module whose commands stand among
another area's in that list is registered by that area's `register()`: ask.py by messages.py's, sharing.py
by sync.py's."""

from __future__ import annotations

import argparse
import functools
import shutil
import textwrap
from collections.abc import Callable, Collection
from typing import Any, Protocol

from ..examples import epilog

Command = Callable[[Any], int]


def formatter_at(width: int, cls: type[argparse.HelpFormatter] = argparse.HelpFormatter) -> Any:
    """A parser's formatter_class: argparse's `cls` at `width` columns, the terminal's, read once for the whole
    parser (terminal_width()). argparse's own reads the terminal again for each formatter it makes, one for every
    argument added (~270 when the whole parser is built) and every help printed; its help is the same for a given
    width."""
    return functools.partial(cls, width=width)


def terminal_width() -> int:
    """The width argparse's help fills, as its HelpFormatter reckons it ($COLUMNS, else the terminal's, less 2)."""
    return shutil.get_terminal_size().columns - 2


class Arguments(Protocol):
    """What a command's register() adds arguments to: a parser, an argument group, a mutually exclusive one."""

    def add_argument(self, *args: Any, **kwargs: Any) -> Any: ...


class CommandParser(Arguments, Protocol):
    """What a module's register() may do with the parser Commands.add gives it: an argparse parser when the command
    line names the command, else a NotBuilt, which has these alone (mypy holds every register() to them)."""

    prog: str

    def add_argument_group(self, *args: Any, **kwargs: Any) -> Arguments: ...
    def add_mutually_exclusive_group(self, *args: Any, **kwargs: Any) -> Arguments: ...
    def add_subparsers(self, *args: Any, **kwargs: Any) -> Any: ...
    def set_defaults(self, **kwargs: Any) -> None: ...
    def get_default(self, dest: str) -> Any: ...


class NotBuilt:
    """The parser of a command the command line does not name (argparse calls it, the parser_class of
    with_stand_ins, for `add_parser(NAME, help=..., stand_in=True)`): argparse keeps NAME and its help among the
    commands, for `sessiond --help` and for the guess of a mistyped one, and what the command's register() adds
    is dropped here (building a command's parser, its arguments, is what costs). It stands for its group's
    subparsers too (the actions of a group not named: NotBuilt as well)."""

    def __init__(self, prog: str = "", **kw: Any):
        self.prog = prog

    def add_argument(self, *args: Any, **kwargs: Any) -> None:
        return None

    def add_argument_group(self, *args: Any, **kwargs: Any) -> NotBuilt:
        return self

    def add_mutually_exclusive_group(self, *args: Any, **kwargs: Any) -> NotBuilt:
        return self

    def add_subparsers(self, *args: Any, **kwargs: Any) -> NotBuilt:
        return self

    def add_parser(self, name: str, **kwargs: Any) -> NotBuilt:
        return NotBuilt(f"{self.prog} {name}")

    def set_defaults(self, **kwargs: Any) -> None:
        return None

    def get_default(self, dest: str) -> Any:
        return None

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        # (argparse's call when the command is chosen: never, build_parser(argv) builds every command argv names)
        raise RuntimeError(f"`{self.prog}` was not built: build_parser() was given another command line")


def with_stand_ins(parser_class: Callable[..., argparse.ArgumentParser]) -> Any:
    """add_subparsers()' parser_class (argparse calls it with add_parser's arguments, the ones of ArgumentParser):
    `parser_class`, or a NotBuilt when add_parser is given stand_in=True."""

    def make(*, stand_in: bool = False, **kw: Any) -> argparse.ArgumentParser | NotBuilt:
        return NotBuilt(**kw) if stand_in else parser_class(**kw)

    return make


class Commands:
    """Where a command module adds its commands: every command gets the shared options (--home, --json)
    and runs its `fn` with the parsed arguments."""

    def __init__(
        self,
        subparsers: Any,
        common: Callable[[argparse.ArgumentParser], None],
        width: int,
        describe: bool = True,
        group: str = "",
        named: Collection[str] | None = None,
    ):
        self._subparsers = subparsers  # what argparse's add_subparsers() returned (parser_class: with_stand_ins)
        self._common = common  # adds the options every command takes (--home, --json) to its parser
        self._width = width  # of the help (terminal_width()), read once
        self._describe = describe
        self._group = group  # the command whose actions these are ("chat "), or ""
        self._named = named  # the command line's words: a command not among them is listed, not built (None: all)

    def add(
        self, name: str, fn: Command | None, help: str, *, intermixed: bool = False, unquoted: bool = False, **kw: Any
    ) -> CommandParser:
        """A command `name` running `fn` (None: a group whose actions are added with actions()); `intermixed`:
        its optional positional may follow its options (cli/parser.py _Parser.intermixed); `unquoted`: a word its
        parse refuses is not quoted (_Parser.unquoted: one of a secret's). A command the command line does not name
        gets a NotBuilt (its name and help listed)."""
        if self._named is not None and name not in self._named:
            return self._subparsers.add_parser(name, help=help, stand_in=True)
        if self._describe:
            kw["description"] = help
        examples = epilog(self._group + name)
        kw["formatter_class"] = formatter_at(self._width)
        if examples is not None:  # (its lines kept as written: a description wrapped here, as argparse would)
            kw["epilog"] = examples
            kw["formatter_class"] = formatter_at(self._width, argparse.RawDescriptionHelpFormatter)
            if "description" in kw:
                kw["description"] = textwrap.fill(kw["description"], max(self._width, 40))
        p = self._subparsers.add_parser(name, help=help, **kw)
        self._common(p)
        p.set_defaults(fn=fn)
        if intermixed:
            p.intermixed = True
        if unquoted:
            p.unquoted = True
        return p

    def actions(self, parent: CommandParser, dest: str) -> Commands:
        """Second-level commands under `parent` (`sessiond chat new`); `dest` names the chosen action.
        Their --help shows their usage and options without a description (as always). Each is built when
        `parent` is (a NotBuilt's are NotBuilt: its add_subparsers is itself, and none is named)."""
        group = parent.prog.split(" ", 1)[1] + " "  # ("sessiond chat" -> "chat ")
        subparsers = parent.add_subparsers(dest=dest, metavar="ACTION")
        named = () if isinstance(parent, NotBuilt) else None
        return Commands(subparsers, self._common, self._width, describe=False, group=group, named=named)
