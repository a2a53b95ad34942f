"""Every random generator a run draws from: seeded at start, saved in checkpoints, restored on resume."""
from __future__ import annotations

import random

import numpy as np
import torch

from .sampler import python_rng_state


def rng_state() -> dict:
    state = {"python": random.getstate(), "torch": torch.get_rng_state(), "numpy": np.random.get_state(legacy=False)}
    state["numpy"] = {**state["numpy"], "state": {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in state["numpy"]["state"].items()}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(python_rng_state(state["python"]))
    torch.set_rng_state(state["torch"])
    numpy_state = dict(state["numpy"])
    numpy_state["state"] = {k: np.array(v, dtype=np.uint32) if isinstance(v, list) else v for k, v in numpy_state["state"].items()}
    np.random.set_state(numpy_state)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
