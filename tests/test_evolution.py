import itertools

import pytest

from search import Evolution, Objective, SearchError, pareto_front

CHOICES = (0, 1, 2, 3)
WEIGHTS = (3, 1, 4, 1, 5, 9, 2, 6)  # cost of each unit of each gene
GAINS = (2, 1, 3, 2, 4, 5, 1, 4)  # score of each unit of each gene
BUDGET = 40
GENES = [(f"g{i}", CHOICES) for i in range(len(WEIGHTS))]


def decode(values):
    return tuple(values[f"g{i}"] for i in range(len(WEIGHTS)))


def cost(item):
    return sum(w * v for w, v in zip(WEIGHTS, item))


def score(item):
    return sum(g * v for g, v in zip(GAINS, item))


def brute_force_best():
    return max(score(x) for x in itertools.product(CHOICES, repeat=len(WEIGHTS)) if cost(x) <= BUDGET)


def make(calls=None, **kw):
    def evaluate(items):
        if calls is not None:
            calls.extend(items)
        return [{"score": score(x), "cost": cost(x)} for x in items]

    args = dict(population=20, topk=8, mutation_prob=0.2, crossover_prob=0.5, seed=0)
    args.update(kw)
    return Evolution(GENES, decode, lambda x: "".join(map(str, x)), evaluate, constraints=[lambda x: cost(x) <= BUDGET], **args)


@pytest.mark.parametrize("aging", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_finds_the_knapsack_optimum_and_never_evaluates_infeasible(seed, aging):
    calls = []
    evo = make(calls, seed=seed, aging=aging)
    ranked = evo.run(generations=40)  # at most 800 of the 65536 candidates (7.7k feasible)
    assert ranked[0].scores["score"] == brute_force_best()
    assert len(calls) <= 800 and all(cost(x) <= BUDGET for x in calls)
    assert len({x for x in calls}) == len(calls)  # nothing evaluated twice
    assert evo.rejected > 0  # the constraint did reject some, before evaluation


def test_is_reproducible():
    a = [ind.key for ind in make(seed=5).run(5)]
    b = [ind.key for ind in make(seed=5).run(5)]
    c = [ind.key for ind in make(seed=6).run(5)]
    assert a == b != c


def test_multi_objective_mode_pushes_the_front():
    def evaluate(items):
        return [{"score": score(x), "cost": cost(x)} for x in items]

    evo = Evolution(GENES, decode, lambda x: "".join(map(str, x)), evaluate,
                    objectives=[Objective("score"), Objective("cost", maximize=False)], population=20, topk=10, seed=0)
    ranked = evo.run(generations=15)
    first = evo.history[:20]
    points = [[i.scores["score"], i.scores["cost"]] for i in ranked]
    front = [ranked[i] for i in pareto_front(points, [True, False])]
    # the top of the ranking is the Pareto front of everything evaluated
    assert {i.key for i in ranked[: len(front)]} == {i.key for i in front}
    # and it moved: each first-generation point is dominated by or on the final front
    assert max(i.scores["score"] for i in front) > max(i.scores["score"] for i in first)


def test_fixed_genes_stay_fixed():
    genes = [(n, (2,) if n in ("g0", "g5") else c) for n, c in GENES]
    evo = Evolution(genes, decode, lambda x: "".join(map(str, x)), lambda items: [{"score": score(x)} for x in items],
                    population=10, topk=4, seed=0)
    assert all(ind.item[0] == 2 and ind.item[5] == 2 for ind in evo.run(6))


def test_infeasible_space_is_a_clear_error():
    evo = make(max_tries=200)
    evo.constraints = (lambda x: cost(x) < 0,)
    with pytest.raises(SearchError, match="no feasible candidate in 200 random samples"):
        evo.run(3)


@pytest.mark.parametrize("kw, flag", [({"population": 0}, "--population"), ({"mutation_prob": 0.0}, "--mutation-prob"),
                                      ({"crossover_prob": 1.5}, "--crossover-prob"), ({"topk": 0}, "--topk")])
def test_bad_settings(kw, flag):
    with pytest.raises(SearchError, match=flag):
        make(**kw)


def test_seeds_open_the_first_generation_when_feasible():
    good = {f"g{i}": 1 for i in range(len(WEIGHTS))}  # cost 31: within the budget
    too_costly = {f"g{i}": 3 for i in range(len(WEIGHTS))}
    evo = make(seeds=[good, too_costly, good])
    first = evo.step()
    assert first[0].item == decode(good) and len(first) == 20
    assert decode(too_costly) not in [ind.item for ind in evo.history]  # infeasible: never evaluated
    with pytest.raises(SearchError, match="seeds: expected values for exactly the genes"):
        make(seeds=[{"g0": 1}])
