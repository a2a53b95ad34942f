"""Smoothing noisy subnet scores with what the other evaluated subnets say.

An inherited-weight score is the true quality of a subnet plus an error of its own (the shared
weights suit some paths better than others). Subnets that share choices share much of their true
quality, so a ridge regression of the scores on the subnets' choices (one-hot, active genes only),
fitted to every subnet evaluated so far and read back at each of them, averages much of the
individual error away: the smoothed score is the fit's value at the subnet. The ridge strength is
chosen by exact leave-one-out error on the scores themselves (no truth involved).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from supernet.space import Arch, SearchSpace

LAMBDAS = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)


def choice_features(space: SearchSpace, archs: Sequence[Arch]) -> np.ndarray:
    """One column per (gene, value) that some arch takes, 1 where the arch takes it; genes with
    a single choice, or inactive for an arch, add nothing."""
    rows = []
    for arch in archs:
        values = space.encode(arch)
        rows.append({(g.name, values[g.name]) for g in space.genes() if len(g.choices) > 1 and space.is_active(g, values)})
    columns = sorted({f for row in rows for f in row}, key=str)
    index = {f: i for i, f in enumerate(columns)}
    x = np.zeros((len(archs), len(columns)))
    for i, row in enumerate(rows):
        x[i, [index[f] for f in row]] = 1.0
    return x


def smooth_scores(space: SearchSpace, archs: Sequence[Arch], scores: Sequence[float], lambdas: Sequence[float] = LAMBDAS) -> list[float]:
    """Each score replaced by a ridge fit of all `scores` on the archs' choices, read at its arch."""
    return ridge_smooth(choice_features(space, archs), scores, lambdas) if len(scores) >= 3 else list(map(float, scores))


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
