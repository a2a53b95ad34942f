import collections

import pytest

from supernet import SearchSpace
from supernet.sampler import FairSampler, SAMPLERS


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


def test_sandwich_trains_the_extremes_with_every_type_alike(space):
    sampler = SAMPLERS["sandwich"](space, 0)
    largest, smallest = space.largest(), space.smallest()
    types = collections.defaultdict(collections.Counter)  # which head / neck / block types the extremes train

    def ordered(a):
        return a.resolution, a.backbone.stem_width, [(s.width, s.depth) for s in a.backbone.stages], a.neck.width, a.head.width, a.head.num_convs

    for step in range(300):
        paths = sampler.paths(step)
        assert len(paths) == 3
        for path, extreme in zip(paths, (largest, smallest)):
            assert ordered(path) == ordered(extreme)
            types["head"][path.head.type] += 1
            types["neck"][path.neck.type] += 1
            types["block"].update(b for s in path.backbone.stages for b in s.blocks)
    for kind, choices in (("head", space.head.types), ("neck", space.neck.types), ("block", space.backbone.stages[0].blocks)):
        counts = [types[kind][c] for c in choices]
        assert min(counts) > 0.7 * max(counts), (kind, counts)  # fixed ends would give 600 : 0 for the middle ones


def test_fair_visits_every_value_equally_often(space):
    sampler = FairSampler(space, 0)
    counts = collections.defaultdict(collections.Counter)
    for step in range(14 * 30):
        values = space.encode(sampler.paths(step)[0])
        for name in space.active_genes(values):
            counts[name][values[name]] += 1
    for g in space.genes():
        name, c = g.name, counts[g.name]
        assert set(c) == set(g.choices), name
        assert max(c.values()) - min(c.values()) <= 1, (name, c)


@pytest.mark.parametrize("name", sorted(set(SAMPLERS) - {"narrow_twin"}))
def test_random_paths_a_step(space, name):
    one, three = SAMPLERS[name](space, 5), SAMPLERS[name](space, 5, random_paths=3)
    extremes = {"sandwich": 2, "smallest": 1}.get(name, 0)
    for step in range(10):
        single, several = one.paths(step), three.paths(step)
        assert len(single) == 1 + extremes and len(several) == 3 + extremes
        assert len({a.hash() for a in several[extremes:]}) == 3  # distinct draws, not one path three times
        assert several[0] == single[0] or name == "fair"  # uniform and sandwich: the first draw is the one-path run's own


def test_smallest_sampler_trains_the_smallest_path_first(space):
    for step in range(5):
        smallest, drawn = SAMPLERS["smallest"](space, 2).paths(step)
        assert smallest.resolution == min(space.resolutions) and smallest.backbone.stem_width == min(space.backbone.stem_widths)
        assert [s.depth for s in smallest.backbone.stages] == [min(s.depths) for s in space.backbone.stages]
        assert drawn == SAMPLERS["uniform"](space, 2).paths(step)[0]


def test_narrow_twin_sampler_pairs_each_path_with_itself_at_its_least_widths(space):
    twins, uniform = SAMPLERS["narrow_twin"](space, 7, random_paths=2, widths="wide"), SAMPLERS["uniform"](space, 7, random_paths=2, widths="wide")
    for step in range(10):
        paths, drawn = twins.paths(step), uniform.paths(step)
        assert paths[0] == drawn[0] and drawn[1] in paths
        for arch in drawn:
            twin = space.narrowest(arch)
            assert twin in paths if twin != arch else paths.count(arch) == 1
            got, want = space.encode(twin), space.encode(arch)
            for g in space.genes():
                assert got[g.name] == (min(g.choices) if g.elastic == "width" else want[g.name]), g.name


def test_wide_width_sampling_draws_each_width_by_its_rank():
    """Weights 1..n by rank, narrowest first, whatever order the space lists the widths in; every
    other choice stays uniform."""
    space = SearchSpace.from_dict({**SearchSpace.preset("tiny").to_dict(), "neck": {"types": ["fpn", "pan"], "widths": [32, 16, 24], "repeats": [1, 2]}})
    wide, uniform = SAMPLERS["uniform"](space, 0, widths="wide"), SAMPLERS["uniform"](space, 0)
    n = 6000
    neck = collections.Counter(wide.paths(s)[0].neck.width for s in range(n))
    for width, share in ((16, 1 / 6), (24, 2 / 6), (32, 3 / 6)):
        assert abs(neck[width] / n - share) < 0.025, neck
    stem = collections.Counter(wide.paths(s)[0].backbone.stem_width for s in range(n))
    assert abs(stem[16] / n - 2 / 3) < 0.025, stem
    heads = collections.Counter(wide.paths(s)[0].head.type for s in range(3 * n))  # 3n: the 10 % bound at over 5 SD
    assert max(heads.values()) - min(heads.values()) < 0.1 * n, heads
    assert collections.Counter(uniform.paths(s)[0].neck.width for s in range(n))[32] < 0.4 * n
    with pytest.raises(ValueError, match="widths: 'widest' is not one of"):
        space.sample(0, "widest")
    fair = FairSampler(space, 0, widths="wide")
    rounds = collections.Counter(fair.paths(s)[0].neck.width for s in range(6 * 50))
    assert rounds == {16: 50, 24: 100, 32: 150}  # the same shares, met exactly
    with pytest.raises(ValueError, match="widths: 'widest' is not one of"):
        FairSampler(space, 0, widths="widest")


def test_deep_depth_sampling_draws_each_depth_by_its_rank():
    """Stage depths with weights 1..n, shallowest first, independently of the width sampling."""
    space = SearchSpace.preset("tiny")  # stage 2: depths 1, 2, 3
    deep = SAMPLERS["uniform"](space, 0, depths="deep")
    n = 6000
    paths = [deep.paths(s)[0] for s in range(n)]
    depth = collections.Counter(p.backbone.stages[2].depth for p in paths)
    for d, share in ((1, 1 / 6), (2, 2 / 6), (3, 3 / 6)):
        assert abs(depth[d] / n - share) < 0.025, depth
    assert abs(collections.Counter(p.neck.width for p in paths)[32] / n - 1 / 3) < 0.025  # widths stay uniform
    fair = FairSampler(space, 0, depths="deep")
    assert collections.Counter(fair.paths(s)[0].backbone.stages[2].depth for s in range(6 * 40)) == {1: 40, 2: 80, 3: 120}
    for sampler in ("uniform", "fair"):
        with pytest.raises(ValueError, match="depths: 'deepest' is not one of"):
            SAMPLERS[sampler](space, 0, depths="deepest")
