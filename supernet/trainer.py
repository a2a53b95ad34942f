"""Single-path supernet training: one sampled path (or a sandwich of paths) per step.

A plain loop with everything a long multi-GPU run needs: step-indexed data and paths (so every
DDP rank trains the same path and a resumed run continues exactly), atomic checkpoints holding
every piece of state, NaN guarding, periodic evaluation of fixed subnets, JSONL metrics and a
progress bar.
"""
from __future__ import annotations

import json
import logging
import random
import signal
import threading
import time
import warnings
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import torch
import torch.distributed as dist
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from timm.utils import ModelEmaV3
from torch.utils.data import DataLoader
from tqdm import tqdm

from .batches import AugmentedDataset, StepBatchSampler
from .checkpoint import load_supernet
from .data import CocoDetection, to_model_input
from .data.coco import loader_memory
from .distill import capture_features, feature_distillation, feature_modules
from .distributed import init_distributed
from .errors import Interrupted, TrainError
from .io import FolderBusy, RunLock, atomic_torch_save, atomic_write_bytes
from .layers import sync_batchnorm
from .path import preserve_off_path
from .sampler import FixedSampler, SAMPLERS
from .seeding import rng_state, seed_everything, set_rng_state
from .space import Arch, SearchSpace
from .supernet import Detector, Supernet
from .tensorboard import Board
from .train_config import RESTRICTIONS, TrainConfig, changed_settings, with_norm

MAX_BAD_STEPS = 5


AMP_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
logger = logging.getLogger(__name__)


def check_amp(amp: Optional[str], device: torch.device) -> None:
    """One line naming --amp when the device cannot run it: fp16 autocast with a gradient scaler
    is CUDA's; bf16 needs a GPU that supports it (Ampere or later), or runs on the CPU's autocast."""
    if amp == "fp16" and device.type != "cuda":
        raise TrainError(f"`amp` fp16: needs a CUDA device (this run is on {device}); `amp` bf16 runs on CPUs that support it")
    if amp == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise TrainError(f"`amp` bf16: {torch.cuda.get_device_name(device)} does not support bf16; use `amp` fp16")


class Trainer:
    """Owns the model, optimizer, schedule, sampler and data of one run in `config.out`.

    With `detector` (a standalone `Detector`, freshly initialised or extracted from a supernet)
    it trains that one architecture instead of a supernet: every step runs its path, and its BN
    statistics are its own, so evaluation skips recalibration (retraining of finalists)."""

    def __init__(self, config: TrainConfig, datasets: tuple, resume: bool = False, detector: Optional[Detector] = None):
        self.config = config
        self.dist, self.device = init_distributed(config.device)
        check_amp(config.amp, self.device)
        if config.sync_bn and self.dist.world < 2:
            raise TrainError("`sync_bn`: needs a process group of 2 or more ranks (run under torchrun); a single process has no "
                             "other batches to synchronise with")
        self.out = Path(config.out)
        self.lock = RunLock(self.out)
        if self.dist.main:
            try:
                self.lock.acquire()
            except (FolderBusy, OSError) as e:
                raise TrainError(f"`out` {e}") from None
        self.train_set, self.val_set = datasets
        try:
            self.space = detector.space if detector is not None else SearchSpace.resolve(config.space)
        except ValueError as e:
            raise TrainError(str(e)) from None
        if detector is None:
            self.space = with_norm(self.space, config.norm)
        if detector is not None and detector.num_classes != self.train_set.num_classes:
            raise TrainError(f"detector: predicts {detector.num_classes} classes; the training data has {self.train_set.num_classes}")
        self.steps_per_epoch = len(self.train_set) // (config.batch_size * self.dist.world)
        if self.steps_per_epoch == 0:
            raise TrainError(f"`batch_size` {config.batch_size}: larger than the training set ({len(self.train_set)} images)")
        self.total_steps = config.steps if config.steps else config.epochs * self.steps_per_epoch
        self.sample_space = self.space if detector is not None else self._sample_space()
        seed_everything(config.seed + self.dist.rank)
        torch.manual_seed(config.seed)  # identical initial weights on every rank
        self.model = (detector or Supernet(self.space, self.train_set.num_classes, drop_path=config.drop_path)).to(self.device)
        if config.start_from:
            self._load_start(config.start_from)
        if config.sync_bn:
            self.model = sync_batchnorm(self.model)
        # listed once: walking a supernet's thousands of modules three times a step is a visible share of a CPU step
        self.named_params = list(self.model.named_parameters())
        self.optimizer = create_optimizer_v2(
            self.model, opt="momentum" if config.optimizer == "sgd" else "adamw", lr=config.lr,
            weight_decay=config.weight_decay, momentum=config.momentum, filter_bias_and_bn=True,
        )
        self.scheduler = CosineLRScheduler(
            self.optimizer, t_initial=self.total_steps, warmup_t=config.warmup, warmup_lr_init=config.lr * 1e-3,
            lr_min=config.lr * 1e-2, t_in_epochs=False,
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=config.amp == "fp16")  # bf16 has fp32's range: no scaling
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
        """The sub-space this run's paths are drawn from (`structure`, `train_blocks`, `train_resolutions`, `train_heads`)."""
        cfg, structure = self.config, None
        if cfg.structure:
            path = Path(cfg.structure)
            try:
                structure = Arch.from_json(path.read_text(), str(path))
            except OSError:
                raise TrainError(f"`structure`: {path} not found (an Arch JSON file, e.g. a search's OUT/finetune/structure.json)") from None
            except ValueError as e:
                raise TrainError(f"`structure`: {e}") from None
        try:
            space = self.space.restrict(structure=structure)
        except ValueError as e:
            raise TrainError(f"`structure`: {e}") from None
        for name, restriction in RESTRICTIONS.items():
            try:
                space = space.restrict(**{restriction: getattr(cfg, name)})
            except ValueError as e:
                raise TrainError(f"`{name}`: {str(e).removeprefix(restriction + ': ')}") from None
        return space

    def _load_start(self, path: str) -> None:
        """Start from the weights of a supernet checkpoint of the same space (fine-tuning)."""
        try:
            model, _ = load_supernet(path)
        except TrainError as e:
            raise TrainError(f"`start_from`: {e}") from None
        if model.space != self.space or model.num_classes != self.model.num_classes:
            raise TrainError(f"`start_from`: {path} holds a supernet of another space or class count than `space` {self.config.space}")
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
            "rng": rng_state(),
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
            raise TrainError(f"`resume`: no checkpoint at {self.last_path}")
        try:
            blob = torch.load(self.last_path, map_location="cpu", weights_only=True)  # RNG states must stay on the CPU
        except Exception as e:
            raise TrainError(f"`resume`: {self.last_path} is not a readable checkpoint ({type(e).__name__})") from None
        if SearchSpace.from_dict(blob["space"]) != self.space:
            raise TrainError(f"`resume`: {self.last_path} was trained on another search space than `space` {self.config.space}")
        changed = changed_settings(blob.get("config", {}), self.config)
        if changed:
            raise TrainError(f"`resume`: {self.last_path} was trained with other settings ({', '.join(changed)}); "
                             "resume with the same settings, or start afresh with `overwrite` or another `out`")
        threads = blob.get("threads")
        if threads is not None and threads != torch.get_num_threads():
            warnings.warn(f"`resume`: {self.last_path} was trained with {threads} threads, this process uses {torch.get_num_threads()}: "
                          "the run continues, but not bit-equal to an uninterrupted one (set OMP_NUM_THREADS)", stacklevel=2)
        self.model.load_state_dict(blob["model"])
        self.optimizer.load_state_dict(blob["optimizer"])
        self.scheduler.load_state_dict(blob["scheduler"])
        self.scaler.load_state_dict(blob["scaler"])
        self.sampler.load_state_dict(blob["sampler"])
        set_rng_state(blob["rng"])
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
            scalars = {k: v for k, v in record.items() if k not in ("step", "eval")}
            for name, metrics in record.get("eval", {}).items():
                scalars.update({f"eval/{name}/{k}": v for k, v in metrics.items()})
            self.tensorboard.scalars(scalars, record["step"])

    def _truncate_metrics(self, step: int, final: bool) -> None:
        """Drop records of steps after the checkpoint, and with `final` (a finished run) its
        final evaluation: the resumed run writes them again, so each appears once."""
        if self.metrics_path.is_file():
            records = [(line, json.loads(line)) for line in self.metrics_path.read_text().splitlines() if line]
            keep = [line for line, r in records if r["step"] < step or (r["step"] == step and not (final and "eval" in r))]
            atomic_write_bytes(self.metrics_path, "".join(line + "\n" for line in keep).encode())

    # ---- training -----------------------------------------------------------------------------
    def loader(self, start: Optional[int] = None, stop: Optional[int] = None, sharded: bool = True) -> DataLoader:
        """Training batches of steps `start` (default: the current step) to `stop` (default: the
        end): this rank's share of each global batch, or with `sharded=False` the batches a single
        process would train on."""
        from .data import collate

        start = self.step if start is None else start
        stop = self.total_steps if stop is None else stop
        cfg = self.config
        rank, world = (self.dist.rank, self.dist.world) if sharded else (0, 1)
        sampler = StepBatchSampler(len(self.train_set), cfg.batch_size, cfg.seed, start, stop, rank, world,
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
                with torch.autocast(self.device.type, dtype=AMP_DTYPES.get(self.config.amp), enabled=self.config.amp is not None):
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
            torch.nn.utils.clip_grad_norm_([p for _, p in self.named_params if p.grad is not None], self.config.clip_grad)
        with preserve_off_path(self.model, paths, self.optimizer, self.named_params):
            self.scaler.step(self.optimizer)
        self.scaler.update()
        updated = [p.detach() for _, p in self.named_params if p.grad is not None]
        if updated and not torch.isfinite(torch.nn.utils.get_total_norm(updated)):
            raise TrainError(f"step {self.step}: the update made weights NaN/inf; stopping without saving them. "
                             f"Last good checkpoint: {self.last_path} (try a lower `lr`, or `clip_grad`)")
        if self.ema:
            self.ema.update(self.model, step=self.step)
        return {"loss": sum(parts.values()), **parts}

    def _average_over_users(self, paths: list) -> None:
        """Each parameter's gradient becomes the mean over the paths that ran it, not over all
        the step's paths: a head or neck type on one path of three would otherwise learn at a
        third of the rate of the weights every path shares."""
        users = Counter(name for arch in paths for name in self.model.path_shapes(arch))
        for name, p in self.named_params:
            if p.grad is not None and 0 < users[name] < len(paths):
                p.grad.mul_(len(paths) / users[name])

    def evaluate(self, max_images: Optional[int] = None) -> dict[str, dict]:
        """mAP of the fixed evaluation archs with inherited weights after BN recalibration, on the
        first `max_images` (default `eval_images`) validation images. Call it on every rank: each
        recalibrates on the same batches (a single process's) and detects its share of the
        images; rank 0 scores them all in one COCOeval and returns the results (the other ranks
        an empty dict), equal to a single process's."""
        from torch.utils.data import Subset

        from .bn import recalibrate_bn
        from .data import build_loader
        from .evaluate import Batches, coco_map, detect

        model = self.ema.module if self.ema else self.model
        standalone = isinstance(self.model, Detector)
        # the same batches for every arch and evaluation, decoded once
        calib = [] if standalone else list(self.loader(0, self.config.calib_batches, sharded=False))
        images = min(max_images or self.config.eval_images or len(self.val_set), len(self.val_set))  # 0: all
        share = Subset(self.val_set, range(self.dist.rank, images, self.dist.world))
        val = Batches(build_loader(share, self.config.batch_size, shuffle=False, workers=self.config.workers, seed=self.config.seed),
                      self.val_set)
        results = {}
        devices = [self.device.index] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # evaluation must not shift training's RNG stream
            for name, arch in self.eval_archs.items():
                if not standalone:
                    recalibrate_bn(model, arch, calib, self.config.calib_batches, self.device)
                detections, image_ids = detect(model, arch, val, self.device)
                if self.dist.world > 1:
                    shares: list = [None] * self.dist.world
                    dist.all_gather_object(shares, (detections, image_ids))
                    detections, image_ids = [d for s in shares for d in s[0]], [i for s in shares for i in s[1]]
                if self.dist.main:
                    results[name] = {"hash": arch.hash(), **coco_map(self.val_set.coco, detections, image_ids)}
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
            self.tensorboard = Board(self.out / "tensorboard", purge_step=self.step + 1 if self.step else None)
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
        if self.dist.main and isinstance(self.train_set, CocoDetection):
            line, too_much = loader_memory(self.train_set, cfg.batch_size, cfg.workers)
            logger.info(line)
            if too_much:
                warnings.warn(f"{line}: more than is available; lower `workers` or `batch_size` before this swaps", stacklevel=2)
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
                            f"stopping. Last good checkpoint: {self.last_path} (try a lower `lr` or `clip_grad`)"
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
                    raise Interrupted(f"interrupted at step {self.step} of {self.total_steps}: saved {self.last_path}; `resume` continues the run")
                tick = time.perf_counter()
        finally:
            bar.close()  # before any error line, which would otherwise follow the bar on its line
        final = self._evaluate_and_log(copy_as=None)
        if self.tensorboard is not None:
            self.tensorboard.hparams(asdict(cfg), {f"hparam/{name}/map": m["map"] for name, m in final.items() if "map" in m})
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
        results = self.evaluate()
        self.log({"step": self.step, "eval": results})
        self.save(copy_as)
        if self.dist.world > 1:
            dist.barrier()
        return results


