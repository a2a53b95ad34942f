import collections

import pytest

from supernet import SearchSpace
from supernet.sampler import SAMPLERS, FairSampler


@pytest.fixture(scope="module")
def space():
    return SearchSpace.preset("tiny")


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_same_seed_same_paths_and_resume(space, name):
    a, b = SAMPLERS[name](space, 3), SAMPLERS[name](space, 3)
    first = [a.paths(s) for s in range(20)]
    assert first == [b.paths(s) for s in range(20)]
    state = a.state_dict()
    rest = [a.paths(s) for s in range(20, 40)]
    c = SAMPLERS[name](space, 3)
    c.load_state_dict(state)
    assert [c.paths(s) for s in range(20, 40)] == rest
    assert SAMPLERS[name](space, 4).paths(0) != first[0] or name == "sandwich"


def test_sandwich_trains_the_extremes(space):
    paths = SAMPLERS["sandwich"](space, 0).paths(5)
    assert paths[0] == space.largest() and paths[1] == space.smallest() and len(paths) == 3


def test_fair_visits_every_value_equally_often(space):
    sampler = FairSampler(space, 0)
    counts = collections.defaultdict(collections.Counter)
    for step in range(14 * 30):
        values = space.encode(sampler.paths(step)[0])
        for name in space.active_genes(values):
            counts[name][values[name]] += 1
    for name, choices in space.genes():
        c = counts[name]
        assert set(c) == set(choices), name
        assert max(c.values()) - min(c.values()) <= 1, (name, c)
