"""How much does the search engine get out of few queries? A cheap synthetic problem with a known optimum.

    python benchmarks/search_engine.py                      # ~1 min on 2 cores, no torch
    python benchmarks/search_engine.py --seeds 20 --queries 48 96 192

The problem has the shape of the demo's search space (resolution, stem, four stages of a depth
gene and a block gene per position, active only below the depth, neck type / width / repeats,
the latter active for two of three types, head type / width / convs): each active gene value
adds a random weight to the true score and a random integer cost; a budget on the cost keeps
about half of the random candidates feasible, as the demo's latency budget does. Because the
score is additive within a group of genes (a stage, the neck, the head), the optimum under the
budget is exact (a knapsack over the groups' (cost, best score) pairs). Candidates are scored
with noise whose size makes the observed order agree with the true one at Kendall tau ~0.4 on
random candidates (`--tau`, what the supernet's inherited scores reach; 1: no noise). A method
returns its best candidate by the observed score; reported is the regret of its true score, as
a fraction of the gap between the optimum and the mean random feasible candidate, mean and 95 %
interval over seeds, for: `random` search, the library's `evolution` engine at the demo's
settings, and plain `regularized` evolution (Real et al. 2019: tournament of `--sample`, best
mutated in one active gene, oldest retired; written here as the reference).
"""
from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from search.evolution import Evolution  # noqa: E402
from search.surrogate import ridge_smooth  # noqa: E402
from supernet.io import emit_result  # noqa: E402

STAGES = [(3, 14), (3, 14), (3, 14), (2, 14)]  # (depth choices, block choices) per stage


class Problem:
    """Genes (name, choices), when each is active, the true score, its cost and the optimum."""

    def __init__(self, seed: int, tau: float):
        rng = random.Random(seed)
        genes = [("resolution", 3), ("stem", 2)]
        self.groups: list[list[str]] = [["resolution"], ["stem"]]
        self.when: dict[str, tuple[str, set]] = {}
        for s, (depths, blocks) in enumerate(STAGES):
            genes += [(f"s{s}.depth", depths), (f"s{s}.width", 2)]
            self.groups += [[f"s{s}.depth", *(f"s{s}.block{j}" for j in range(depths))], [f"s{s}.width"]]
            for j in range(depths):
                genes.append((f"s{s}.block{j}", blocks))
                self.when[f"s{s}.block{j}"] = (f"s{s}.depth", {d for d in range(depths) if d >= j})  # depth index d: d + 1 blocks
        genes += [("neck.type", 3), ("neck.width", 3), ("neck.repeats", 2), ("head.type", 2), ("head.width", 3), ("head.convs", 2)]
        self.when["neck.repeats"] = ("neck.type", {1, 2})
        self.groups += [["neck.type", "neck.repeats"], ["neck.width"], ["head.type"], ["head.width"], ["head.convs"]]
        self.genes = [(name, tuple(range(n))) for name, n in genes]
        self.weight = {name: [rng.gauss(0, 1) for _ in choices] for name, choices in self.genes}
        self.cost = {name: [rng.randint(0, 4) for _ in choices] for name, choices in self.genes}
        draws = [self.random_values(rng) for _ in range(4000)]
        costs = sorted(self.total_cost(v) for v in draws)
        self.budget = costs[len(costs) // 2]
        feasible = [self.true(v) for v in draws if self.total_cost(v) <= self.budget]
        self.random_mean = statistics.fmean(feasible)
        r = math.sin(math.pi * tau / 2)  # Greiner's relation: the Pearson r of a Gaussian pair at Kendall tau
        self.noise = 0.0 if tau >= 1 else statistics.pstdev(feasible) * math.sqrt(1 / r ** 2 - 1)
        self.optimum = self._optimum()

    def active(self, name: str, values: dict) -> bool:
        return name not in self.when or values[self.when[name][0]] in self.when[name][1]

    def key(self, values: dict) -> str:
        return ",".join(f"{v}" if self.active(n, values) else "-" for n, v in values.items())

    def random_values(self, rng: random.Random) -> dict:
        return {name: rng.choice(choices) for name, choices in self.genes}

    def true(self, values: dict) -> float:
        return sum(self.weight[n][v] for n, v in values.items() if self.active(n, values))

    def total_cost(self, values: dict) -> int:
        return sum(self.cost[n][v] for n, v in values.items() if self.active(n, values))

    def features(self, candidates: list[dict]) -> np.ndarray:
        """One-hot (gene, value) of the active genes: what `ridge_smooth` regresses on."""
        columns = {(n, v): i for i, (n, v) in enumerate((n, v) for n, choices in self.genes for v in choices)}
        x = np.zeros((len(candidates), len(columns)))
        for row, values in enumerate(candidates):
            x[row, [columns[(n, v)] for n, v in values.items() if self.active(n, values)]] = 1.0
        return x

    def _optimum(self) -> float:
        """Exact: each group's best score per cost (enumerated), then a knapsack over groups."""
        choices = dict(self.genes)
        best = {0: 0.0}
        for group in self.groups:
            table: dict[int, float] = {}
            for combo in _product([choices[n] for n in group]):
                values = dict(zip(group, combo))
                active = [n for n in group if n not in self.when or (self.when[n][0] in values and values[self.when[n][0]] in self.when[n][1])]
                c = sum(self.cost[n][values[n]] for n in active)
                s = sum(self.weight[n][values[n]] for n in active)
                table[c] = max(table.get(c, -math.inf), s)
            merged: dict[int, float] = {}
            for c1, s1 in best.items():
                for c2, s2 in table.items():
                    if c1 + c2 <= self.budget:
                        merged[c1 + c2] = max(merged.get(c1 + c2, -math.inf), s1 + s2)
            best = merged
        return max(best.values())


def _product(lists):
    out = [()]
    for choices in lists:
        out = [p + (c,) for p in out for c in choices]
    return out


def run_random(problem: Problem, queries: int, seed: int, observe: Callable, smooth: bool = False) -> dict:
    rng, seen, drawn = random.Random(seed), set(), []
    while len(seen) < queries:
        values = problem.random_values(rng)
        key = problem.key(values)
        if key in seen or problem.total_cost(values) > problem.budget:
            continue
        seen.add(key)
        drawn.append(values)
    scores = [observe(v) for v in drawn]
    if smooth:
        scores = ridge_smooth(problem.features(drawn), scores)
    return drawn[int(np.argmax(scores))]


def run_evolution(problem: Problem, queries: int, seed: int, observe: Callable, population: int, topk: int, smooth: bool = False) -> dict:
    """The library's engine; with `smooth`, every candidate's score is its ridge-smoothed value
    over everything evaluated so far (`search.surrogate`), refitted after each generation."""
    evo = Evolution(problem.genes, dict, problem.key, constraints=[lambda v: problem.total_cost(v) <= problem.budget],
                    population=population, topk=topk, seed=seed)
    for _ in range(max(1, queries // population)):
        generation = evo.ask()
        evo.tell(generation, [{"score": observe(i.item)} for i in generation])
        if smooth:
            smoothed = ridge_smooth(problem.features([i.item for i in evo.history]), [observe(i.item) for i in evo.history])
            for individual, value in zip(evo.history, smoothed):
                individual.scores["score"] = value
    return evo.ranked(evo.history)[0].item


def run_regularized(problem: Problem, queries: int, seed: int, observe: Callable, population: int, sample: int) -> dict:
    rng, seen, window, best = random.Random(seed), set(), [], None

    def propose(values):
        key = problem.key(values)
        if key in seen or problem.total_cost(values) > problem.budget:
            return None
        seen.add(key)
        return values

    def mutate(parent):
        for _ in range(1000):
            child = dict(parent)
            name, choices = rng.choice([g for g in problem.genes if problem.active(g[0], parent) and len(g[1]) > 1])
            child[name] = rng.choice([c for c in choices if c != parent[name]])
            if propose(child):
                return child
        return None

    count = 0
    while count < queries:
        if len(window) < population:
            values = propose(problem.random_values(rng))
        else:
            parent = max(rng.sample(window, min(sample, len(window))), key=lambda e: e[0])[1]
            values = mutate(parent)
        if values is None:
            continue
        score = observe(values)
        count += 1
        window.append((score, values))
        if len(window) > population:
            window.pop(0)
        if best is None or score > best[0]:
            best = (score, values)
    return best[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--queries", type=int, nargs="+", default=[48, 96, 192])
    p.add_argument("--tau", type=float, default=0.4, help="agreement of the observed with the true order (1: no noise)")
    p.add_argument("--population", type=int, default=12, help="the demo's generation size (evolution) and window (regularized)")
    p.add_argument("--sample", type=int, default=4, help="regularized evolution's tournament size")
    p.add_argument("--out", default="benchmarks/results/search_engine.json")
    args = p.parse_args()
    methods = {
        "random": lambda pr, q, s, obs: run_random(pr, q, s, obs),
        "random_smoothed": lambda pr, q, s, obs: run_random(pr, q, s, obs, smooth=True),
        "evolution": lambda pr, q, s, obs: run_evolution(pr, q, s, obs, args.population, max(2, args.population // 4)),
        "evolution_smoothed": lambda pr, q, s, obs: run_evolution(pr, q, s, obs, args.population, max(2, args.population // 4), smooth=True),
        "regularized": lambda pr, q, s, obs: run_regularized(pr, q, s, obs, args.population, args.sample),
    }
    regret: dict[str, dict[int, list[float]]] = {m: {q: [] for q in args.queries} for m in methods}
    for seed in range(args.seeds):
        problem = Problem(seed, args.tau)
        gap = problem.optimum - problem.random_mean
        for name, method in methods.items():
            for q in args.queries:
                noise = random.Random(f"{seed}/{q}/noise")  # the same noise stream for every method
                observed: dict[str, float] = {}

                def observe(values: dict) -> float:
                    key = problem.key(values)
                    if key not in observed:
                        observed[key] = problem.true(values) + noise.gauss(0, problem.noise)
                    return observed[key]

                best = method(problem, q, seed, observe)
                assert problem.total_cost(best) <= problem.budget
                regret[name][q].append((problem.optimum - problem.true(best)) / gap)
    summary = {name: {str(q): _mean_ci(v) for q, v in by_q.items()} for name, by_q in regret.items()}
    emit_result({"benchmark": "search_engine", "seeds": args.seeds, "tau": args.tau, "population": args.population,
                 "regret_fraction": summary}, Path(args.out))


def _mean_ci(values: list[float], resamples: int = 2000) -> dict:
    x = np.asarray(values)
    boot = np.random.default_rng(0).choice(x, (resamples, len(x))).mean(1)
    return {"mean": round(float(x.mean()), 4), "ci95": [round(float(q), 4) for q in np.percentile(boot, [2.5, 97.5])]}


if __name__ == "__main__":
    main()
