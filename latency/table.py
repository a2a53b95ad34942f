"""The latency lookup table: one measured time per op of a space, built once on the target device.

`predict(arch)` sums the times of the arch's ops (see `ops.py`) and applies the calibrated
`Correction`; it is pure lookup, tens of thousands of archs per second, which is what lets the
search consider thousands of candidates without timing any of them.
"""
from __future__ import annotations

import contextlib
import datetime
import hashlib
import itertools
import json
import logging
import platform
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from tqdm import tqdm

from supernet.backbone import block_input_side, block_stride
from supernet.io import atomic_json, atomic_write_bytes
from supernet.space import Arch, BackboneArch, HeadArch, NUM_NECK_LEVELS, NeckArch, SearchSpace, StageArch

from .backends import check_backend, runtime
from .measure import EXTRA_PASSES, Settings, Timer, measure_many, noise_check, pass_summary
from .ops import Op, OpContext, Runner, arch_ops, detector_runner, iter_archs, make_op, neck_head_ops, op_runner, reference_runner, space_ops

FORMAT = 3  # 2: post-processing batched and padded (a two-stage head pools all its post_nms_top_n proposals); 3: post op and timed
# detectors on the same (zero) features: ops and reference models timed before cost otherwise
CHECKPOINT_SECONDS = 10.0  # an interrupted build loses at most this much measuring
RICHER_MARGIN = 0.10  # the per-op model is kept only when it cuts the leave-one-out error by more than this
SUBNET = "subnet:"  # key prefix of a calibration subnet's end-to-end time among the op times of a build

logger = logging.getLogger(__name__)


class TableError(ValueError):
    """A table cannot be used as asked; the message names the file and what to do."""


def device_name(device: str) -> str:
    """A GPU's marketing name, or the CPU model: what makes timings of one machine differ from another's."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(settings: Settings) -> dict:
    """Where and with what software a table is built; stored in its metadata."""
    env = {
        "device_name": device_name(settings.device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "runtime": runtime(settings.backend, settings.device),
    }
    if settings.device.startswith("cuda"):
        dev = torch.device(settings.device)
        env.update(capability=".".join(map(str, torch.cuda.get_device_capability(dev))), cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version(), cudnn_benchmark=torch.backends.cudnn.benchmark)
    return env


@dataclass(frozen=True)
class Correction:
    """predicted = slope x (sum of op times) + per_op x (number of ops) + intercept.

    The intercept is the per-forward cost no op carries: the detector's Python-level plumbing
    (input checks, letterbox bookkeeping, dicts and lists between parts). The slope is the
    systematic ratio between ops timed alone and in sequence (warm caches across ops, overlapping
    launches). The per-op term is what each op's isolated timing adds or hides by being timed
    alone: on a GPU at batch 1 every op timed alone pays the gap between the start event and
    its first kernel launch, which a whole forward pays once (a negative term is expected
    there); with it the table can follow launch-bound subnets whose op counts differ (deep vs
    wide) at the same summed time.

    Both models (without and with the per-op term) are fitted on end-to-end timings of random
    subnets and judged by their leave-one-out error on archs they were not fitted on (`fit`
    says how one is chosen); a correction is kept only if that error is below the plain sum's:
    on noisy timings a fit can only fit the noise."""

    slope: float
    intercept: float
    loo_mape_raw: float  # percent: the plain sum on the calibration archs
    loo_mape: float  # percent: leave-one-out error of the correction on the same archs
    kept: bool
    per_op: float = 0.0  # ms per op (0 for the model without the term)

    def __call__(self, raw_ms: float, num_ops: int = 0) -> float:
        return self.slope * raw_ms + self.per_op * num_ops + self.intercept if self.kept else raw_ms

    def summary(self) -> dict:
        """The fitted terms and errors, rounded, for a JSON line."""
        return {"kept": self.kept, "slope": round(self.slope, 4), "intercept_ms": round(self.intercept, 4), "per_op_ms": round(self.per_op, 5),
                "loo_mape_raw": round(self.loo_mape_raw, 2), "loo_mape": round(self.loo_mape, 2)}

    def op_ms(self, ms: float) -> float:
        """One op's share of a prediction (the intercept aside): what makes an arch faster or slower."""
        return self.slope * ms + self.per_op if self.kept else ms

    @classmethod
    def fit(cls, raw_ms: list[float], measured_ms: list[float], num_ops: Optional[list[int]] = None) -> "Correction":
        """The affine model of `models`, or the per-op one where its leave-one-out error is lower
        by more than `RICHER_MARGIN` (relative): on 20 noisy calibration timings a third term
        wins small leave-one-out differences by chance, and then does worse on other archs
        (seen on CPU: 7.2 % against 8.6 % leave-one-out, 11.1 % against 9.2 % on validation).
        The identity (not kept) where neither beats the plain sum, or below 3 archs."""
        fitted = cls.models(raw_ms, measured_ms, num_ops)
        if not fitted:
            return cls(1.0, 0.0, float("nan"), float("nan"), False)
        best = fitted["affine"]
        richer = fitted.get("per_op")
        if richer is not None and richer.kept and (not best.kept or richer.loo_mape < best.loo_mape * (1 - RICHER_MARGIN)):
            best = richer
        return best

    @classmethod
    def models(cls, raw_ms: list[float], measured_ms: list[float], num_ops: Optional[list[int]] = None) -> dict[str, "Correction"]:
        """Each model ("affine", and "per_op" given op counts with some spread) fitted by least
        squares on relative errors (the error the table is judged by), with its leave-one-out error;
        `kept` where that error is below the plain sum's."""
        x, y = np.asarray(raw_ms, float), np.asarray(measured_ms, float)
        if len(x) < 3:
            return {}
        models = {"affine": np.stack([x, np.ones_like(x)], 1)}  # columns: sum, intercept[, number of ops]
        n = None if num_ops is None else np.asarray(num_ops, float)
        if n is not None and len(x) >= 5 and len(np.unique(n)) >= 3:  # the term needs spread to be told apart
            models["per_op"] = np.stack([x, np.ones_like(x), n], 1)
        raw_err, out = _mape(x, y), {}
        for name, features in models.items():
            coef = _fit(features, y)
            loo = np.array([features[i] @ _fit(np.delete(features, i, 0), np.delete(y, i)) for i in range(len(x))])
            loo_err = _mape(loo, y)
            # a non-increasing correction would invert the ranking of archs: never keep one
            out[name] = cls(float(coef[0]), float(coef[1]), raw_err, loo_err, bool(loo_err < raw_err and coef[0] > 0),
                            float(coef[2]) if len(coef) > 2 else 0.0)
        return out


def _fit(features: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Coefficients minimising the squared relative error sum(((features @ c) / y - 1) ** 2)."""
    return np.linalg.lstsq(features / y[:, None], np.ones_like(y), rcond=None)[0]


def _mape(pred: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.abs(pred - y) / y) * 100)


@dataclass
class TableMeta:
    """What a table describes (the space, the detectors' op context, the timing settings), where
    it was measured, and how the measuring went. Stored as the table file's "meta"; fields added
    since a table was written read as None."""
    space: SearchSpace
    context: OpContext
    settings: Settings
    environment: dict[str, Any]  # device_name, torch, threads, platform, runtime (and CUDA's versions): see `environment`
    date: Optional[str] = None  # UTC, ISO 8601
    passes: Optional[int] = None
    extra_passes: Optional[int] = None
    seed: Optional[int] = None  # of the calibration subnets and the noise check's reference arch
    noise: dict[str, Any] = field(default_factory=dict)  # the noise check at build: spread, reference arch and its time
    build_seconds: Optional[float] = None
    pass_summary: Optional[dict[str, Any]] = None  # how far the passes agreed, for the ops and for the calibration subnets
    calibration: list[dict[str, Any]] = field(default_factory=list)  # {"arch", "measured_ms"} of each calibration subnet

    @property
    def device_name(self) -> str:
        return self.environment["device_name"]

    def to_dict(self) -> dict[str, Any]:
        return {"space": self.space.to_dict(), "context": self.context.to_dict(), "settings": self.settings.to_dict(),
                **{k: getattr(self, k) for k in ("environment", "date", "passes", "extra_passes", "seed", "noise", "build_seconds",
                                                 "pass_summary", "calibration")}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TableMeta":
        return cls(SearchSpace.from_dict(data["space"]), OpContext.from_dict(data["context"]),
                   Settings(**{"statistic": "median", **data["settings"]}),  # (tables from before the field)
                   data["environment"], data.get("date"), data.get("passes"), data.get("extra_passes"), data.get("seed"),
                   data.get("noise") or {}, data.get("build_seconds"), data.get("pass_summary"), data.get("calibration") or [])


class LatencyTable:
    """Op key -> milliseconds for one space, device, dtype, batch size and memory format."""

    def __init__(self, entries: dict[str, float], meta: TableMeta, correction: Optional[Correction] = None, path: Optional[Path] = None):
        self.entries = entries
        self.meta = meta
        self.correction = correction
        self.path = path

    @property
    def settings(self) -> Settings:
        return self.meta.settings

    @property
    def context(self) -> OpContext:
        return self.meta.context

    @property
    def space(self) -> SearchSpace:
        return self.meta.space

    def raw(self, arch: Arch) -> float:
        """Sum of the arch's op times, before the correction."""
        return self._sum(arch_ops(arch))

    def predict(self, arch: Arch) -> float:
        """Predicted end-to-end milliseconds of `arch`'s standalone detector."""
        ops = arch_ops(arch)
        raw = self._sum(ops)
        return self.correction(raw, len(ops)) if self.correction else raw

    def breakdown(self, arch: Arch) -> dict[str, float]:
        """Milliseconds per op kind (io, stem, block, neck, head, post), before the correction."""
        out: dict[str, float] = {}
        for op in arch_ops(arch):
            out[op.kind] = out.get(op.kind, 0.0) + self.entries[op.key]
        return out

    def extreme(self, fastest: bool = True) -> tuple[Arch, float]:
        """The fastest (or slowest) arch of the table's space and its predicted ms, found exactly:
        for each resolution and width assignment, each stage takes its best depth and block types
        independently (blocks only interact through widths), and the neck and head their best
        options for the widths they receive. Each op counts with its share of the correction
        (`Correction.op_ms`), so a per-op term weighs a deeper stage as the prediction does."""
        pick = min if fastest else max
        sp = self.space
        best: Optional[tuple[float, Arch]] = None

        def block_ms(kind: str, cin: int, cout: int, stage: int, position: int) -> float:
            return self._op_ms(make_op("block", type=kind, cin=cin, cout=cout, stride=block_stride(position),
                                       size=block_input_side(r, stage, position)).key)

        for r in sp.resolutions:
            necks = [v for t in sp.neck.types for v in sp.variants("neck", t)]
            heads = [v for t in sp.head.types for v in sp.variants("head", t)]
            tails: dict[tuple[int, ...], tuple[tuple[NeckArch, HeadArch], float]] = {}
            for sw, *widths in itertools.product(sp.backbone.stem_widths, *(st.widths for st in sp.backbone.stages)):
                cost = self._corrected_sum([make_op("io", res=r), make_op("stem", res=r, width=sw)])
                stages, cin = [], sw
                for s, (st, w) in enumerate(zip(sp.backbone.stages, widths)):
                    first = pick(st.blocks, key=lambda t: block_ms(t, cin, w, s, 0))
                    rest, c_rest = first, 0.0  # a stage of depth 1 has no later blocks
                    if max(st.depths) > 1:
                        rest = pick(st.blocks, key=lambda t: block_ms(t, w, w, s, 1))
                        c_rest = block_ms(rest, w, w, s, 1)
                    c_first = block_ms(first, cin, w, s, 0)
                    depth = pick(st.depths, key=lambda d: c_first + (d - 1) * c_rest)
                    cost += c_first + (depth - 1) * c_rest
                    stages.append(StageArch(w, (first,) + (rest,) * (depth - 1)))
                    cin = w
                in_ch = tuple(widths[-NUM_NECK_LEVELS:])
                if in_ch not in tails:  # the best neck and head depend only on the widths they receive
                    tail_ms = {nh: self._corrected_sum(neck_head_ops(*nh, in_ch, r)) for nh in itertools.product(necks, heads)}
                    tails[in_ch] = pick(tail_ms.items(), key=lambda item: item[1])
                (neck, head), ms = tails[in_ch]
                cost += ms
                if best is None or (cost < best[0] if fastest else cost > best[0]):
                    best = (cost, Arch(r, BackboneArch(sw, tuple(stages)), neck, head))
        arch = best[1]
        return arch, self.predict(arch)

    def _sum(self, ops: list[Op]) -> float:
        try:
            return sum(self.entries[op.key] for op in ops)
        except KeyError as e:
            raise TableError(f"{self.path or 'latency table'}: no entry for op {e.args[0]}; "
                             f"the table was built for another search space or by an older version (rebuild it with python -m latency build)") from None

    def _op_ms(self, key: str) -> float:
        return self.correction.op_ms(self.entries[key]) if self.correction else self.entries[key]

    def _corrected_sum(self, ops: list[Op]) -> float:
        return sum(self._op_ms(op.key) for op in ops)

    def check(self, settings: Settings, force: bool = False) -> None:
        """Refuse (TableError) when `settings` differ from the table's in what latency depends on,
        unless `force`: a table is only valid on the device and settings it was measured with."""
        if force:
            return
        where = self.path or "latency table"
        here = device_name(settings.device)
        built = self.meta.device_name
        if torch.device(settings.device).type != torch.device(self.settings.device).type or here != built:
            raise TableError(f"{where}: built on {self.settings.device} ({built}), this run is on {settings.device} ({here}); "
                             f"build a table here with smnas latency build, or pass `force`")
        for name in ("dtype", "batch_size", "channels_last", "backend"):
            ours, theirs = getattr(self.settings, name), getattr(settings, name)
            if ours != theirs:
                raise TableError(f"{where}: built for `{name}` {ours}, this run uses {theirs}; "
                                 f"build a matching table, or pass `force`")

    # ---- files --------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        corr = self.correction
        return {"format": FORMAT, "meta": self.meta.to_dict(), "correction": asdict(corr) if corr else None, "entries": self.entries}

    def save(self, path: str | Path) -> None:
        self.path = Path(path)
        atomic_json(self.to_dict(), self.path)

    @classmethod
    def load(cls, path: str | Path, settings: Optional[Settings] = None, force: bool = False) -> "LatencyTable":
        """Read a table; with `settings`, also `check` it against the run's (see there)."""
        path = Path(path)
        if not path.is_file():
            raise TableError(f"{path}: latency table not found (build one with python -m latency build --out {path})")
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict) or "entries" not in data:
                raise TableError(f"{path}: not a latency table (no 'entries'; write one with python -m latency build)")
            if data.get("format") != FORMAT:
                raise TableError(f"{path}: table format {data.get('format')!r}, this version reads {FORMAT}; rebuild it")
            corr = Correction(**data["correction"]) if data["correction"] else None
            table = cls({k: float(v) for k, v in data["entries"].items()}, TableMeta.from_dict(data["meta"]), corr, path)
        except TableError:
            raise
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError) as e:
            raise TableError(f"{path}: not a latency table ({type(e).__name__}: {e})") from None
        if settings is not None:
            table.check(settings, force)
        return table


# ---- building -----------------------------------------------------------------------------------
def _graph_once(factory: Callable[[], Runner], folder: Optional[Path], key: str) -> Callable[[], Runner]:
    """`factory`, with its runners' exported graph kept in `folder` (none: not kept), so that a
    runtime backend exports each op once, not once a pass (`latency.backends.runnable`)."""
    if folder is None:
        return factory

    def build() -> Runner:
        runner = factory()
        runner.graph_file = folder / f"{hashlib.sha1(key.encode()).hexdigest()}.onnx"
        return runner
    return build


def build_table(space: SearchSpace, settings: Settings, out: str | Path, num_classes: int = 80, passes: int = 2,
                calib_archs: int = 20, seed: int = 0, timer: Optional[Timer] = None, progress: bool = True,
                extra_passes: int = EXTRA_PASSES) -> LatencyTable:
    """Measure every op of `space` and, among them in the same passes, `calib_archs` random
    subnets end to end (for the correction), and write the table to `out`. Progress is checkpointed to `out`.partial every few
    seconds: a build run again with the same arguments resumes there without re-measuring."""
    out = Path(out)
    check_backend(settings.backend, settings.device)
    ctx = OpContext.for_space(space, num_classes)
    ops = space_ops(space)
    archs = list(iter_archs(space, calib_archs, seed))
    job = {"space": space.to_dict(), "context": ctx.to_dict(), "settings": settings.to_dict(), "passes": passes, "extra_passes": extra_passes,
           "seed": seed, "calib": [a.hash() for a in archs]}
    partial = out.with_name(out.name + ".partial")
    state = _load_partial(partial, job)
    if state["times"]:
        logger.info(f"resuming {partial}: {sum(map(len, state['times'].values()))} measurements already done")
    start = time.perf_counter() - state["seconds"]
    last_save = time.perf_counter()

    def checkpoint(*_) -> None:
        nonlocal last_save
        bar.update(1)
        if time.perf_counter() - last_save > CHECKPOINT_SECONDS:
            state["seconds"] = time.perf_counter() - start
            atomic_write_bytes(partial, json.dumps(state).encode())
            last_save = time.perf_counter()

    if "noise" not in state:
        reference = space.sample(seed)
        state["noise"] = {**noise_check(reference_runner(reference, ctx, settings, seed), settings, timer=timer).to_dict(),
                          "arch": reference.to_dict()}
        if state["noise"]["noisy"]:
            logger.warning(f"the machine is noisy: the same model's time varied by {state['noise']['spread']:.0%} "
                f"over 5 runs; timings (and the table) will be less accurate")
    # the calibration subnets are timed among the ops, in the same shuffled passes: a machine
    # that is slower for a while then slows both alike, instead of skewing the correction
    graphs = tempfile.TemporaryDirectory(prefix="smnas-graphs-") if settings.backend == "onnxruntime" else None
    folder = Path(graphs.name) if graphs else None
    factories = {key: _graph_once(lambda op=op: op_runner(op, ctx, settings), folder, key) for key, op in ops.items()}
    factories.update({SUBNET + a.hash(): _graph_once(lambda a=a: detector_runner(a, ctx, settings), folder, SUBNET + a.hash())
                      for a in archs})
    times = state["times"]
    total = passes * len(factories) + sum(max(0, len(v) - passes) for v in times.values())
    with tqdm(total=total, initial=sum(map(len, times.values())), desc="latency table", disable=not progress, dynamic_ncols=True) as bar, \
            graphs or contextlib.nullcontext():
        def more(n: int) -> None:
            bar.total += n
            bar.refresh()

        try:
            kept = measure_many(factories, settings, passes, seed, timer, times, checkpoint, extra_passes, more)
        except BaseException:  # an op the backend cannot run, Ctrl-C: what was measured is kept for the resumed build
            state["seconds"] = time.perf_counter() - start
            atomic_write_bytes(partial, json.dumps(state).encode())
            raise
    entries = {key: kept[key] for key in ops}
    measured = {a.hash(): kept[SUBNET + a.hash()] for a in archs}
    state["seconds"] = time.perf_counter() - start
    meta = TableMeta(
        space, ctx, settings, environment(settings), date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        passes=passes, extra_passes=extra_passes, seed=seed, noise=state["noise"], build_seconds=round(state["seconds"], 1),
        pass_summary={"ops": pass_summary({k: times[k] for k in ops}, passes),
                      "calibration": pass_summary({k: times[SUBNET + k] for k in measured}, passes)},
        calibration=[{"arch": a.to_dict(), "measured_ms": measured[a.hash()]} for a in archs],
    )
    table = LatencyTable(entries, meta, path=out)
    if archs:
        table.correction = Correction.fit([table.raw(a) for a in archs], [measured[a.hash()] for a in archs],
                                          [len(arch_ops(a)) for a in archs])
    table.save(out)
    partial.unlink(missing_ok=True)
    return table


def _load_partial(path: Path, job: dict) -> dict:
    """The checkpointed state of an interrupted build of the same job, or a fresh one."""
    fresh = {"job": job, "times": {}, "seconds": 0.0}
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):  # missing, cut, or not text at all: measured again
        return fresh
    return state if isinstance(state, dict) and state.get("job") == json.loads(json.dumps(job)) and "times" in state else fresh
