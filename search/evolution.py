"""Evolutionary search over any space of categorical choices (SPOS's evolution, with NSGA-II and
regularized evolution as options).

The engine knows genes (name -> choices), a `decode` from gene values to a candidate, a `key`
that identifies candidates (two gene vectors can decode to the same candidate when some genes are
inactive), cheap `constraints` checked before any evaluation, and an `evaluate` that scores a
whole generation at once (so a caller can split it across processes). Everything random comes from
one seeded generator and nothing depends on timing, so a run is reproducible, and a resumed run
that answers `evaluate` from its cache replays the same generations.
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
    `mutation_prob`), drop infeasible ones and duplicates of anything seen, and fill up with
    fresh feasible samples. Parents come from everything evaluated so far (SPOS), or with
    `aging` from the last `population` evaluated only (regularized evolution: old candidates
    retire however good, which keeps a noisy fitness from locking the search on a lucky one).
    `seeds` (gene values) open the first generation, where feasible: a later stage starts from
    what an earlier one found instead of from scratch."""

    def __init__(self, genes: Sequence[tuple[str, Sequence[Any]]], decode: Callable[[dict[str, Any]], T], key: Callable[[T], str],
                 evaluate: Callable[[list[T]], list[dict[str, float]]], objectives: Sequence[Objective] = (Objective("score"),),
                 constraints: Sequence[Callable[[T], bool]] = (), population: int = 50, topk: int = 10,
                 mutation_prob: float = 0.1, crossover_prob: float = 0.5, aging: bool = False, seed: int = 0,
                 max_tries: int = 2000, seeds: Sequence[dict[str, Any]] = ()):
        for name, value, ok in (("--population", population, population >= 1), ("--topk", topk, 1 <= topk),
                                ("--mutation-prob", mutation_prob, 0 < mutation_prob <= 1),
                                ("--crossover-prob", crossover_prob, 0 <= crossover_prob <= 1)):
            if not ok:
                raise SearchError(f"{name}: {value!r} is out of range")
        if not objectives:
            raise SearchError("objectives: at least one is needed")
        self.genes = [(name, tuple(choices)) for name, choices in genes]
        self.decode, self.key, self.evaluate = decode, key, evaluate
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
        self.history: list[Individual[T]] = []
        self.seen: set[str] = set()
        self.rejected = 0  # infeasible candidates drawn (never evaluated)

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
        child = dict(parent)
        for name, choices in self.genes:
            if len(choices) > 1 and self.rng.random() < self.mutation_prob:
                child[name] = self.rng.choice([c for c in choices if c != parent[name]])
        return child

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
        pool = self.history[-self.population:] if self.aging else self.history
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

    def step(self) -> list[Individual[T]]:
        """Make and evaluate one generation; returns it (empty when the space is exhausted)."""
        generation = self.history[-1].generation + 1 if self.history else 0
        children = self._next_generation(generation)
        if children:
            scores = self.evaluate([c.item for c in children])
            if len(scores) != len(children):
                raise SearchError(f"evaluate: returned {len(scores)} results for {len(children)} candidates")
            for child, s in zip(children, scores):
                child.scores = dict(s)
            self.history += children
        return children

    def run(self, generations: int, on_generation: Optional[Callable[[list[Individual[T]]], None]] = None) -> list[Individual[T]]:
        """Run `generations` generations (the first is random); returns the ranked history."""
        if generations < 1:
            raise SearchError(f"--generations: expected a positive integer, got {generations!r}")
        for _ in range(generations):
            children = self.step()
            if not children:
                break  # nothing new and feasible left to try
            if on_generation:
                on_generation(children)
        return self.ranked(self.history)
