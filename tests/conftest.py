import os
import warnings

import pytest
import torch

from supernet.shapes import generate_shapes


if os.environ.get("PYTEST_XDIST_WORKER"):  # `pytest -n 2`: one thread per worker (and per command a test runs), not two on two cores each
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """A small shapes dataset (24 train, 6 val images of 64 px) for training tests."""
    return generate_shapes(tmp_path_factory.mktemp("data") / "shapes", train=24, val=6, size=64, seed=0)


@pytest.fixture(autouse=True)
def _warning_format(monkeypatch):
    """A command run in-process sets its one-line warning format; pytest's summary keeps file:line."""
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)
