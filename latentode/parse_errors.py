"""Short configuration errors for ``latentode fit / validate / test``.

jsonargparse reports a mistyped option in a YAML config (``holdot: 0.1``) as a nested tree
of every type the value might have had, after the usage of all 150 options, with the
offending name somewhere in the middle. `ConciseParser` prints the mistake, where it is
and the nearest accepted name instead::

    latentode fit: error: data (latentode.data.csv_module.CSVDataModule): option 'holdot'
    is not accepted; did you mean 'holdout'?
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import re
import sys
from typing import Any, NoReturn

from pytorch_lightning.cli import LightningArgumentParser

__all__ = ["ConciseParser", "concise"]

# lines of jsonargparse's union report that say nothing about the mistake
_NOISE = re.compile(
    r"^\s*(Does not validate against any of the Union subtypes|Subtypes: \[.*|Errors:|"
    r"- Expected a <class 'NoneType'>|Given value type: .*|Given value: .*)$"
)
_KEY = re.compile(r'^\s*(?:- )?Parser key "([^"]+)":\s*$')
_CLASS = re.compile(r"^\s*(?:- )?Problem with given class_path '([^']+)':\s*$")
_OPTION = re.compile(r"Option '([^']+)' is not accepted")
_UNKNOWN = re.compile(r"unrecognized arguments: (\S+)")
# the base classes a config without a class_path leaves in place
_BASES = ("pytorch_lightning.LightningDataModule", "pytorch_lightning.LightningModule")


def _parameters(class_path: str) -> list[str]:
    """The keyword names ``class_path``'s constructor accepts (empty if it cannot be read)."""
    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
        return [p for p in inspect.signature(cls).parameters if p not in ("self", "args", "kwargs")]
    except (ImportError, AttributeError, TypeError, ValueError):
        return []


def _nearest(name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def concise(message: str, options: list[str] | None = None) -> str:
    """jsonargparse's ``message`` as one line: the key path and class where the mistake is,
    the mistake, and the nearest accepted name for an unknown option (``options``: the
    parser's option strings, for an unrecognized command-line argument)."""
    keys: list[str] = []
    cls = None
    core: list[str] = []
    for line in message.splitlines():
        if _NOISE.match(line):
            continue
        if m := _KEY.match(line):
            keys.append(m.group(1))
        elif m := _CLASS.match(line):
            cls = m.group(1)
        elif line.strip():
            core.append(line.strip().removeprefix("- "))
    text = " ".join(core)
    if m := _OPTION.search(text):
        text = f"option {m.group(1)!r} is not accepted"
        if cls in _BASES and keys:
            text += (
                f": no {keys[0]} class is named, so only {cls}'s options are; give "
                f"{keys[0]}.class_path first (configs/csv.yaml shows one)"
            )
        else:
            text += _nearest(m.group(1), _parameters(cls) if cls else [])
    elif (m := _UNKNOWN.search(text)) and options:
        text += _nearest(m.group(1), options)
    where = ".".join(keys)
    if where and cls and cls not in _BASES:
        where += f" ({cls})"
    return f"{where}: {text}" if where else text


class ConciseParser(LightningArgumentParser):
    """Lightning's parser whose errors print as one line (`concise`) and exit with status
    2, instead of the usage of every option followed by jsonargparse's nested report."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        """Print the concise error and exit 2 (or raise, where jsonargparse would: nested
        parsing that tries a type, or its debug mode)."""
        if not self.exit_on_error or os.environ.get("JSONARGPARSE_DEBUG"):
            super().error(message, ex)
        parser: Any = getattr(ex, "subcommand_parser", None) or self
        options = [o for a in parser._actions for o in a.option_strings]
        prog = re.sub(r"^\S+", "latentode", parser.prog.replace(" [options]", ""))
        sys.stderr.write(
            f"{prog}: error: {concise(message, options)}\n"
            f"({prog} --help lists the options; --print_config shows the whole "
            "configuration.)\n"
        )
        sys.exit(2)
