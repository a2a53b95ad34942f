"""The commands' flags: their argument parser, and the check the config dataclasses run on each
numeric field. A bad flag is one line naming it, like every other bad input."""
from __future__ import annotations

import argparse
import math
from typing import NoReturn


class CommandParser(argparse.ArgumentParser):
    """argparse, but an unparsable flag (`--steps abc`, an unknown choice) prints one line naming
    it and exits 2, instead of the usage block followed by the message; `--help` is unchanged."""

    def __init__(self, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(**kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def flag_error(error: type[Exception], name: str, value, expected: str) -> Exception:
    """`error("--NAME: expected EXPECTED, got VALUE")` for the config field `name`."""
    return error(f"--{name.replace('_', '-')}: expected {expected}, got {value!r}")


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
        raise flag_error(error, name, value, f"{kind} in {lo}, {hi}" + (" or none" if optional else ""))
