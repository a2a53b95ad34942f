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


def evaluate(individuals, calls=None):
    if calls is not None:
        calls.extend(i.item for i in individuals)
    return [{"score": score(i.item), "cost": cost(i.item)} for i in individuals]


def make(**kw):
    args = dict(population=20, topk=8, mutation_prob=0.2, crossover_prob=0.5, seed=0)
    args.update(kw)
    return Evolution(GENES, decode, lambda x: "".join(map(str, x)), constraints=[lambda x: cost(x) <= BUDGET], **args)


@pytest.mark.parametrize("aging", [0, 40])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_finds_the_knapsack_optimum_and_never_evaluates_infeasible(seed, aging):
    calls = []
    evo = make(seed=seed, aging=aging)
    ranked = evo.run(40, lambda generation: evaluate(generation, calls))  # at most 800 of the 65536 candidates (7.7k feasible)
    assert ranked[0].scores["score"] == brute_force_best()
    assert len(calls) <= 800 and all(cost(x) <= BUDGET for x in calls)
    assert len({x for x in calls}) == len(calls)  # nothing evaluated twice
    assert evo.rejected > 0  # the constraint did reject some, before evaluation


def test_is_reproducible():
    a = [ind.key for ind in make(seed=5).run(5, evaluate)]
    b = [ind.key for ind in make(seed=5).run(5, evaluate)]
    c = [ind.key for ind in make(seed=6).run(5, evaluate)]
    assert a == b != c


def test_multi_objective_mode_pushes_the_front():
    evo = Evolution(GENES, decode, lambda x: "".join(map(str, x)),
                    objectives=[Objective("score"), Objective("cost", maximize=False)], population=20, topk=10, seed=0)
    ranked = evo.run(15, evaluate)
    first = evo.history[:20]
    points = [[i.scores["score"], i.scores["cost"]] for i in ranked]
    front = [ranked[i] for i in pareto_front(points, [True, False])]
    # the top of the ranking is the Pareto front of everything evaluated
    assert {i.key for i in ranked[: len(front)]} == {i.key for i in front}
    # and it moved: each first-generation point is dominated by or on the final front
    assert max(i.scores["score"] for i in front) > max(i.scores["score"] for i in first)


def test_fixed_genes_stay_fixed():
    genes = [(n, (2,) if n in ("g0", "g5") else c) for n, c in GENES]
    evo = Evolution(genes, decode, lambda x: "".join(map(str, x)), population=10, topk=4, seed=0)
    assert all(ind.item[0] == 2 and ind.item[5] == 2 for ind in evo.run(6, evaluate))


def test_infeasible_space_is_a_clear_error():
    evo = make(max_tries=200)
    evo.constraints = (lambda x: cost(x) < 0,)
    with pytest.raises(SearchError, match="no feasible candidate in 200 random samples"):
        evo.run(3, evaluate)


@pytest.mark.parametrize("kw, flag", [({"population": 0}, "population"), ({"mutation_prob": 0.0}, "mutation_prob"),
                                      ({"crossover_prob": 1.5}, "crossover_prob"), ({"topk": 0}, "topk"), ({"aging": 3}, "aging")])
def test_bad_settings(kw, flag):
    with pytest.raises(SearchError, match=flag):
        make(**kw)


def test_seeds_open_the_first_generation_when_feasible():
    good = {f"g{i}": 1 for i in range(len(WEIGHTS))}  # cost 31: within the budget
    too_costly = {f"g{i}": 3 for i in range(len(WEIGHTS))}
    evo = make(seeds=[good, too_costly, good])
    first = evo.ask()
    evo.tell(first, evaluate(first))
    assert first[0].item == decode(good) and len(first) == 20
    assert decode(too_costly) not in [ind.item for ind in evo.history]  # infeasible: never evaluated
    with pytest.raises(SearchError, match="seeds: expected values for exactly the genes"):
        make(seeds=[{"g0": 1}])


def test_ask_and_tell_in_turn():
    """The caller scores a generation however it likes; the engine refuses a second ask before
    the tell, scores of other individuals and results without the objective."""
    evo = make(seed=3)
    first = evo.ask()
    assert first and all(i.generation == 0 and not i.scores for i in first) and not evo.history
    with pytest.raises(SearchError, match="tell first"):
        evo.ask()
    with pytest.raises(SearchError, match="individuals of the last ask"):
        evo.tell(first[1:], evaluate(first[1:]))
    with pytest.raises(SearchError, match="lacks the objective"):
        evo.tell(first, [{"cost": 1.0}] * len(first))
    evo.tell(first, evaluate(first))
    second = evo.ask()
    assert evo.history == first and all(i.generation == 1 for i in second)
    assert not {i.key for i in second} & {i.key for i in first}


def test_a_mutant_differs_from_its_parent_in_what_it_decodes_to():
    """Genes that do not matter for a parent (here: g1 whenever g0 is 0) are resampled again
    until the child is another candidate, so a mutation is never a wasted draw."""
    genes = [("g0", (0, 1)), ("g1", (0, 1, 2, 3)), ("g2", (0, 1))]
    key = lambda v: f"{v['g0']}{v['g1'] if v['g0'] else '-'}{v['g2']}"
    evo = Evolution(genes, dict, key, mutation_prob=0.3, seed=0)
    parent = {"g0": 0, "g1": 2, "g2": 1}
    assert all(key(evo._mutate(parent)) != key(parent) for _ in range(200))


def test_aging_chooses_parents_from_the_last_n_evaluated():
    evo = make(seed=1, population=10, topk=2, aging=15)
    evo.run(3, evaluate)
    window = evo.history[-15:]
    assert {p.key for p in evo.parents()} == {p.key for p in evo.ranked(window)[:2]}


def test_mutants_of_one_candidate_are_new_feasible_and_near_it():
    evo = make(seed=3, mutation_prob=0.1)
    parent = {f"g{i}": 1 for i in range(len(WEIGHTS))}
    exclude = {"".join(map(str, decode(evo._mutate(parent)))) for _ in range(5)}
    children = evo.mutants(parent, 6, exclude=exclude)
    keys = [c.key for c in children]
    assert len(keys) == 6 == len(set(keys)) and not set(keys) & exclude and "11111111" not in keys
    assert all(cost(c.item) <= BUDGET for c in children)
    changed = [sum(a != b for a, b in zip(c.item, decode(parent))) for c in children]
    assert min(changed) >= 1 and sum(changed) / len(changed) < 3  # a mutation: a gene or two of eight, not a fresh draw
    again = make(seed=3, mutation_prob=0.1)
    assert [c.key for c in again.mutants(parent, 6, exclude=exclude)] == keys  # seeded
    assert evo.mutants(parent, 3) and not {c.key for c in evo.mutants(parent, 3)} & set(keys)  # never one seen before
    tight = Evolution([("g0", (0, 1))], lambda v: v["g0"], str, seed=0)
    assert [c.item for c in tight.mutants({"g0": 0}, 5)] == [1]  # as many as there are
