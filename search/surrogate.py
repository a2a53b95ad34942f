"""Smoothing noisy subnet scores with what the other evaluated subnets say.

An inherited-weight score is the true quality of a subnet plus an error of its own (the shared
weights suit some paths better than others). Subnets that share choices share much of their true
quality, so a ridge regression of the scores on the subnets' choices (one-hot fields of their
JSON: a block past a stage's depth is no field), fitted to every subnet evaluated so far and read back at each of them, averages much of the
individual error away: the smoothed score is the fit's value at the subnet. The ridge strength is
chosen by exact leave-one-out error on the scores themselves (no truth involved).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from supernet.space import Arch

LAMBDAS = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)


def choice_features(archs: Sequence[Arch]) -> np.ndarray:
    """One column per (field, value) of the archs' JSON (`Arch.to_dict`, flattened: a stage's
    width and depth, each of its blocks, the neck's type, width, repeats...), 1 where an arch
    has it. A field all archs share is a constant column, which the centring in `ridge_smooth`
    zeroes; a block past a stage's depth is no field at all."""
    rows = [set(_leaves(arch.to_dict())) for arch in archs]
    columns = {f: i for i, f in enumerate(sorted({f for row in rows for f in row}, key=str))}
    x = np.zeros((len(archs), len(columns)))
    for i, row in enumerate(rows):
        x[i, [columns[f] for f in row]] = 1.0
    return x


def smooth_scores(archs: Sequence[Arch], scores: Sequence[float], lambdas: Sequence[float] = LAMBDAS) -> list[float]:
    """Each score replaced by a ridge fit of all `scores` on the archs' choices, read at its arch."""
    return ridge_smooth(choice_features(archs), scores, lambdas) if len(scores) >= 3 else list(map(float, scores))


def _leaves(tree, path: str = ""):
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _leaves(v, f"{path}.{k}" if path else k)
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from _leaves(v, f"{path}[{i}]")
    else:
        yield path, tree


def ridge_smooth(features: np.ndarray, scores: Sequence[float], lambdas: Sequence[float] = LAMBDAS) -> list[float]:
    """The in-sample values of a ridge regression of `scores` on `features` (rows: candidates),
    its strength the one of `lambdas` with the least exact leave-one-out error; the mean score
    is not shrunk. Fewer than 3 candidates: the scores as they are."""
    y = np.asarray(scores, dtype=float)
    if len(y) < 3:
        return list(map(float, y))
    x = features - features.mean(0)  # centred: the intercept (the mean score) is free
    mean = y.mean()
    best = None
    for lam in lambdas:
        hat = x @ np.linalg.solve(x.T @ x + lam * np.eye(x.shape[1]), x.T)  # fitted = mean + hat @ (y - mean)
        fitted = mean + hat @ (y - mean)
        loo = (y - fitted) / np.clip(1.0 - np.diag(hat) - 1.0 / len(y), 1e-6, None)  # exact with a free mean
        error = float(np.mean(loo ** 2))
        if best is None or error < best[0]:
            best = (error, fitted)
    return [float(v) for v in best[1]]
