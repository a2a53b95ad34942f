"""Retraining of searched (or hand-designed) architectures as standalone detectors.

A search ranks subnets by inherited weights; what a user deploys is the subnet trained on its own.
`retrain` trains one arch with the supernet trainer's loop (same data, schedule, checkpoints,
resume and DDP; no path sampling), from scratch or from the supernet's weights, then writes what
the comparison needs: the model, its arch, and metrics measured the way the search predicted
them (COCO mAP on the whole validation set; latency timed on this device with the latency
table's settings, next to the table's prediction; FLOPs and params).
"""
from __future__ import annotations

import logging
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

import torch
import torch.distributed as dist

from latency.cost import flops, params
from latency.measure import Settings, measure_many
from latency.ops import OpContext, detector_runner
from latency.table import LatencyTable
from supernet.baselines import PREFIX, RECIPES, baseline
from supernet.checkpoint import load_supernet
from supernet.cli import option
from supernet.data import build_datasets
from supernet.data.coco import to_model_input
from supernet.distributed import init_distributed
from supernet.errors import TrainError
from supernet.evaluate import METRICS
from supernet.io import atomic_json, error_line
from supernet.space import Arch, SearchSpace
from supernet.supernet import Detector
from supernet.train_config import TrainConfig, with_norm
from supernet.trainer import Trainer

from .nas import find_lut

INITS = ("scratch", "inherited")


@dataclass
class RetrainJob:
    """What to retrain and what to write besides the training run (`TrainConfig`) itself."""

    arch: Optional[str] = option(None, "an Arch JSON, finalists.json / pareto.json (with --index or --all), or baseline:NAME "
                                       f"({', '.join(RECIPES)}) (required)")
    index: Optional[int] = option(None, "which record of a list file; none: 0, the best finalist")
    all: bool = option(False, "every record of a list file, each in OUT/<arch hash>/")
    init: str = option("scratch", "scratch, or inherited: start from the supernet's weights", choices=INITS)
    supernet: Optional[str] = option(None, "supernet checkpoint (needed by --init inherited; also gives the default --space and data)")
    lut: Optional[str] = option(None, "latency table whose settings time the model; none: one in luts/ for this device and space")
    export: bool = option(False, "also write model.torchscript.pt and model.onnx (needs smnas[export])")


TIMING_IMAGES = 8  # a trained detector's NMS works on what it finds, so it is timed on this many validation images,
TIMING_BATCHES = 4  # as the mean over this many batches of them
LATENCY_PASSES = 2  # as the table's own entries: the lowest of two shuffled passes (more if they disagree)

logger = logging.getLogger(__name__)

def load_archs(spec: str, space: SearchSpace, index: Optional[int] = None, every: bool = False) -> list[tuple[str, Arch]]:
    """(name, arch) pairs named by `spec`: `baseline:NAME`, an Arch JSON file, or a list of
    records with an "arch" (finalists.json, pareto.json): its `index`-th (default the first, the
    best) or, with `every`, all of them. Each arch is validated against `space`."""
    if spec.startswith(PREFIX):
        return [(spec[len(PREFIX):], baseline(spec, space))]
    path = Path(spec)
    try:
        data = json.loads(path.read_text())
    except OSError:
        raise ValueError(f"`arch` {spec}: file not found (expected an Arch JSON, finalists.json, or baseline:NAME)") from None
    except ValueError as e:  # not JSON, not text
        raise ValueError(f"`arch` {spec}: not valid JSON ({error_line(e)})") from None
    if isinstance(data, list):
        if not data:
            raise ValueError(f"`arch` {spec}: the list holds no archs")
        if not every:
            i = 0 if index is None else index
            if not -len(data) <= i < len(data):
                raise ValueError(f"`index` {i}: {spec} holds {len(data)} archs (0..{len(data) - 1})")
            data = [data[i]]
        records = [(r.get("arch") if isinstance(r, dict) else None, f"{spec}[{i}]") for i, r in enumerate(data)]
    else:
        records = [(data.get("arch", data) if isinstance(data, dict) else data, spec)]
    out = []
    for raw, where in records:
        try:
            arch = space.validate(Arch.from_dict(raw, where))
        except ValueError as e:
            raise ValueError(f"`arch` {where}: {e}") from None
        out.append((arch.hash(), arch))
    return out


def retrain(arch: Arch, space: SearchSpace, config: TrainConfig, init: str = "scratch", supernet: Optional[str] = None, lut: Optional[str] = None,
            export: bool = False, resume: bool = False, timed: bool = True) -> dict:
    """Train `arch` (of `space`, whose activation and anchor scale it uses) in `config.out` and
    write model.pt, arch.json and metrics.json there (and, with `export`, model.torchscript.pt
    and model.onnx). Returns the metrics. With `resume`, a
    finished arch (metrics.json present) is returned as is and an interrupted one continues.
    `timed` False: no latency measurement (a screening's short training ranks by mAP alone)."""
    if init not in INITS:
        raise TrainError(f"`init`: expected one of {list(INITS)}, got {init!r}")
    out = Path(config.out)
    metrics_path = out / "metrics.json"
    if resume and metrics_path.is_file():
        done = finished_metrics(metrics_path, arch, timed)
        logger.info(f"{out}: already retrained (metrics.json); skipping")
        return done
    if not resume and (out / "last.pt").is_file():
        raise TrainError(f"`out` {out}: holds a retraining run already; pass `resume` to continue it, or choose another `out`")
    info, device = init_distributed(config.device)
    space.validate(arch)
    train_set, val_set = build_datasets(config, arch.resolution)
    torch.manual_seed(config.seed)  # the same initial weights on every rank and every run
    if init == "inherited":
        if not supernet:
            raise TrainError("`init` inherited: needs `supernet` (the checkpoint the arch inherits its weights from)")
        model, _ = load_supernet(supernet)
        try:
            inherited = model.extract(arch)
        except ValueError as e:
            raise TrainError(f"`supernet` {supernet}: cannot extract the arch ({e})") from None
        if model.num_classes != train_set.num_classes:
            raise TrainError(f"`supernet` {supernet}: predicts {model.num_classes} classes; the data has {train_set.num_classes}")
        if config.norm not in (None, model.space.norm):
            raise TrainError(f"`norm` {config.norm}: `supernet` {supernet} was trained with {model.space.norm}; its weights are for that")
        space = model.space
    space = with_norm(space, config.norm)
    detector = Detector(arch, train_set.num_classes, space.activation, space.head.anchor_scale, drop_path=config.drop_path, norm=space.norm)
    if init == "inherited":
        detector.load_state_dict(inherited.state_dict())
    detector.classes = train_set.classes
    if not config.eval_images:  # the whole validation set: these are the numbers a report quotes
        config = replace(config, eval_images=len(val_set))
    trainer = Trainer(config, (train_set, val_set), resume=resume and (out / "last.pt").is_file(), detector=detector.train())
    result = trainer.run()
    metrics: dict = {}
    if info.main:
        model = (trainer.ema.module if trainer.ema else trainer.model).eval()
        model.save(out / "model.pt")
        (out / "arch.json").write_text(arch.to_json(indent=1) + "\n")
        evaluated = result["eval"]["arch"]
        metrics = {
            "hash": arch.hash(), "init": init, **{k: evaluated[k] for k in METRICS}, "val_images": config.eval_images,
            **(measure_latency(model, device, lut, space, timing_images(val_set)) if timed else {}),
            "flops": flops(arch, model.num_classes), "params": params(arch, model.num_classes),
            "train_seconds": round(trainer.train_seconds, 3), "steps": trainer.step, "classes": train_set.classes,
        }
        atomic_json(metrics, metrics_path)  # before the export: a failed export loses no training
        if export:
            from supernet.export import export as export_model, usage

            try:
                metrics["export"] = export_model(model.cpu(), out)
            except (ValueError, OSError, ImportError) as e:
                raise TrainError(f"{out}: trained (model.pt, metrics.json) but not exported ({error_line(e)}); "
                                 f"export it with: python -m supernet.export {out / 'model.pt'}") from None
            for fmt, r in metrics["export"].items():
                if "check_failed" in r:
                    logger.warning(f"the {fmt} export differs from eager: {r['check_failed']}")
            logger.info(f"exported; to run it:\n{usage(metrics['export'], arch.resolution)}")
            atomic_json(metrics, metrics_path)
    if info.world > 1:
        dist.barrier()
    return metrics


def finished_metrics(path: Path, arch: Arch, timed: bool = True) -> dict:
    """The metrics.json of a finished retraining of `arch` (with its latency where `timed`);
    anything else there (another file, another arch's metrics) is refused rather than taken as
    "already retrained"."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise TrainError(f"{path}: not a retraining's metrics.json ({error_line(e)}); move it away or choose another `out`") from None
    needed = {"hash", "map", "latency_ms"} if timed else {"hash", "map"}
    if not isinstance(data, dict) or not needed <= data.keys():
        raise TrainError(f"{path}: not a retraining's metrics.json (no {', '.join(sorted(needed))}); move it away or choose another `out`")
    if data["hash"] != arch.hash():
        raise TrainError(f"{path}: holds the metrics of arch {data['hash']}, not of {arch.hash()}; choose another `out`")
    return data


def timing_images(val_set, n: int = TIMING_IMAGES) -> list[torch.Tensor]:
    """The first `n` validation images, float [3, H, W] in [0, 1]: what a trained detector is timed on."""
    return to_model_input([val_set[i][0] for i in range(min(n, len(val_set)))], "cpu")


def image_batches(images: list[torch.Tensor], batch_size: int, count: int = TIMING_BATCHES) -> list[list[torch.Tensor]]:
    """`count` batches of `images`, each starting `batch_size` images after the one before (cycling):
    a detector's post-processing costs what its images give it, so one batch is one sample of that."""
    return [[images[(k * batch_size + i) % len(images)] for i in range(batch_size)] for k in range(count)]


def measure_latency(model: Detector, device: torch.device, lut: Optional[str], space: SearchSpace,
                    images: Optional[list[torch.Tensor]] = None) -> dict:
    """{"latency_ms" measured, "latency_pred_ms", "latency_settings"}: timed with the table's
    dtype, batch size and memory format on `device` (the table is `lut`, else one in luts/ for
    this device and space; without any, fp32 batch 1 and no prediction), on `images` (a random
    batch without). Post-processing is the table's (full candidate budget), so measured and
    predicted time the same work."""
    return measure_latencies({"model": model}, device, lut, space, images=images)["model"]


def measure_latencies(models: dict[str, Detector], device: torch.device, lut: Optional[str], space: SearchSpace,
                      passes: int = LATENCY_PASSES, images: Optional[list[torch.Tensor]] = None) -> dict[str, dict]:
    """`measure_latency` of several detectors side by side: their passes interleaved in shuffled
    order, so that a host whose speed drifts slows all of them alike and their ratios hold."""
    path = Path(lut) if lut else None
    if path is None:
        try:
            path = find_lut(str(device), space)
        except ValueError:
            path = None
    table = LatencyTable.load(path) if path else None
    if table is not None:
        base = table.settings
        settings = replace(base, device=str(device))
        table.check(settings, force=False)
    else:
        settings = Settings(str(device))
    contexts = {name: table.context if table else OpContext.for_space(m.space, m.num_classes) for name, m in models.items()}
    for name, m in models.items():
        if contexts[name].num_classes != m.num_classes:
            raise TrainError(f"`lut` {path}: built for {contexts[name].num_classes} classes; the detector predicts {m.num_classes}")
    batches = image_batches(images, settings.batch_size) if images else [None]
    factories = {(name, k): (lambda m=m, ctx=contexts[name], state=m.state_dict(), batch=batch: detector_runner(m.arch, ctx, settings, state, images=batch))
                 for name, m in models.items() for k, batch in enumerate(batches)}
    times = measure_many(factories, settings, passes)
    return {name: {"latency_ms": round(sum(times[(name, k)] for k in range(len(batches))) / len(batches), 4),
                   "latency_pred_ms": round(table.predict(m.arch), 4) if table else None,
                   "latency_settings": {**settings.to_dict(), "lut": str(path) if path else None,
                                        "images": f"mean over {len(batches)} batches of {len(images)} validation images" if images else "random"}}
            for name, m in models.items()}
