"""Evolutionary search over any space of categorical choices (SPOS's evolution, with NSGA-II and
regularized evolution as options).

The engine knows genes (name -> choices), a `decode` from gene values to a candidate, a `key`
that identifies candidates (two gene vectors can decode to the same candidate when some genes are
inactive) and cheap `constraints` checked before any evaluation. It is driven ask / tell, as
Optuna's, nevergrad's and pymoo's are: `ask()` gives the next generation, the caller scores it
however it likes (split across processes, from a cache) and `tell`s the scores back. Everything
random comes from one seeded generator and nothing depends on timing, so a run is reproducible,
and a resumed run that answers from its cache replays the same generations.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Optional, Sequence, TypeVar

from .pareto import crowding_distance, non_dominated_sort

T = TypeVar("T")


class SearchError(ValueError):
    """The search cannot run as asked (no feasible candidate, bad settings); the message says why."""


@dataclass
class Individual(Generic[T]):
    values: dict[str, Any]  # gene name -> value
    item: T  # the decoded candidate
    key: str
    generation: int
    scores: dict[str, float] = field(default_factory=dict)  # what `evaluate` returned


@dataclass(frozen=True)
class Objective:
    name: str  # a key of the scores `evaluate` returns
    maximize: bool = True


class Evolution(Generic[T]):
    """Per generation: keep the top-k (by the objective, or by NSGA-II rank then crowding
    distance with several objectives), make `population` children by uniform crossover (with
    probability `crossover_prob`) or mutation (each gene resampled with probability
    `mutation_prob`, until the child is another candidate), drop infeasible ones and duplicates
    of anything seen, and fill up with fresh feasible samples. Parents come from everything
    evaluated so far (SPOS), or with `aging` N from the last N evaluated only (regularized
    evolution's sliding window: old candidates retire however good, which keeps a noisy fitness
    from locking the search on a lucky one). `seeds` (gene values) open the first generation,
    where feasible: a later stage starts from what an earlier one found instead of from scratch."""

    def __init__(self, genes: Sequence[tuple[str, Sequence[Any]]], decode: Callable[[dict[str, Any]], T], key: Callable[[T], str],
                 objectives: Sequence[Objective] = (Objective("score"),), constraints: Sequence[Callable[[T], bool]] = (),
                 population: int = 50, topk: int = 10, mutation_prob: float = 0.1, crossover_prob: float = 0.5, aging: int = 0,
                 seed: int = 0, max_tries: int = 2000, seeds: Sequence[dict[str, Any]] = ()):
        for name, value, ok in (("population", population, population >= 1), ("topk", topk, 1 <= topk),
                                ("mutation_prob", mutation_prob, 0 < mutation_prob <= 1),
                                ("crossover_prob", crossover_prob, 0 <= crossover_prob <= 1),
                                ("aging", aging, not isinstance(aging, bool) and isinstance(aging, int) and (aging == 0 or aging >= topk))):
            if not ok:
                raise SearchError(f"{name}: {value!r} is out of range" + (f" (0, or at least topk {topk})" if name == "aging" else ""))
        if not objectives:
            raise SearchError("objectives: at least one is needed")
        self.genes = [(name, tuple(choices)) for name, choices in genes]
        self.decode, self.key = decode, key
        self.objectives, self.constraints = tuple(objectives), tuple(constraints)
        self.population, self.topk = population, topk
        self.mutation_prob, self.crossover_prob, self.aging = mutation_prob, crossover_prob, aging
        self.max_tries = max_tries
        names = {name for name, _ in self.genes}
        for values in seeds:
            if set(values) != names:
                raise SearchError(f"seeds: expected values for exactly the genes {sorted(names)}, got {sorted(values)}")
        self.seeds = [dict(values) for values in seeds]
        self.rng = random.Random(seed)
        self.history: list[Individual[T]] = []  # every individual told, in order
        self.seen: set[str] = set()
        self.rejected = 0  # infeasible candidates drawn (never evaluated)
        self._asked: list[Individual[T]] = []  # the generation awaiting its scores

    # ---- one candidate ------------------------------------------------------------------------
    def _make(self, values: dict[str, Any], generation: int) -> Optional[Individual[T]]:
        """The individual of `values` if it is feasible and new, else None."""
        item = self.decode(values)
        key = self.key(item)
        if key in self.seen:
            return None
        if not all(check(item) for check in self.constraints):
            self.rejected += 1
            return None
        self.seen.add(key)
        return Individual(values, item, key, generation)

    def _random_values(self) -> dict[str, Any]:
        return {name: self.rng.choice(choices) for name, choices in self.genes}

    def _mutate(self, parent: dict[str, Any]) -> dict[str, Any]:
        """Each gene resampled with `mutation_prob`, until the child decodes to another candidate:
        a change of an inactive gene alone (a block past its stage's depth) changes nothing."""
        before = self.key(self.decode(parent))
        for _ in range(100):
            child = dict(parent)
            for name, choices in self.genes:
                if len(choices) > 1 and self.rng.random() < self.mutation_prob:
                    child[name] = self.rng.choice([c for c in choices if c != parent[name]])
            if self.key(self.decode(child)) != before:
                return child
        return child

    def mutants(self, values: dict[str, Any], count: int, exclude: Sequence[str] = ()) -> list[Individual[T]]:
        """Up to `count` new feasible children of `values` by mutation alone, none keyed in
        `exclude` or seen before: a local search around one candidate that some other measure
        (a short training) found best, outside the generations."""
        self.seen.update(exclude)
        self.seen.add(self.key(self.decode(values)))
        children: list[Individual[T]] = []
        for _ in range(self.max_tries):
            if len(children) >= count:
                break
            child = self._make(self._mutate(values), generation=0)
            if child:
                children.append(child)
        return children

    def _crossover(self, a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        return {name: (a if self.rng.random() < 0.5 else b)[name] for name, _ in self.genes}

    # ---- selection ----------------------------------------------------------------------------
    def ranked(self, individuals: Sequence[Individual[T]]) -> list[Individual[T]]:
        """Best first: by the objective, or by Pareto rank then crowding distance."""
        if len(self.objectives) == 1:
            o = self.objectives[0]
            return sorted(individuals, key=lambda ind: ind.scores[o.name], reverse=o.maximize)
        points = [[ind.scores[o.name] for o in self.objectives] for ind in individuals]
        maximize = [o.maximize for o in self.objectives]
        order: list[Individual[T]] = []
        for front in non_dominated_sort(points, maximize):
            distance = crowding_distance(points, front)
            order += [individuals[i] for i in sorted(front, key=lambda i: -distance[i])]
        return order

    def parents(self) -> list[Individual[T]]:
        pool = self.history[-self.aging:] if self.aging else self.history
        return self.ranked(pool)[: self.topk]

    # ---- generations --------------------------------------------------------------------------
    def _next_generation(self, generation: int) -> list[Individual[T]]:
        children: list[Individual[T]] = []
        parents = [p.values for p in self.parents()] if self.history else []
        if not self.history:
            children += filter(None, (self._make(values, generation) for values in self.seeds[: self.population]))
        tries = 0
        while parents and len(children) < self.population and tries < self.max_tries:
            tries += 1
            if len(parents) > 1 and self.rng.random() < self.crossover_prob:
                a, b = self.rng.sample(parents, 2)
                values = self._crossover(a, b)
            else:
                values = self._mutate(self.rng.choice(parents))
            child = self._make(values, generation)
            if child:
                children.append(child)
        tries = 0
        while len(children) < self.population and tries < self.max_tries:
            tries += 1
            child = self._make(self._random_values(), generation)
            if child:
                children.append(child)
        if not children and not self.history:
            raise SearchError(f"no feasible candidate in {self.max_tries} random samples: the constraints exclude "
                              f"(almost) the whole space")
        return children

    def ask(self) -> list[Individual[T]]:
        """The next generation, to be scored and `tell`-ed back; empty when nothing new and
        feasible is left to try."""
        if self._asked:
            raise SearchError("ask: the last generation's scores were not told yet (call tell first)")
        generation = self.history[-1].generation + 1 if self.history else 0
        self._asked = self._next_generation(generation)
        return list(self._asked)

    def tell(self, individuals: Sequence[Individual[T]], scores: Sequence[dict[str, float]]) -> None:
        """Record the scores of the generation `ask` gave, in its order."""
        if [i.key for i in individuals] != [i.key for i in self._asked]:
            raise SearchError("tell: expected the individuals of the last ask, in its order")
        if len(scores) != len(individuals):
            raise SearchError(f"tell: {len(scores)} results for {len(individuals)} candidates")
        for s in scores:
            missing = [o.name for o in self.objectives if o.name not in s]
            if missing:
                raise SearchError(f"tell: a result lacks the objective(s) {missing}")
        for individual, s in zip(self._asked, scores):
            individual.scores = dict(s)
        self.history += self._asked
        self._asked = []

    def run(self, generations: int, evaluate: Callable[[list[Individual[T]]], list[dict[str, float]]],
            on_generation: Optional[Callable[[list[Individual[T]]], None]] = None) -> list[Individual[T]]:
        """Ask, `evaluate` and tell `generations` times (the first generation is random, or the
        seeds); returns the ranked history."""
        if generations < 1:
            raise SearchError(f"generations: expected a positive integer, got {generations!r}")
        for _ in range(generations):
            children = self.ask()
            if not children:
                break  # nothing new and feasible left to try
            self.tell(children, evaluate(children))
            if on_generation:
                on_generation(children)
        return self.ranked(self.history)
