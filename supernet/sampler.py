"""Which path(s) each training step trains.

A sampler is a pure function of (seed, step) plus its own state, which it checkpoints, so every
DDP rank trains the same path at the same step without broadcasting anything, and a resumed run
continues the same sequence.
"""
from __future__ import annotations

import random
from typing import Any

from .space import Arch, Gene, SearchSpace, rank_weights, ranked_kinds


class UniformSampler:
    """SPOS: `random_paths` paths per step (gradients accumulated), every choice drawn uniformly
    and independently. Several a step buy each weight more updates per step at the same number
    of optimizer steps, without the sandwich's bias towards paths near the extremes."""

    def __init__(self, space: SearchSpace, seed: int, random_paths: int = 1, widths: str = "uniform", depths: str = "uniform"):
        ranked_kinds(widths, depths)  # checked here, not at the first step
        self.space, self.seed, self.random_paths, self.widths, self.depths = space, seed, random_paths, widths, depths

    def paths(self, step: int) -> list[Arch]:
        return [self.space.sample(random.Random(f"{self.seed}/{step}" + (f"/{i}" if i else "")), self.widths, self.depths)
                for i in range(self.random_paths)]

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class SandwichSampler(UniformSampler):
    """The largest, the smallest and `random_paths` random paths per step, gradients accumulated (BigNAS):
    the extremes of the ordered choices (resolution, widths, depths, repeats, convs) bound the
    space and are trained every step. Their types (blocks, neck, head) are drawn at random: types
    have no extreme, and fixing the extremes to the first and last listed trained those types
    every step and the others a third as often, which put the middle head type (RetinaNet)
    last in the supernet's ranking whatever its trained accuracy."""

    def paths(self, step: int) -> list[Arch]:
        rng = random.Random(f"{self.seed}/{step}/extremes")
        return [self.space.largest(rng), self.space.smallest(rng), *super().paths(step)]


class SmallestSampler(UniformSampler):
    """The smallest path and `random_paths` random paths per step: the sandwich's lower bound
    without its largest path. Leading channels are otherwise trained mostly next to trailing
    ones that a narrow path lacks, so narrow paths inherit weights that work only in company."""

    def paths(self, step: int) -> list[Arch]:
        return [self.space.smallest(random.Random(f"{self.seed}/{step}/extremes")), *super().paths(step)]


class NarrowTwinSampler(UniformSampler):
    """Each random path and its narrowest twin (the same path at its least widths,
    `SearchSpace.narrowest`) per step: every topology's leading channels also learn to work
    alone, at the depths, resolution and types they run with."""

    def paths(self, step: int) -> list[Arch]:
        out = []
        for arch in super().paths(step):
            twin = self.space.narrowest(arch)
            out += [arch] if twin == arch else [arch, twin]
        return out


class FixedSampler(UniformSampler):
    """Always the same path: retraining one architecture on its own (no path sampling)."""

    def __init__(self, arch: Arch):
        super().__init__(SearchSpace.containing(arch), 0)
        self.arch = arch

    def paths(self, step: int) -> list[Arch]:
        return [self.arch]


class FairSampler:
    """Every value of every choice is visited equally often: each gene draws its values from a
    shuffled round of all its choices and starts a new round only when the last one is used up
    (FairNAS's strict fairness, spread over steps). Inactive genes (blocks past the depth) do
    not consume their round. widths="wide" (depths="deep"): a width's (depth's) round holds each
    value as often as its rank, least first (the proportions of `SearchSpace.sample`'s draws,
    met exactly)."""

    def __init__(self, space: SearchSpace, seed: int, random_paths: int = 1, widths: str = "uniform", depths: str = "uniform"):
        ranked = ranked_kinds(widths, depths)
        self.space, self.random_paths = space, random_paths
        self.rng = random.Random(f"{seed}/fair")
        self.round_of = {g.name: self._round(g, ranked) for g in space.genes()}
        self.rounds: dict[str, list] = {name: [] for name in self.round_of}

    @staticmethod
    def _round(gene: Gene, ranked: frozenset[str]) -> list:
        weights = rank_weights(gene.choices) if gene.elastic in ranked else [1] * len(gene.choices)
        return [c for c, w in zip(gene.choices, weights) for _ in range(w)]

    def paths(self, step: int) -> list[Arch]:
        return [self._next() for _ in range(self.random_paths)]

    def _next(self) -> Arch:
        values: dict[str, Any] = {}
        for g in self.space.genes():
            if not self.space.is_active(g, values):
                values[g.name] = g.choices[0]
                continue
            pending = self.rounds[g.name]
            if not pending:
                pending.extend(self.rng.sample(self.round_of[g.name], len(self.round_of[g.name])))
            values[g.name] = pending.pop()
        return self.space.decode(values)

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.getstate(), "rounds": {k: list(v) for k, v in self.rounds.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.setstate(python_rng_state(state["rng"]))
        self.rounds = {k: list(v) for k, v in state["rounds"].items()}


def python_rng_state(saved) -> tuple:
    """A `random` state as `setstate` wants it, from its checkpointed form (lists for tuples)."""
    version, internal, gauss = saved
    return version, tuple(internal), gauss


SAMPLERS = {"uniform": UniformSampler, "sandwich": SandwichSampler, "smallest": SmallestSampler, "narrow_twin": NarrowTwinSampler,
            "fair": FairSampler}
