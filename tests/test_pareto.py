import itertools
import random

import pytest

from search import crowding_distance, dominates, non_dominated_sort, pareto_front

MAP_LATENCY = (True, False)  # maximise mAP, minimise latency


def brute_front(points, maximize):
    return sorted(i for i, p in enumerate(points) if not any(dominates(q, p, maximize) for q in points))


def test_dominance_directions():
    assert dominates((0.5, 10.0), (0.4, 12.0), MAP_LATENCY)
    assert not dominates((0.5, 10.0), (0.6, 12.0), MAP_LATENCY)  # a trade-off
    assert not dominates((0.5, 10.0), (0.5, 10.0), MAP_LATENCY)  # equal points do not dominate


def test_fronts_match_brute_force_and_partition():
    rng = random.Random(0)
    for _ in range(20):
        points = [(round(rng.random(), 1), round(rng.random() * 10, 0)) for _ in range(30)]
        fronts = non_dominated_sort(points, MAP_LATENCY)
        assert sorted(itertools.chain(*fronts)) == list(range(30))
        assert sorted(fronts[0]) == brute_front(points, MAP_LATENCY) == sorted(pareto_front(points, MAP_LATENCY))
        remaining = list(range(30))
        for front in fronts:  # each front is the Pareto front of what the earlier ones left
            sub = [points[i] for i in remaining]
            assert sorted(front) == sorted(remaining[k] for k in brute_front(sub, MAP_LATENCY))
            remaining = [i for i in remaining if i not in front]


def test_crowding_keeps_extremes_and_prefers_isolated_points():
    points = [(0.1, 1.0), (0.2, 2.0), (0.25, 2.2), (0.5, 5.0), (0.6, 9.0)]
    d = crowding_distance(points, list(range(5)))
    assert d[0] == d[4] == float("inf")
    assert d[3] > max(d[1], d[2])  # the isolated point beats the two crowded ones
    assert d[1] == pytest.approx(0.3 + 0.15) and d[3] == pytest.approx(0.7 + 0.85)


def test_bad_points():
    with pytest.raises(ValueError, match="needs 2 objectives"):
        non_dominated_sort([(1.0,)], MAP_LATENCY)
    assert pareto_front([], MAP_LATENCY) == []
