"""The commands' argument parser: a bad flag is one line, like every other bad input."""
from __future__ import annotations

import argparse
from typing import NoReturn


class CommandParser(argparse.ArgumentParser):
    """argparse, but an unparsable flag (`--steps abc`, an unknown choice) prints one line naming
    it and exits 2, instead of the usage block followed by the message; `--help` is unchanged."""

    def __init__(self, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(**kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")
