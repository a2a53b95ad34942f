import importlib.util
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location("ranking", Path(__file__).parents[1] / "benchmarks" / "ranking.py")
ranking = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ranking)


def test_rank_agreement_with_its_bootstrap_interval():
    x = [0.1 * i for i in range(12)]
    assert ranking.rank_agreement(x, [2 * v for v in x]) == {"kendall_tau": 1.0, "kendall_tau_ci95": [1.0, 1.0], "spearman": 1.0}
    assert ranking.rank_agreement(x, x[::-1])["kendall_tau_ci95"] == [-1.0, -1.0]
    noisy = [v + (0.35 if i % 3 == 0 else -0.2) for i, v in enumerate(x)]  # an order that mostly, not always, agrees
    r = ranking.rank_agreement(x, noisy)
    lo, hi = r["kendall_tau_ci95"]
    assert lo < r["kendall_tau"] < hi <= 1.0 and 0.3 < r["kendall_tau"] < 0.95
    assert r == ranking.rank_agreement(x, noisy)  # seeded
    with pytest.raises(ValueError, match="equally long lists"):
        ranking.rank_agreement(x, x[:5])
