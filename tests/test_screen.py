from dataclasses import replace

import pytest

from search.records import SubnetRecord
from search.screen import resolution_finalists
from supernet.space import SearchSpace


def record(hash_: str, resolution: int, score: float, latency: float = 10.0, smoothed: float | None = None) -> SubnetRecord:
    arch = replace(SearchSpace.preset("tiny").smallest(), resolution=resolution)
    return SubnetRecord(hash_, arch, {"map": score}, latency, 0, 0, "structural", 0, map_smoothed=smoothed)


def test_the_best_of_each_resolution_comes_before_the_next_best_overall():
    records = [record("a", 96, 0.30), record("b", 96, 0.29), record("c", 64, 0.10), record("d", 128, 0.20), record("e", 128, 0.19)]
    assert [r.hash for r in resolution_finalists(records, 3)] == ["a", "d", "c"]
    assert [r.hash for r in resolution_finalists(records, 2)] == ["a", "d"]  # the best resolutions' best
    assert [r.hash for r in resolution_finalists(records, 4)] == ["a", "b", "d", "c"]  # then the next best overall, in score order
    assert [r.hash for r in resolution_finalists(records, 1)] == ["a"]


def test_repeated_records_count_once_and_ties_go_to_the_faster():
    records = [record("a", 96, 0.3, 12.0), record("a", 96, 0.3, 12.0), record("b", 96, 0.3, 11.0)]
    assert [r.hash for r in resolution_finalists(records, 3)] == ["b", "a"]


def test_another_score_key_ranks():
    records = [record("a", 96, 0.3, smoothed=0.1), record("b", 96, 0.2, smoothed=0.2)]
    assert [r.hash for r in resolution_finalists(records, 1, key="map_smoothed")] == ["b"]
    with pytest.raises(KeyError):
        resolution_finalists(records, 1, key="ap50")
    priced = [replace(records[0], map_flops=0.2), replace(records[1], map_flops=0.3)]
    assert [r.hash for r in resolution_finalists(priced, 1, key="map_flops")] == ["b"]


def test_a_record_round_trips_through_its_flat_json_layout():
    full = SubnetRecord("h", replace(SearchSpace.preset("tiny").smallest(), resolution=96), {"map": 0.3, "ap50": 0.5}, 4.5, 10, 2,
                        "modular", 3, {"seconds": 1.5, "cocoeval_s": 0.5}, cached=True)
    data = full.to_dict()
    assert list(data) == ["hash", "arch", "map", "ap50", "latency_ms", "flops", "params", "stage", "generation", "seconds", "cocoeval_s", "cached"]
    assert SubnetRecord.from_dict(data) == full and full.map == 0.3 and full.score("ap50") == 0.5
    brief = replace(full, map_smoothed=0.25).to_dict(timings=False)  # what pareto.json and finalists.json list
    assert list(brief) == ["hash", "arch", "map", "ap50", "map_smoothed", "latency_ms", "flops", "params", "stage", "generation"]
    assert SubnetRecord.from_dict(brief).score("map_smoothed") == 0.25
    prior = replace(full, map_flops=0.0).to_dict(timings=False)  # a zero score is a score, not a missing one
    assert "map_flops" in prior and SubnetRecord.from_dict(prior).score("map_flops") == 0.0
