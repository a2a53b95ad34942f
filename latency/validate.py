"""Is the table worth anything? Predicted vs measured end-to-end latency of random subnets."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
from scipy import stats
from tqdm import tqdm

from supernet.io import atomic_save_figure, figure
from supernet.space import Arch

from .measure import EXTRA_PASSES, Settings, Timer, measure_many, noise_check, pass_summary
from .ops import detector_runner, iter_archs, reference_runner
from .table import LatencyTable

VALIDATION_SEED_OFFSET = 1000  # validation archs differ from the calibration archs (seeded by the build seed)


def error_stats(predicted: list[float], measured: list[float]) -> dict:
    """MAPE and max APE (percent), Kendall tau and Spearman rho of predictions against measurements."""
    p, m = np.asarray(predicted, float), np.asarray(measured, float)
    ape = np.abs(p - m) / m * 100
    return {
        "n": len(m),
        "mape": round(float(ape.mean()), 2),
        "max_ape": round(float(ape.max()), 2),
        "kendall_tau": round(float(stats.kendalltau(p, m).statistic), 4),
        "spearman": round(float(stats.spearmanr(p, m).statistic), 4),
    }


def validate_table(table: LatencyTable, samples: int = 50, passes: int = 2, seed: Optional[int] = None,
                   settings: Optional[Settings] = None, timer: Optional[Timer] = None, plot: Optional[str | Path] = None,
                   progress: bool = True, extra_passes: int = EXTRA_PASSES) -> dict:
    """Measure `samples` random extracted subnets end to end with the table's settings (or
    `settings`, e.g. with other repeats) and compare with the table's predictions. Returns the
    `error_stats` plus the device, the error without the correction, the machine's noise, its
    speed before and after measuring relative to the build's (`reference_time_vs_build`: the
    build's reference detector timed again; 1.2 means 20 % slower, which makes every subnet look
    20 % under-predicted whatever the table), and the points; writes a scatter plot to `plot`."""
    settings = settings or table.settings
    seed = (table.meta.seed or 0) + VALIDATION_SEED_OFFSET if seed is None else seed
    archs = list(iter_archs(table.space, samples, seed))
    predicted = [table.predict(a) for a in archs]  # before measuring: a missing op fails fast
    raw = [table.raw(a) for a in archs]
    # the build's reference detector; a table without its arch (built before it was stored, when
    # the seed's draw may have been another arch) is timed on the seed's arch and not compared
    build_noise = table.meta.noise
    stored = build_noise.get("arch")
    arch = table.space.validate(Arch.from_dict(stored, f"{table.path}: meta.noise.arch")) if stored else table.space.sample(table.meta.seed or 0)
    reference = reference_runner(arch, table.context, settings, table.meta.seed or 0)
    noise = noise_check(reference, settings, timer=timer)
    factories = {a.hash(): (lambda a=a: detector_runner(a, table.context, settings)) for a in archs}
    done: dict = {}
    with tqdm(total=passes * len(archs), desc="validate", disable=not progress, dynamic_ncols=True) as bar:
        measured = measure_many(factories, settings, passes, seed, timer, done, on_done=lambda *_: bar.update(1),
                                extra_passes=extra_passes, on_extra_pass=lambda n: setattr(bar, "total", bar.total + n))
    measured = [measured[a.hash()] for a in archs]
    after = noise_check(reference, settings, timer=timer)
    built = build_noise.get("times_ms", build_noise.get("medians_ms")) if stored else None  # its name before the rename
    result = {
        **error_stats(predicted, measured),
        "device": table.meta.device_name,
        "settings": settings.to_dict(),
        "mape_uncorrected": error_stats(raw, measured)["mape"],
        "correction_kept": bool(table.correction and table.correction.kept),
        "noise_spread": round(noise.spread, 4),
        "pass_summary": pass_summary(done, passes),
        "reference_time_vs_build": built and {"before": round(min(noise.times_ms) / min(built), 4),
                                              "after": round(min(after.times_ms) / min(built), 4)},
        "points": [{"hash": a.hash(), "predicted_ms": round(p, 4), "measured_ms": round(m, 4), "arch": a.to_dict()}
                   for a, p, m in zip(archs, predicted, measured)],
    }
    if plot:
        scatter_plot(predicted, measured, result, plot)
    return result


def scatter_plot(predicted: list[float], measured: list[float], result: dict, path: str | Path) -> None:
    """Predicted vs measured, with the y = x line, written atomically as a PNG."""
    fig = figure(figsize=(5, 5), dpi=120)
    ax = fig.subplots()
    ax.scatter(measured, predicted, s=14, alpha=0.8)
    lo, hi = min(*predicted, *measured) * 0.9, max(*predicted, *measured) * 1.1
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="y = x")
    ax.set(xlim=(lo, hi), ylim=(lo, hi), xlabel="measured end-to-end (ms)", ylabel="predicted by the table (ms)",
           title=f"{result['device']}\nMAPE {result['mape']:.1f} %, Kendall tau {result['kendall_tau']:.2f}, n = {result['n']}")
    ax.title.set_fontsize(9)
    ax.legend(loc="upper left")
    fig.tight_layout()
    atomic_save_figure(fig, path)
