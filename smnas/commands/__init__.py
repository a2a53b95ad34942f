"""One module a command, each with `main(argv, prog) -> exit status`; stdout is its JSON result."""
from __future__ import annotations

import sys
from typing import Callable, Optional, TypeVar

from supernet.cli import as_flags, error_message
from supernet.distributed import end_distributed
from supernet.errors import Interrupted, TrainError

T = TypeVar("T")


def run_reporting(work: Callable[[], T], errors: tuple[type[Exception], ...] = (TrainError, ValueError, OSError)) -> tuple[int, Optional[T]]:
    """(0, work()), or the exit status of what stopped it, its one line on stderr: 130 for an
    interrupted run (saved: --resume continues it), 2 for a bad input."""
    try:
        result = work()
    except Interrupted as e:  # every rank stops after the same step
        end_distributed()
        print(f"stopped: {as_flags(str(e))}", file=sys.stderr)
        return 130, None
    except errors as e:
        print(error_message(e), file=sys.stderr)
        return 2, None
    end_distributed()
    return 0, result
