"""What a search keeps of each subnet it evaluates: a line of history.jsonl, an entry of
pareto.json and finalists.json. The files keep their flat JSON layout; in code a record is this
dataclass, so a misspelt field fails where it is written, not where it is read."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from supernet.evaluate import METRICS
from supernet.space import Arch

TIMINGS = ("seconds", "recalibration_s", "inference_s", "cocoeval_s")  # what one evaluation took


def map_flops(map_: float, flops: int, alpha: float) -> float:
    """The score `--flops-prior ALPHA` ranks by: inherited mAP x GFLOPs^ALPHA."""
    return round(map_ * (flops / 1e9) ** alpha, 6)


@dataclass(frozen=True)
class SubnetRecord:
    """One evaluated subnet: its scores with inherited weights, its predicted costs, where the
    search met it, and what evaluating it took."""
    hash: str
    arch: Arch
    metrics: dict[str, float]  # METRICS (COCO mAP first), with inherited weights
    latency_ms: float  # predicted by the latency table
    flops: int
    params: int
    stage: str
    generation: int
    timings: dict[str, float] = field(default_factory=dict)  # TIMINGS; seconds 0 when taken from an earlier evaluation
    cached: bool = False  # taken from an earlier evaluation (a resumed run, or a generation meeting it again)
    map_smoothed: Optional[float] = None  # with `smooth`: mAP smoothed over the stage's subnets
    map_flops: Optional[float] = None  # with `flops_prior`: mAP x GFLOPs ** flops_prior

    @property
    def map(self) -> float:
        return self.metrics["map"]

    def score(self, key: str) -> float:
        """The value a search ranks by: "map_smoothed", "map_flops" or one of METRICS."""
        derived = {"map_smoothed": self.map_smoothed, "map_flops": self.map_flops}
        return derived[key] if key in derived else self.metrics[key]

    def to_dict(self, timings: bool = True) -> dict[str, Any]:
        """The JSON form; without `timings`, what pareto.json and finalists.json list."""
        out = {"hash": self.hash, "arch": self.arch.to_dict(), **self.metrics}
        if self.map_smoothed is not None:
            out["map_smoothed"] = self.map_smoothed
        if self.map_flops is not None:
            out["map_flops"] = self.map_flops
        out.update(latency_ms=self.latency_ms, flops=self.flops, params=self.params, stage=self.stage, generation=self.generation)
        if timings:
            out.update(self.timings)
            if self.cached:
                out["cached"] = True
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SubnetRecord":
        return cls(data["hash"], Arch.from_dict(data["arch"]), {k: data[k] for k in METRICS if k in data}, data["latency_ms"],
                   data["flops"], data["params"], data["stage"], data["generation"], {k: data[k] for k in TIMINGS if k in data},
                   data.get("cached", False), data.get("map_smoothed"), data.get("map_flops"))
