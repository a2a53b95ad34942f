"""Reading a supernet training checkpoint back: for the search, retraining and the benchmarks."""
from __future__ import annotations

from pathlib import Path

import torch

from .errors import TrainError
from .io import load_failure
from .space import SearchSpace
from .supernet import Supernet


def trained_space(model: Supernet, blob: dict) -> SearchSpace:
    """The sub-space a checkpoint's paths were drawn from by block type (`--train-blocks`): what
    its weights can score (a stage-matched supernet never ran the other blocks)."""
    return model.space.restrict(blocks=blob["config"].get("train_blocks"))


def load_supernet(path: str | Path, device: torch.device | str = "cpu") -> tuple[Supernet, dict]:
    """The supernet of a training checkpoint (its EMA weights when it kept an EMA) and the
    checkpoint itself (space, config, num_classes, cat_ids ...). Raises TrainError on bad files."""
    path = Path(path)
    if not path.is_file():
        raise TrainError(f"{path}: supernet checkpoint not found (train one with train_supernet.py, which writes RUN_DIR/last.pt)")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        space = SearchSpace.from_dict(blob["space"])
        model = Supernet(space, blob["num_classes"])
        model.load_state_dict(blob["ema"] if blob.get("ema") else blob["model"])
    except Exception as e:  # not a torch file, not ours, or another version's
        raise TrainError(f"{path}: not a supernet checkpoint written by train_supernet.py ({load_failure(e)})") from None
    return model.to(device).eval(), blob
