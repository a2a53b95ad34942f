"""smnas: one-shot, weight-sharing NAS for object detection under a latency budget.

The library lives in `supernet` (space, supernet, training), `latency` (per-device lookup tables)
and `search` (evolution, retraining, the pipeline); this package is the `smnas` command."""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("smnas")
except PackageNotFoundError:  # run from a checkout that was never installed
    __version__ = "0+unknown"
