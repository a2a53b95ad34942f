"""`smnas COMMAND ...`: every step of the pipeline from one installed command.

    smnas demo [--quick]                 the whole pipeline on the built-in shapes data
    smnas train ...                      train the supernet (train_supernet.py)
    smnas search --latency-budget MS ... evolutionary search (evolve.py)
    smnas retrain --arch ...             retrain finalists or baselines from scratch (retrain.py)
    smnas export MODEL.pt                TorchScript and ONNX of a retrained detector
    smnas latency build|validate ...     the per-device latency lookup table
    smnas info --space tiny              what a search space holds

`smnas COMMAND --help` lists a command's flags with their defaults. Each command prints its result
as one JSON line on stdout; progress and messages go to stderr.
"""
from __future__ import annotations

import importlib
import os
import sys
from typing import Optional

from . import __version__

# command -> (module with main(argv, prog), what it does)
COMMANDS = {
    "demo": ("smnas.commands.demo", "the whole pipeline end to end on the built-in shapes data"),
    "train": ("smnas.commands.train", "train the single-path supernet once, from scratch"),
    "search": ("smnas.commands.search", "search the supernet under a latency budget"),
    "retrain": ("smnas.commands.retrain", "retrain architectures from scratch as standalone detectors"),
    "export": ("supernet.export", "TorchScript and ONNX exports of a retrained detector"),
    "latency": ("latency.__main__", "build and validate latency lookup tables on this machine"),
    "info": ("supernet.__main__", "describe a search space and check its supernet"),
}


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip() + "\n\ncommands:\n" + "\n".join(f"  {n:<9} {d}" for n, (_, d) in COMMANDS.items()))
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"smnas {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}; expected one of {', '.join(COMMANDS)} (see smnas --help)", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    try:
        return module.main(rest, prog=f"smnas {name}")
    except SystemExit as e:  # argparse: --help (0) or a bad flag (2)
        return e.code if isinstance(e.code, int) else 2
    except BrokenPipeError:  # `smnas ... | head`: the reader left early, as with any Unix tool
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so that the exit flush does not fail again
        return 141
