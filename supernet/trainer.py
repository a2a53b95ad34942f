"""Single-path supernet training: one sampled path (or a sandwich of paths) per step.

A plain loop with everything a long multi-GPU run needs: step-indexed data and paths (so every
DDP rank trains the same path and a resumed run continues exactly), atomic checkpoints holding
every piece of state, NaN guarding, periodic evaluation of fixed subnets, JSONL metrics and a
progress bar.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import threading
import time
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from timm.utils import ModelEmaV3
from torch.utils.data import DataLoader
from tqdm import tqdm

from .batches import AUGMENTS, AugmentedDataset, StepBatchSampler
from .cli import check_number, flag_error
from .data import to_model_input
from .io import FolderBusy, RunLock, atomic_torch_save, atomic_write_bytes, load_failure
from .path import preserve_off_path
from .distill import FEATURES, capture_features, feature_distillation, feature_modules
from .sampler import SAMPLERS, FixedSampler, python_rng_state
from .space import DEPTH_SAMPLING, WIDTH_SAMPLING, Arch, SearchSpace
from .supernet import Detector, Supernet

MAX_BAD_STEPS = 5


class TrainError(RuntimeError):
    """A run cannot go on; the message is for the user (the script prints it, exit code 2)."""


class Interrupted(TrainError):
    """Ctrl-C: the run saved a checkpoint at a step boundary and stopped (exit code 130)."""


# fields a resumed run may change: they decide where and how fast it runs, or what is evaluated
# on the way, never the weights it ends with
RUNTIME_FIELDS = frozenset({"out", "device", "workers", "eval_every", "ckpt_every", "log_every", "eval_images", "eval_random_archs",
                            "calib_batches", "space"})  # the space is compared by content, not by how it was named
# what a checkpoint that predates a field was trained with, where that is not the field's default today
PREDATED = {"width_sampling": "uniform"}


@dataclass
class TrainConfig:
    space: str = "tiny"
    data: Optional[str] = None  # COCO 2017 layout root; None: built-in shapes data
    train_ann: Optional[str] = None
    train_images: Optional[str] = None
    val_ann: Optional[str] = None
    val_images: Optional[str] = None
    out: str = "runs/supernet"
    steps: Optional[int] = None  # takes precedence over epochs
    epochs: int = 10
    batch_size: int = 16
    lr: float = 0.04
    optimizer: str = "sgd"
    momentum: float = 0.9
    warmup: int = 100
    weight_decay: float = 4e-5
    amp: bool = False
    clip_grad: Optional[float] = 10.0
    ema: Optional[float] = None  # EMA decay, e.g. 0.9998
    sampler: str = "uniform"  # SPOS; the sandwich trains its extremes every step, which ranks paths near them too high
    random_paths: int = 1  # random paths a step, gradients accumulated (the sandwich adds the largest and the smallest)
    width_sampling: str = "wide"  # uniform | wide: random paths draw each width with weight 1..n, narrowest first (ranks better)
    depth_sampling: str = "uniform"  # uniform | deep: each stage depth with weight 1..n, shallowest first
    seed: int = 0
    workers: int = 2
    eval_every: int = 0  # 0: only at the end
    ckpt_every: int = 200
    log_every: int = 10
    device: str = "auto"
    eval_images: int = 200  # validation images per evaluation (a fixed subset; retraining: 0 = all)
    eval_random_archs: int = 2  # evaluated besides the smallest and the largest
    calib_batches: int = 8  # BN recalibration batches before each evaluation
    train_blocks: Optional[tuple[str, ...]] = None  # sample only these block types (structural stage); None: all
    structure: Optional[str] = None  # Arch JSON: sample only paths of its structure (the modular stage's fine-tune)
    start_from: Optional[str] = None  # supernet checkpoint whose weights training starts from (fine-tuning)
    distill: float = 0.0  # in-place distillation weight: the sandwich's largest path's features teach the other paths; 0: off
    distill_features: str = "backbone"  # backbone | neck: whose outputs the other paths match
    grad_average: str = "users"  # several paths a step: each weight's gradient averaged over the paths that ran it, or over all ("paths")
    augment: str = "flip"  # none | flip | scale_crop (flip, then transforms.v2 zoom-out and IoU crop)
    skip_unreadable: bool = False  # leave out images that do not decode (checked once at start) instead of stopping

    def __post_init__(self) -> None:
        """Every field checked once, here, naming its flag: a bad value would otherwise train
        something else silently (a negative clip flips gradients) or fail deep inside timm."""
        def bad(name: str, expected: str) -> TrainError:
            return flag_error(TrainError, name, getattr(self, name), expected)

        def number(name: str, low: float, high: float = math.inf, **kw) -> None:
            check_number(TrainError, name, getattr(self, name), low, high, **kw)

        number("steps", 1, integer=True, optional=True)
        for name in ("epochs", "batch_size", "ckpt_every", "log_every", "random_paths"):
            number(name, 1, integer=True)
        for name in ("warmup", "eval_every", "eval_images", "eval_random_archs", "calib_batches", "workers"):
            number(name, 0, integer=True)
        number("lr", 0, low_open=True)
        number("momentum", 0, 1, high_open=True)
        number("weight_decay", 0)
        number("clip_grad", 0, optional=True)  # 0 or none: no clipping
        number("ema", 0, 1, low_open=True, high_open=True, optional=True)
        number("distill", 0)
        if self.distill and self.sampler != "sandwich":
            raise bad("distill", f"0 with --sampler {self.sampler} (in-place distillation needs --sampler sandwich: its largest path is the teacher)")
        for name, choices in (("sampler", sorted(SAMPLERS)), ("grad_average", ["users", "paths"]), ("optimizer", ["sgd", "adamw"]),
                              ("augment", list(AUGMENTS)), ("distill_features", list(FEATURES)),
                              ("width_sampling", list(WIDTH_SAMPLING)), ("depth_sampling", list(DEPTH_SAMPLING))):
            if getattr(self, name) not in choices:
                raise bad(name, f"one of {choices}")


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_spec: str) -> tuple[DistInfo, torch.device]:
    """Resolve the device and join the process group torchrun describes in the environment (NCCL
    on CUDA, gloo on CPU); a single process otherwise. Idempotent."""
    info = DistInfo()
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:
        info = DistInfo(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    device = resolve_device(device_spec, info)
    if info.world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return info, device


def resolve_device(spec: str, dist_info: DistInfo) -> torch.device:
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise TrainError(f"--device {spec}: CUDA is not available on this machine")
        index = dist_info.local_rank if spec == "cuda" else spec.split(":")[1]
        if not str(index).isdigit():
            raise TrainError(f"--device: expected cpu, cuda or cuda:N, got {spec!r}")
        index = int(index)
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    if spec != "cpu":
        raise TrainError(f"--device: expected cpu, cuda or cuda:N, got {spec!r}")
    return torch.device("cpu")


def _rng_state() -> dict:
    state = {"python": random.getstate(), "torch": torch.get_rng_state(), "numpy": np.random.get_state(legacy=False)}
    state["numpy"] = {**state["numpy"], "state": {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in state["numpy"]["state"].items()}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(python_rng_state(state["python"]))
    torch.set_rng_state(state["torch"])
    numpy_state = dict(state["numpy"])
    numpy_state["state"] = {k: np.array(v, dtype=np.uint32) if isinstance(v, list) else v for k, v in numpy_state["state"].items()}
    np.random.set_state(numpy_state)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    """Owns the model, optimizer, schedule, sampler and data of one run in `config.out`.

    With `detector` (a standalone `Detector`, freshly initialised or extracted from a supernet)
    it trains that one architecture instead of a supernet: every step runs its path, and its BN
    statistics are its own, so evaluation skips recalibration (retraining of finalists)."""

    def __init__(self, config: TrainConfig, datasets: tuple, resume: bool = False, detector: Optional[Detector] = None):
        self.config = config
        self.dist, self.device = init_distributed(config.device)
        if config.amp and self.device.type != "cuda":
            raise TrainError("--amp: mixed precision needs a CUDA device (--device cuda)")
        self.out = Path(config.out)
        self.lock = RunLock(self.out)
        if self.dist.main:
            try:
                self.lock.acquire()
            except (FolderBusy, OSError) as e:
                raise TrainError(f"--out {e}") from None
        self.train_set, self.val_set = datasets
        try:
            self.space = detector.space if detector is not None else SearchSpace.resolve(config.space)
        except ValueError as e:
            raise TrainError(str(e)) from None
        if detector is not None and detector.num_classes != self.train_set.num_classes:
            raise TrainError(f"detector: predicts {detector.num_classes} classes; the training data has {self.train_set.num_classes}")
        self.steps_per_epoch = len(self.train_set) // (config.batch_size * self.dist.world)
        if self.steps_per_epoch == 0:
            raise TrainError(f"--batch-size {config.batch_size}: larger than the training set ({len(self.train_set)} images)")
        self.total_steps = config.steps if config.steps else config.epochs * self.steps_per_epoch
        self.sample_space = self.space if detector is not None else self._sample_space()
        seed_everything(config.seed + self.dist.rank)
        torch.manual_seed(config.seed)  # identical initial weights on every rank
        self.model = (detector or Supernet(self.space, self.train_set.num_classes)).to(self.device)
        if config.start_from:
            self._load_start(config.start_from)
        self.optimizer = create_optimizer_v2(
            self.model, opt="momentum" if config.optimizer == "sgd" else "adamw", lr=config.lr,
            weight_decay=config.weight_decay, momentum=config.momentum, filter_bias_and_bn=True,
        )
        self.scheduler = CosineLRScheduler(
            self.optimizer, t_initial=self.total_steps, warmup_t=config.warmup, warmup_lr_init=config.lr * 1e-3,
            lr_min=config.lr * 1e-2, t_in_epochs=False,
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=config.amp)
        self.sampler = FixedSampler(detector.arch) if detector is not None else SAMPLERS[config.sampler](
            self.sample_space, config.seed, config.random_paths, config.width_sampling, config.depth_sampling)
        self.step = 0
        self.train_seconds = 0.0  # spent in training steps, over every resumed part of the run
        self.bad_steps = 0
        try:
            ema_state = self._resume() if resume else None
        except TrainError:
            self.lock.release()  # refused: the folder is free for a corrected retry in this process
            raise
        if not resume and self.dist.main:
            self.metrics_path.unlink(missing_ok=True)  # lines of a run killed before its first checkpoint
        self.ema = ModelEmaV3(self.model, decay=config.ema) if config.ema else None
        if self.ema and ema_state is not None:
            self.ema.module.load_state_dict(ema_state)
        self.ddp = self.model
        if self.dist.world > 1:
            self.ddp = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True,  # a path uses a fraction of the supernet; the same on every rank
            )
        self.tensorboard = None  # opened by run(), once the step it resumes from is known
        rng = random.Random(f"{config.seed}/eval")
        if detector is not None:
            self.eval_archs = {"arch": detector.arch}
        else:
            sampled = self.sample_space
            self.eval_archs = {"smallest": sampled.smallest(), "largest": sampled.largest()}
            self.eval_archs.update({f"random{i}": sampled.sample(rng) for i in range(config.eval_random_archs)})

    def _sample_space(self) -> SearchSpace:
        """The sub-space this run's paths are drawn from (`train_blocks`, `structure`)."""
        cfg, structure = self.config, None
        if cfg.structure:
            path = Path(cfg.structure)
            try:
                structure = Arch.from_json(path.read_text(), str(path))
            except OSError:
                raise TrainError(f"--structure: {path} not found (an Arch JSON file, e.g. a search's OUT/finetune/structure.json)") from None
            except ValueError as e:
                raise TrainError(f"--structure: {e}") from None
        try:
            space = self.space.restrict(structure=structure)
        except ValueError as e:
            raise TrainError(f"--structure: {e}") from None
        try:
            return space.restrict(blocks=cfg.train_blocks)
        except ValueError as e:
            raise TrainError(f"--train-blocks: {e}") from None

    def _load_start(self, path: str) -> None:
        """Start from the weights of a supernet checkpoint of the same space (fine-tuning)."""
        try:
            model, _ = load_supernet(path)
        except TrainError as e:
            raise TrainError(f"--start-from: {e}") from None
        if model.space != self.space or model.num_classes != self.model.num_classes:
            raise TrainError(f"--start-from: {path} holds a supernet of another space or class count than --space {self.config.space}")
        self.model.load_state_dict(model.state_dict())

    # ---- checkpoints --------------------------------------------------------------------------
    @property
    def last_path(self) -> Path:
        return self.out / "last.pt"

    def checkpoint(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.module.state_dict() if self.ema else None,
            "step": self.step,
            "train_seconds": self.train_seconds,
            "sampler": self.sampler.state_dict(),
            "rng": _rng_state(),
            "space": self.space.to_dict(),
            "config": asdict(self.config),
            "threads": torch.get_num_threads(),
            "num_classes": self.model.num_classes,
            "cat_ids": list(getattr(self.train_set, "cat_ids", [])),
        }

    def save(self, copy_as: Optional[str] = None) -> None:
        if not self.dist.main:
            return
        blob = self.checkpoint()
        atomic_torch_save(blob, self.last_path)
        if copy_as:
            atomic_torch_save(blob, self.out / copy_as)

    def _resume(self) -> Optional[dict]:
        """Restore everything from last.pt; returns the EMA weights it holds, if any. Under DDP
        every rank restores rank 0's RNG state: weights, data and paths continue exactly, the
        random draws of other ranks (RPN sampling) restart from rank 0's stream."""
        if not self.last_path.is_file():
            raise TrainError(f"--resume: no checkpoint at {self.last_path}")
        try:
            blob = torch.load(self.last_path, map_location="cpu", weights_only=True)  # RNG states must stay on the CPU
        except Exception as e:
            raise TrainError(f"--resume: {self.last_path} is not a readable checkpoint ({type(e).__name__})") from None
        if SearchSpace.from_dict(blob["space"]) != self.space:
            raise TrainError(f"--resume: {self.last_path} was trained on another search space than --space {self.config.space}")
        changed = changed_settings(blob.get("config", {}), self.config)
        if changed:
            raise TrainError(f"--resume: {self.last_path} was trained with other settings ({', '.join(changed)}); "
                             "resume with the same flags, or start afresh with --overwrite or another --out")
        threads = blob.get("threads")
        if threads is not None and threads != torch.get_num_threads():
            warnings.warn(f"--resume: {self.last_path} was trained with {threads} threads, this process uses {torch.get_num_threads()}: "
                          "the run continues, but not bit-equal to an uninterrupted one (set OMP_NUM_THREADS)", stacklevel=2)
        self.model.load_state_dict(blob["model"])
        self.optimizer.load_state_dict(blob["optimizer"])
        self.scheduler.load_state_dict(blob["scheduler"])
        self.scaler.load_state_dict(blob["scaler"])
        self.sampler.load_state_dict(blob["sampler"])
        _set_rng_state(blob["rng"])
        self.step = blob["step"]
        self.train_seconds = blob.get("train_seconds", 0.0)
        if self.dist.main:
            self._truncate_metrics(self.step, final=self.step >= self.total_steps)
        return blob["ema"]

    # ---- metrics ------------------------------------------------------------------------------
    @property
    def metrics_path(self) -> Path:
        return self.out / "metrics.jsonl"

    def log(self, record: dict) -> None:
        """Append to metrics.jsonl, and to TensorBoard when it is installed."""
        if not self.dist.main:
            return
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tensorboard is not None:
            scalars = {k: v for k, v in record.items() if k != "step" and isinstance(v, (int, float))}
            for name, metrics in record.get("eval", {}).items():
                scalars.update({f"eval/{name}/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))})
            for k, v in scalars.items():
                self.tensorboard.add_scalar(k, v, record["step"])

    def _truncate_metrics(self, step: int, final: bool) -> None:
        """Drop records of steps after the checkpoint, and with `final` (a finished run) its
        final evaluation: the resumed run writes them again, so each appears once."""
        if self.metrics_path.is_file():
            records = [(line, json.loads(line)) for line in self.metrics_path.read_text().splitlines() if line]
            keep = [line for line, r in records if r["step"] < step or (r["step"] == step and not (final and "eval" in r))]
            atomic_write_bytes(self.metrics_path, "".join(line + "\n" for line in keep).encode())

    # ---- training -----------------------------------------------------------------------------
    def loader(self, start: Optional[int] = None, stop: Optional[int] = None) -> DataLoader:
        """Training batches of steps `start` (default: the current step) to `stop` (default: the end)."""
        from .data import collate

        start = self.step if start is None else start
        stop = self.total_steps if stop is None else stop
        cfg = self.config
        sampler = StepBatchSampler(len(self.train_set), cfg.batch_size, cfg.seed, start, stop, self.dist.rank, self.dist.world,
                                   flip=cfg.augment != "none")
        return DataLoader(
            AugmentedDataset(self.train_set, cfg.augment), batch_sampler=sampler, num_workers=self.config.workers, collate_fn=collate,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(self.config.seed),  # else it draws from the global RNG
        )

    def _to_device(self, images, targets):
        images = to_model_input(images, self.device)
        targets = [{"boxes": t["boxes"].to(self.device), "labels": t["labels"].to(self.device)} for t in targets]
        return images, targets

    def train_step(self, images, targets) -> Optional[dict[str, float]]:
        """One optimizer step over this step's path(s); None when skipped for a non-finite loss."""
        paths = self.sampler.paths(self.step)
        self.optimizer.zero_grad(set_to_none=True)
        parts: dict[str, float] = {}
        finite = True
        distill = self.config.distill if len(paths) > 1 and not isinstance(self.model, Detector) else 0.0
        teacher = None
        with capture_features(feature_modules(self.model, self.config.distill_features) if distill else []) as captured:
            for arch in paths:
                with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.config.amp):
                    losses = self.ddp(images, targets, arch=arch)
                    if distill and teacher is None:  # the first path is the sandwich's largest
                        teacher = [f.detach() for f in captured["features"]]
                    elif distill:
                        losses["distill"] = distill * feature_distillation(captured["features"], teacher)
                loss = sum(losses.values()) / len(paths)
                finite &= bool(torch.isfinite(loss))
                self.scaler.scale(loss).backward()
                for k, v in losses.items():
                    parts[k] = parts.get(k, 0.0) + float(v.detach()) / len(paths)
        if self.dist.world > 1:  # gradients are already averaged: every rank must skip together
            flag = torch.tensor(float(finite), device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
            finite = bool(flag)
        if not finite:
            self.optimizer.zero_grad(set_to_none=True)
            return None
        if len(paths) > 1 and self.config.grad_average == "users":
            self._average_over_users(paths)
        if self.config.clip_grad:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.grad is not None], self.config.clip_grad)
        with preserve_off_path(self.model, paths, self.optimizer):
            self.scaler.step(self.optimizer)
        self.scaler.update()
        updated = [p.detach() for p in self.model.parameters() if p.grad is not None]
        if updated and not torch.isfinite(torch.nn.utils.get_total_norm(updated)):
            raise TrainError(f"step {self.step}: the update made weights NaN/inf; stopping without saving them. "
                             f"Last good checkpoint: {self.last_path} (try a lower --lr, or --clip-grad)")
        if self.ema:
            self.ema.update(self.model, step=self.step)
        return {"loss": sum(parts.values()), **parts}

    def _average_over_users(self, paths: list) -> None:
        """Each parameter's gradient becomes the mean over the paths that ran it, not over all
        the step's paths: a head or neck type on one path of three would otherwise learn at a
        third of the rate of the weights every path shares."""
        users = Counter(name for arch in paths for name in self.model.path_shapes(arch))
        for name, p in self.model.named_parameters():
            if p.grad is not None and 0 < users[name] < len(paths):
                p.grad.mul_(len(paths) / users[name])

    def evaluate(self, max_images: Optional[int] = None) -> dict[str, dict]:
        """mAP of the fixed evaluation archs with inherited weights after BN recalibration."""
        from .bn import recalibrate_bn
        from .data import build_loader
        from .evaluate import Batches, evaluate

        model = self.ema.module if self.ema else self.model
        standalone = isinstance(self.model, Detector)
        # the same batches for every arch and evaluation, decoded once
        calib = [] if standalone else list(self.loader(0, self.config.calib_batches))
        images = max_images or self.config.eval_images
        val = Batches.first(build_loader(self.val_set, self.config.batch_size, shuffle=False, workers=self.config.workers,
                                         seed=self.config.seed), images)  # decoded once for all archs
        results = {}
        devices = [self.device.index] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # evaluation must not shift training's RNG stream
            for name, arch in self.eval_archs.items():
                if not standalone:
                    recalibrate_bn(model, arch, calib, self.config.calib_batches, self.device)
                metrics = evaluate(model, arch, val, self.device, max_images=images)
                results[name] = {"hash": arch.hash(), **metrics}
        return results

    def run(self) -> dict:
        """Train to `total_steps` (from the resumed step), evaluating and checkpointing on the
        way. Ctrl-C finishes the current step, saves and raises `Interrupted`; under torchrun,
        where it reaches every rank (or only some), the ranks agree on the step to stop after."""
        stop = threading.Event()
        handler = None
        if threading.current_thread() is threading.main_thread():
            handler = signal.signal(signal.SIGINT, lambda *_: stop.set())
        if self.dist.main:
            self.tensorboard = _tensorboard_writer(self.out, self.step)
        try:
            return self._run(stop)
        finally:
            if self.tensorboard is not None:
                self.tensorboard.close()  # flushes the last events
                self.tensorboard = None
            if handler is not None:
                signal.signal(signal.SIGINT, handler)
            self.lock.release()

    def _run(self, stop: threading.Event) -> dict:
        cfg = self.config
        if self.dist.main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "space.json").write_text(self.space.to_json())
        desc = "retrain" if isinstance(self.model, Detector) else "supernet"
        bar = tqdm(total=self.total_steps, initial=self.step, disable=not self.dist.main, desc=desc, dynamic_ncols=True)
        t0, seen = time.perf_counter(), 0
        tick = t0
        try:
            for images, targets in self.loader():
                images, targets = self._to_device(images, targets)
                self.scheduler.step_update(self.step)
                result = self.train_step(images, targets)
                if result is None:
                    self.bad_steps += 1
                    warnings.warn(f"step {self.step}: non-finite loss, step skipped ({self.bad_steps} in a row)", stacklevel=2)
                    if self.bad_steps >= MAX_BAD_STEPS:
                        raise TrainError(
                            f"loss was NaN/inf for {MAX_BAD_STEPS} steps in a row (last at step {self.step}); "
                            f"stopping. Last good checkpoint: {self.last_path} (try a lower --lr or --clip-grad)"
                        )
                else:
                    self.bad_steps = 0
                self.step += 1
                seen += len(images) * self.dist.world
                if result is not None and (self.step % cfg.log_every == 0 or self.step == self.total_steps):
                    rate = seen / (time.perf_counter() - t0)
                    lr = self.optimizer.param_groups[0]["lr"]
                    self.log({"step": self.step, **{k: round(v, 5) for k, v in result.items()}, "lr": lr, "images_per_s": round(rate, 2)})
                    bar.set_postfix(loss=f"{result['loss']:.3f}", lr=f"{lr:.2e}", img_s=f"{rate:.1f}")
                bar.update(1)
                self.train_seconds += time.perf_counter() - tick
                stopping = self._stop_requested(stop)
                if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < self.total_steps:
                    self._evaluate_and_log(copy_as=f"step{self.step:07d}.pt")
                elif self.step % cfg.ckpt_every == 0 or stopping:
                    self.save()
                if stopping:
                    raise Interrupted(f"interrupted at step {self.step} of {self.total_steps}: saved {self.last_path}; --resume continues the run")
                tick = time.perf_counter()
        finally:
            bar.close()  # before any error line, which would otherwise follow the bar on its line
        final = self._evaluate_and_log(copy_as=None)
        return {"checkpoint": str(self.last_path), "step": self.step, "eval": final}

    def _stop_requested(self, stop: threading.Event) -> bool:
        """Whether to stop after this step: on a Ctrl-C of any rank, agreed by all (a rank that
        stopped alone would leave the others waiting in the next step's gradient all-reduce)."""
        if self.dist.world == 1:
            return stop.is_set()
        flag = torch.tensor(float(stop.is_set()), device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag)

    def _evaluate_and_log(self, copy_as: Optional[str]) -> dict:
        results = self.evaluate() if self.dist.main else {}
        self.log({"step": self.step, "eval": results})
        self.save(copy_as)
        if self.dist.world > 1:
            dist.barrier()
        return results


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """The data, schedule, optimisation and run flags that supernet training and retraining share."""
    d = TrainConfig
    p.add_argument("--space", default=d.space, help="tiny, coco, or a .yaml/.json space file")
    p.add_argument("--data", help="COCO 2017 layout root (annotations/, train2017/, val2017/); default: built-in shapes data")
    for name in ("train-ann", "train-images", "val-ann", "val-images"):
        p.add_argument(f"--{name}", help="override one path of --data")
    p.add_argument("--out", default=d.out, help="run directory (checkpoints, metrics.jsonl)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int)
    length.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="per process")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--optimizer", choices=["sgd", "adamw"], default=d.optimizer)
    p.add_argument("--momentum", type=float, default=d.momentum)
    p.add_argument("--warmup", type=int, default=d.warmup, help="linear warm-up steps before cosine decay")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="not applied to BN and biases")
    p.add_argument("--amp", action="store_true", help="fp16 mixed precision (CUDA)")
    p.add_argument("--clip-grad", type=float, default=d.clip_grad, help="max gradient norm; 0 disables")
    p.add_argument("--augment", choices=AUGMENTS, default=d.augment,
                   help="training augmentation: none, flip (horizontal), scale_crop (flip, then transforms.v2 zoom-out and IoU crop)")
    p.add_argument("--ema", type=float, help="keep an EMA of the weights with this decay (e.g. 0.9998)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--workers", type=int, default=d.workers)
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--eval-every", type=int, default=d.eval_every, help="steps; 0: only at the end")
    p.add_argument("--ckpt-every", type=int, default=d.ckpt_every)
    p.add_argument("--log-every", type=int, default=d.log_every)
    p.add_argument("--device", default=d.device, help="auto, cpu, cuda, cuda:N")
    p.add_argument("--skip-unreadable", action="store_true",
                   help="decode every image once at start and leave out those that fail (counted in a warning), instead of stopping at the first")


def changed_settings(recorded: dict, config: TrainConfig) -> list[str]:
    """"--flag old -> new" for each result-changing field where `config` differs from the
    `recorded` config of a checkpoint (a field the checkpoint predates counts as what it was
    trained with: `PREDATED`, else the default)."""
    def plain(v):
        return list(v) if isinstance(v, (tuple, list)) else v

    out = []
    for f in fields(TrainConfig):
        if f.name in RUNTIME_FIELDS:
            continue
        old, new = plain(recorded.get(f.name, PREDATED.get(f.name, f.default))), plain(getattr(config, f.name))
        if old != new:
            out.append(f"--{f.name.replace('_', '-')} {old!r} -> {new!r}")
    return out


def train_config(args: dict) -> TrainConfig:
    """The TrainConfig of parsed flags (keys that are not TrainConfig fields are ignored)."""
    names = {f.name for f in fields(TrainConfig)}
    config = {k: v for k, v in args.items() if k in names}
    config["clip_grad"] = config.get("clip_grad") or None
    return TrainConfig(**config)


def recorded_config(recorded: dict) -> TrainConfig:
    """The TrainConfig a checkpoint's saved `config` describes: fields it predates as it was
    trained (`PREDATED`), else their defaults; keys that are not fields ignored."""
    return train_config({**PREDATED, **recorded})


def trained_space(model: Supernet, blob: dict) -> SearchSpace:
    """The sub-space a checkpoint's paths were drawn from by block type (`--train-blocks`): what
    its weights can score (a stage-matched supernet never ran the other blocks)."""
    return model.space.restrict(blocks=blob["config"].get("train_blocks"))


def load_supernet(path: str | Path, device: torch.device | str = "cpu") -> tuple[Supernet, dict]:
    """The supernet of a training checkpoint (its EMA weights when it kept an EMA) and the
    checkpoint itself (space, config, num_classes, cat_ids ...). Raises TrainError on bad files."""
    path = Path(path)
    if not path.is_file():
        raise TrainError(f"{path}: supernet checkpoint not found (train one with train_supernet.py, which writes RUN_DIR/last.pt)")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        space = SearchSpace.from_dict(blob["space"])
        model = Supernet(space, blob["num_classes"])
        model.load_state_dict(blob["ema"] if blob.get("ema") else blob["model"])
    except Exception as e:  # not a torch file, not ours, or another version's
        raise TrainError(f"{path}: not a supernet checkpoint written by train_supernet.py ({load_failure(e)})") from None
    return model.to(device).eval(), blob


def _tensorboard_writer(out: Path, step: int):
    """A SummaryWriter in OUT/tensorboard when the tensorboard package is installed, else None.
    A run resumed at `step` purges the events logged after it (TensorBoard drops those at
    `purge_step` and later), so the old and the new curve do not overlap."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out / "tensorboard"), purge_step=step + 1 if step else None)


DEFAULT_DATA = Path("data/shapes")


def _generate_once(root: Path) -> Path:
    """The shapes data, written by rank 0 only while the other ranks wait (call after
    `init_distributed`)."""
    from .shapes import generate_shapes

    first = not dist.is_initialized() or dist.get_rank() == 0
    if first:
        generate_shapes(root)
    if dist.is_initialized():
        dist.barrier()
    return root if first else generate_shapes(root)  # complete by now: only checks


def build_datasets(config: TrainConfig, max_size: int) -> tuple:
    """Train and val datasets from `--data` (COCO 2017 layout), the four override flags, or, with
    neither, the built-in shapes data generated once under data/shapes."""
    from .data import CocoDetection, coco_paths

    overrides = {k: getattr(config, k) for k in ("train_ann", "train_images", "val_ann", "val_images")}
    try:
        if config.data:
            paths = coco_paths(config.data)
        elif any(overrides.values()):
            paths = {}
        else:
            paths = coco_paths(_generate_once(DEFAULT_DATA))
        paths.update({k: Path(v) for k, v in overrides.items() if v})
        missing = [f"--{k.replace('_', '-')}" for k in overrides if k not in paths]
        if missing:
            raise ValueError(f"{', '.join(missing)}: needed when --data is not given")
        train = CocoDetection(paths["train_images"], paths["train_ann"], max_size, config.skip_unreadable)
        val = CocoDetection(paths["val_images"], paths["val_ann"], max_size, config.skip_unreadable)
    except ValueError as e:
        raise TrainError(str(e)) from None
    if train.cat_ids != val.cat_ids:
        raise TrainError(f"{paths['val_ann']}: its categories differ from the training set's ({paths['train_ann']})")
    return train, val
