"""The commands' flags: generated from the config dataclasses (one source for a setting's name,
type, default and help), a run config file they can be loaded from, and the check the config
dataclasses run on each numeric field. A bad flag is one line naming it, like every other bad input.
The library names a parameter in its messages as `name`; a command shows it as its own flag."""
from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import re
import types
import typing
import warnings
from pathlib import Path
from typing import Any, NoReturn, Optional

import yaml

from .io import atomic_write_bytes, error_line

_PARAMETER = re.compile(r"`([a-z][a-z0-9_]*)`")
_command_flags: dict[str, str] = {}  # parameter -> flag, of the command this process parsed last


def as_flags(message: str) -> str:
    """A library message as a command shows it: each parameter named `name` that is one of the
    command's flags becomes that flag (`batch_size` -> --batch-size); other names stay as they are."""
    return _PARAMETER.sub(lambda m: _command_flags.get(m[1], m[0]), message)


def error_message(e: BaseException) -> str:
    """The one line a command prints for an error that stops it."""
    return f"error: {as_flags(error_line(e))}"


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The module docstring as written, and every flag's default after its help."""


class CommandParser(argparse.ArgumentParser):
    """argparse, but an unparsable flag (`--steps abc`, an unknown choice) prints one line naming
    it and exits 2, instead of the usage block followed by the message; `--help` is unchanged."""

    def __init__(self, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(**kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {as_flags(message)} (see {self.prog} --help)\n")

    def parse_known_args(self, args=None, namespace=None):
        _command_flags.clear()  # a subcommand's parser, called from its parent's, narrows them to its own
        _command_flags.update(self.flags())
        return super().parse_known_args(args, namespace)

    def flags(self) -> dict[str, str]:
        """Each option's parameter (its dest) -> its long flag, subcommands' options included."""
        out = {}
        for a in self._actions:
            if isinstance(a, argparse._SubParsersAction):
                for sub in a.choices.values():
                    out.update(sub.flags() if isinstance(sub, CommandParser) else {})
            elif a.option_strings and a.dest != "help":
                out[a.dest] = next((o for o in a.option_strings if o.startswith("--")), a.option_strings[0])  # --x of --x/--no-x
        return out


def field_error(error: type[Exception], name: str, value, expected: str) -> Exception:
    """`error("`NAME`: expected EXPECTED, got VALUE")` for the config field `name` (a command shows it as --NAME)."""
    return error(f"`{name}`: expected {expected}, got {value!r}")


def check_number(error: type[Exception], name: str, value, low: float, high: float = math.inf, low_open: bool = False,
                 high_open: bool = False, integer: bool = False, optional: bool = False) -> None:
    """Raise `error` naming the flag unless `value` is a finite number (an integer if asked) in
    the range; bools are not numbers here, None passes where `optional`."""
    if value is None and optional:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and (not integer or float(value).is_integer())
    ok = ok and (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        kind = "an integer" if integer else "a number"
        lo, hi = ("(" if low_open else "[") + f"{low:g}", f"{high:g}" + (")" if high_open else "]")
        raise field_error(error, name, value, f"{kind} in {lo}, {hi}" + (" or none" if optional else ""))


def check_choices(error: type[Exception], config: Any) -> None:
    """Raise `error` naming the flag for the first field of the dataclass `config` whose value is
    not one of the choices its `option` declares (none passes where the field is optional)."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        choices, value = f.metadata.get("choices"), getattr(config, f.name)
        optional = _field_kind(hints[f.name])[1]
        if choices and value not in choices and not (optional and value is None):
            raise field_error(error, f.name, value, f"one of {choices}" + (" or none" if optional else ""))


class _MessageFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = as_flags(record.getMessage())
        return message if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {message}"


def log_to_stderr(level: int = logging.INFO) -> None:
    """What a command does with the library's `logging`: messages, one a line, on stderr (stdout
    carries the command's JSON result alone), warnings too. Leaves a handler the caller set up alone."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()  # stderr
        handler.setFormatter(_MessageFormatter())
        root.addHandler(handler)
    root.setLevel(level)
    warnings.formatwarning = _format_warning  # formatting only: what records warnings (pytest, catch_warnings) still does


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """A warning as one line, its parameters shown as the command's flags (not file:line and source)."""
    return f"warning: {as_flags(str(message))}\n"


def option(default: Any, help: str, choices: Optional[typing.Iterable[str]] = None, metavar: Optional[str] = None,
           const: Any = None) -> Any:
    """A config dataclass field that carries its flag's help (and choices): the one place a
    setting is described, for `--help`, the README and the config file alike. `const`: the value
    of the flag given without one (`--amp` for `--amp fp16`)."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": None if choices is None else list(choices),
                                                        "metavar": metavar, "const": const})


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _none_or(kind: type):
    def parse(text: str):
        return None if text.lower() in ("none", "null") else kind(text)
    parse.__name__ = kind.__name__  # argparse names the type in its errors
    return parse


def _field_kind(annotation) -> tuple[type, bool]:
    """(base type, optional) of a field annotation: int, float, str, bool or tuple, maybe Optional."""
    args = typing.get_args(annotation)
    optional = (typing.get_origin(annotation) in (typing.Union, types.UnionType)) and type(None) in args
    if optional:
        annotation = next(a for a in args if a is not type(None))
    base = typing.get_origin(annotation) or annotation
    return base, optional


def _tuple_item(annotation) -> type:
    """The element type of a `tuple[T, ...]` annotation, maybe Optional (str when it says none)."""
    args = typing.get_args(annotation)
    if type(None) in args:
        args = typing.get_args(next(a for a in args if a is not type(None)))
    return args[0] if args and args[0] in (int, float, str) else str


METAVARS = {int: "N", float: "X", str: "TEXT"}


def add_config_arguments(p: argparse.ArgumentParser, cls: type, skip: typing.Collection[str] = (),
                         defaults: Optional[dict[str, Any]] = None) -> None:
    """One flag per field of the dataclass `cls` (but `skip`): `--field-name`, typed from the
    annotation, defaulting to the field's default (or `defaults`), with the field's help and
    choices. Bools are `--x/--no-x`; tuples take one or more values; an optional field takes
    `none` too."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        kind, optional = _field_kind(hints[f.name])
        meta = f.metadata
        default = (defaults or {}).get(f.name, f.default)
        kw: dict[str, Any] = {"dest": f.name, "default": default, "help": meta.get("help", "").replace("%", "%%")}
        if kind is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif kind is tuple:
            item = _tuple_item(hints[f.name])
            kw.update(nargs="+", type=item, metavar=meta.get("metavar") or METAVARS.get(item, f.name.upper()))
        else:
            kw["type"] = _none_or(kind) if optional else kind
            if meta.get("const") is not None:
                kw.update(nargs="?", const=meta["const"])
            if meta.get("choices"):
                kw["choices"] = meta["choices"] + ([None] if optional else [])
            else:
                kw["metavar"] = meta.get("metavar") or METAVARS.get(kind, "VALUE")
        p.add_argument(flag(f.name), **kw)


def add_config_file_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="run config (YAML or JSON, e.g. a run folder's config.yaml): its settings "
                                                    "become the defaults, flags given here override them")


def parse_with_config(p: argparse.ArgumentParser, argv: Optional[list[str]]) -> argparse.Namespace:
    """`p.parse_args(argv)`, with the settings of `--config FILE` (if given) as the defaults, so
    that flags override the file. An unreadable file or an unknown setting is one line."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    if known.config:
        p.set_defaults(**read_config(known.config, p))
    return p.parse_args(argv)


def read_config(path: str, p: argparse.ArgumentParser) -> dict[str, Any]:
    """The settings of a run config file, each checked to be one of `p`'s flags."""
    try:
        values = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        p.error(f"--config {path}: {getattr(e, 'strerror', None) or str(e).splitlines()[0]}")
    if values is None:
        values = {}
    if not isinstance(values, dict):
        p.error(f"--config {path}: expected a mapping of settings (name: value), got {type(values).__name__}")
    known = {a.dest for a in p._actions if a.option_strings and a.dest not in ("help", "config")}
    values = {str(k).replace("-", "_"): v for k, v in values.items()}
    if unknown := sorted(set(values) - known):
        p.error(f"--config {path}: unknown setting {unknown[0]!r} (this command's settings: {', '.join(sorted(known))})")
    return values


def write_config(values: dict[str, Any], path: str | Path) -> None:
    """Save the resolved settings of a run as YAML (atomically): `--config` re-runs it."""
    plain = {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
    atomic_write_bytes(path, yaml.safe_dump(plain, sort_keys=False).encode())
