"""TensorBoard logging of runs, when the optional `tensorboard` package is installed
(`pip install 'smnas[tensorboard]'`); without it every call here is a no-op."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional


class Board:
    """A SummaryWriter in `folder`, or nothing when tensorboard is not installed. `purge_step`:
    a run resumed there discards its earlier events from that step on, so the old and the new
    curves do not overlap. Close it so the last events reach disk."""

    def __init__(self, folder: str | Path, purge_step: Optional[int] = None):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            self.writer = None
        else:
            self.writer = SummaryWriter(str(folder), purge_step=purge_step)

    def scalars(self, values: Mapping[str, Any], step: int) -> None:
        """Every int/float of `values` as a scalar at `step` (other values are skipped)."""
        if self.writer is None:
            return
        for tag, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(tag, value, step)

    def hparams(self, settings: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        """The run's settings beside its final metrics (TensorBoard's HPARAMS tab); values that
        are not numbers, strings or bools are written as text."""
        if self.writer is None:
            return
        plain = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in settings.items()}
        self.writer.add_hparams(plain, dict(metrics), run_name=".")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
