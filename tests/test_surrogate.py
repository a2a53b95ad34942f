import numpy as np
import pytest
from common import MICRO_SPACE

from search.surrogate import _leaves, choice_features, ridge_smooth, smooth_scores
from supernet import SearchSpace


def additive(seed: int, n: int = 80, genes: int = 8, choices: int = 3, noise: float = 1.0):
    rng = np.random.default_rng(seed)
    values = rng.integers(0, choices, (n, genes))
    x = np.zeros((n, genes * choices))
    x[np.arange(n)[:, None], np.arange(genes) * choices + values] = 1.0
    truth = x @ rng.normal(0, 1, genes * choices)
    return x, truth, truth + rng.normal(0, noise, n)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_smoothing_brings_noisy_scores_closer_to_an_additive_truth(seed):
    x, truth, observed = additive(seed)
    smoothed = np.asarray(ridge_smooth(x, observed))
    assert np.mean((smoothed - truth) ** 2) < 0.5 * np.mean((observed - truth) ** 2)


def test_clean_scores_stay_and_tiny_sets_pass_through():
    x, truth, _ = additive(0, noise=0.0)
    assert np.allclose(ridge_smooth(x, truth), truth, atol=0.05 * truth.std())  # the least penalty wins: nothing to average away
    assert ridge_smooth(x[:2], [0.3, 0.1]) == [0.3, 0.1]


def test_features_are_the_fields_of_each_arch():
    space = SearchSpace.from_dict(MICRO_SPACE)
    archs = [space.sample(i) for i in range(20)]
    x = choice_features(archs)
    fields = [len(list(_leaves(a.to_dict()))) for a in archs]  # resolution, stem, per stage width, depth and its blocks...
    assert x.shape[0] == 20 and x.sum(1).tolist() == fields
    deeper = next(a for a in archs if a.backbone.stages[0].depth == 2)
    assert fields[archs.index(deeper)] > min(fields)  # a block past the depth is no field
    assert len(smooth_scores(archs, [float(i) for i in range(20)])) == 20
