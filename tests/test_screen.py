import pytest

from search.screen import resolution_finalists


def record(hash_: str, resolution: int, score: float, latency: float = 10.0) -> dict:
    return {"hash": hash_, "arch": {"resolution": resolution}, "map": score, "latency_ms": latency}


def test_the_best_of_each_resolution_comes_before_the_next_best_overall():
    records = [record("a", 96, 0.30), record("b", 96, 0.29), record("c", 64, 0.10), record("d", 128, 0.20), record("e", 128, 0.19)]
    assert [r["hash"] for r in resolution_finalists(records, 3)] == ["a", "d", "c"]
    assert [r["hash"] for r in resolution_finalists(records, 2)] == ["a", "d"]  # the best resolutions' best
    assert [r["hash"] for r in resolution_finalists(records, 4)] == ["a", "b", "d", "c"]  # then the next best overall, in score order
    assert [r["hash"] for r in resolution_finalists(records, 1)] == ["a"]


def test_repeated_records_count_once_and_ties_go_to_the_faster():
    records = [record("a", 96, 0.3, 12.0), record("a", 96, 0.3, 12.0), record("b", 96, 0.3, 11.0)]
    assert [r["hash"] for r in resolution_finalists(records, 3)] == ["b", "a"]


def test_another_score_key_ranks():
    records = [{**record("a", 96, 0.3), "map_smoothed": 0.1}, {**record("b", 96, 0.2), "map_smoothed": 0.2}]
    assert [r["hash"] for r in resolution_finalists(records, 1, key="map_smoothed")] == ["b"]
    with pytest.raises(KeyError):
        resolution_finalists(records, 1, key="ap50")
