"""The commands of `sessiond`, one module per area. Each module has `register(commands: Commands)`,
which adds its commands (argparse parsers whose `fn` runs the command).

To add a command: write a module here with `register()` and list it in `COMMAND_MODULES` in
cli/parser.py; its place in that list is its place in `sessiond --help`. A module whose commands stand among
another area's in that list is registered by that area's `register()`: ask.py by messages.py's, sharing.py
by sync.py's."""

from __future__ import annotations

import argparse
import functools
import shutil
import textwrap
from collections.abc import Callable
from typing import Any

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


class Commands:
    """Where a command module adds its commands: every command gets the shared options (--home, --json)
    and runs its `fn` with the parsed arguments."""

    def __init__(
        self,
        subparsers: Any,
        common: argparse.ArgumentParser,
        width: int,
        describe: bool = True,
        group: str = "",
    ):
        self._subparsers = subparsers  # what argparse's add_subparsers() returned
        self._common = common
        self._width = width  # of the help (terminal_width()), read once
        self._describe = describe
        self._group = group  # the command whose actions these are ("chat "), or ""

    def add(
        self, name: str, fn: Command | None, help: str, *, intermixed: bool = False, **kw: Any
    ) -> argparse.ArgumentParser:
        """A command `name` running `fn` (None: a group whose actions are added with actions()); `intermixed`:
        its optional positional may follow its options (cli/parser.py _Parser.intermixed)."""
        if self._describe:
            kw["description"] = help
        examples = epilog(self._group + name)
        kw["formatter_class"] = formatter_at(self._width)
        if examples is not None:  # (its lines kept as written: a description wrapped here, as argparse would)
            kw["epilog"] = examples
            kw["formatter_class"] = formatter_at(self._width, argparse.RawDescriptionHelpFormatter)
            if "description" in kw:
                kw["description"] = textwrap.fill(kw["description"], max(self._width, 40))
        p = self._subparsers.add_parser(name, parents=[self._common], help=help, **kw)
        p.set_defaults(fn=fn)
        if intermixed:
            p.intermixed = True
        return p

    def actions(self, parent: argparse.ArgumentParser, dest: str) -> Commands:
        """Second-level commands under `parent` (`sessiond chat new`); `dest` names the chosen action.
        Their --help shows their usage and options without a description (as always)."""
        group = parent.prog.split(" ", 1)[1] + " "  # ("sessiond chat" -> "chat ")
        subparsers = parent.add_subparsers(dest=dest, metavar="ACTION")
        return Commands(subparsers, self._common, self._width, describe=False, group=group)
