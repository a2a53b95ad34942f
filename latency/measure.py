"""Timing a module the way a deployment sees it: eval mode, no grad, fixed batch size, dtype and
memory format, warm-up, then a low percentile (or the median) of repeated runs.

Shared machines are noisy in bursts of a second or two: on a 2-core VM the same op measured in
two passes differed by a median 11-33 %. So `measure_many` times every entry once per pass,
visiting them in a fresh shuffled order each pass, and keeps the lowest of the per-pass times:
a burst then spoils one pass of a few entries rather than all samples of one entry, and entries
whose passes disagree get a pass or two more. `noise_check` times one reference several times
and reports the spread, to warn before a build or validation.
"""
from __future__ import annotations

import random
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable, Hashable, Optional, Protocol

import numpy as np
import torch

from supernet.cli import check_number, option

from .backends import BACKENDS, BackendError, runnable

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
NOISY_SPREAD = 0.05  # above this relative spread a measurement is flagged as noisy
AGREE = 0.10  # two pass times of one entry within this (relative) reproduce its minimum
EXTRA_PASSES = 2  # at most this many more passes for entries whose passes do not agree


def _percentile(q: float) -> Callable[[list[float]], float]:
    return lambda xs: float(np.percentile(xs, q))


# What one measurement keeps of its repeats. Interference on a shared machine only ever slows a
# run down, so a low percentile estimates the undisturbed time: on a 2-core VM, eight repeated
# measurements of one op or detector spread by 8-39 % taking the median, 6-15 % taking p10.
STATISTICS: dict[str, Callable[[list[float]], float]] = {"median": statistics.median, "p10": _percentile(10), "min": min}


@dataclass(frozen=True)
class Settings:
    """What a latency depends on besides the model; stored with every table built."""

    device: str = option("cpu", "cpu, cuda or cuda:N")
    dtype: str = option("fp32", "fp32, fp16 (CUDA) or bf16", choices=DTYPES)
    batch_size: int = option(1, "images per forward")
    channels_last: bool = option(False, "channels-last memory format")
    threads: Optional[int] = option(None, "CPU threads (none: leave torch's current setting; recorded)")
    warmup: int = option(5, "untimed runs before timing each entry")
    repeats: int = option(20, "timed runs per entry and pass (their statistic is kept)")
    # tables from before `statistic` was recorded used the median
    statistic: str = option("p10", "what a measurement keeps of its repeats: a low percentile estimates the undisturbed time "
                                   "on a shared machine", choices=STATISTICS)
    backend: str = option("eager", "the runtime to time in: eager PyTorch, onnxruntime (CPU provider; pip install 'smnas[export]') "
                                   "or compile (torch.compile); a table is only used with its own backend", choices=BACKENDS)

    def __post_init__(self) -> None:
        if self.statistic not in STATISTICS:
            raise ValueError(f"`statistic`: expected one of {sorted(STATISTICS)}, got {self.statistic!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"`dtype`: expected one of {sorted(DTYPES)}, got {self.dtype!r}")
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"`device`: expected cpu, cuda or cuda:N, got {self.device!r}")
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1):
            raise ValueError(f"`threads`: expected a positive integer or none, got {self.threads!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"`backend`: expected one of {list(BACKENDS)}, got {self.backend!r}")
        if self.backend == "onnxruntime" and self.dtype != "fp32":
            raise ValueError(f"`backend` onnxruntime: times fp32 graphs only so far, got `dtype` {self.dtype}")
        if self.device == "cpu" and self.dtype == "fp16":
            raise ValueError("`dtype` fp16: not supported for CPU timing (use fp32 or bf16)")
        for name in ("batch_size", "warmup", "repeats"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (0 if name == "warmup" else 1):
                raise ValueError(f"`{name}`: expected a positive integer, got {value!r}")

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def to_dict(self) -> dict:
        return asdict(self)


class Timer(Protocol):
    def __call__(self, fn: Callable[[], object]) -> float:
        """Milliseconds one call of `fn` takes."""


class CpuTimer:
    """`time.perf_counter` around the call."""

    def __call__(self, fn: Callable[[], object]) -> float:
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1e3


class CudaTimer:
    """CUDA events around the call, synchronised: the device time, not the launch time."""

    def __init__(self, device: torch.device):
        self.device = device
        with torch.cuda.device(device):
            self.start = torch.cuda.Event(enable_timing=True)
            self.end = torch.cuda.Event(enable_timing=True)

    def __call__(self, fn: Callable[[], object]) -> float:
        with torch.cuda.device(self.device):  # events record on the current device's stream
            torch.cuda.synchronize(self.device)
            self.start.record()
            fn()
            self.end.record()
            self.end.synchronize()
        return self.start.elapsed_time(self.end)


def default_timer(settings: Settings) -> Timer:
    device = torch.device(settings.device)
    return CudaTimer(device) if device.type == "cuda" else CpuTimer()


def prepare(module: torch.nn.Module, settings: Settings) -> torch.nn.Module:
    """The module as deployed: eval mode, on the device, in the dtype and memory format. (Whether
    the device exists is checked here, not in `Settings`, so a table built on a GPU loads anywhere.)"""
    if settings.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"`device` {settings.device}: CUDA is not available on this machine")
    if settings.threads is not None and settings.device == "cpu":
        torch.set_num_threads(settings.threads)
    if settings.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
    return module.eval().to(device=settings.device, dtype=settings.torch_dtype, memory_format=settings.memory_format)


def samples(fn: Callable[[], object], settings: Settings, timer: Optional[Timer] = None) -> list[float]:
    """`settings.warmup` untimed calls, then `settings.repeats` timed ones (ms), under no_grad;
    a runner (`latency.ops.Runner`) runs in `settings.backend`."""
    timer = timer or default_timer(settings)
    with torch.no_grad():
        if hasattr(fn, "inputs"):
            fn = runnable(fn, settings.backend, settings.threads)
        for _ in range(settings.warmup):
            fn()
        return [timer(fn) for _ in range(settings.repeats)]


def measure(fn: Callable[[], object], settings: Settings, timer: Optional[Timer] = None) -> float:
    """Milliseconds of `fn` after warm-up: `settings.statistic` of its timed repeats."""
    return STATISTICS[settings.statistic](samples(fn, settings, timer))


def measure_many(factories: dict[Hashable, Callable[[], Callable[[], object]]], settings: Settings, passes: int = 2,
                 seed: int = 0, timer: Optional[Timer] = None, done: Optional[dict[Hashable, list[float]]] = None,
                 on_done: Optional[Callable[[Hashable, int], None]] = None, extra_passes: int = EXTRA_PASSES,
                 on_extra_pass: Optional[Callable[[int], None]] = None) -> dict[Hashable, float]:
    """Per key, the lowest of its per-pass times over `passes` passes in shuffled order, and
    over up to `extra_passes` more for the keys whose two lowest times still differ by more
    than `AGREE`: the minimum is only trusted once a second pass reproduces it, so a burst that
    spoiled both of an entry's first passes costs one more pass of that entry, not a wrong entry.

    `factories[key]()` builds the callable to time; it is built for each measurement and dropped
    after, so thousands of entries never hold their modules and inputs at once. `done` maps keys
    to per-pass times already measured (a resumed build) and is filled in place, so a caller
    can checkpoint it from `on_done(key, pass_index)`, which runs after each measurement;
    `on_extra_pass(n)` runs before each extra pass with the number of keys it will measure."""
    check_number(ValueError, "passes", passes, 1, integer=True)
    check_number(ValueError, "extra_passes", extra_passes, 0, integer=True)
    rng = random.Random(seed)
    done = {} if done is None else done
    keys = list(factories)
    for key in keys:
        done.setdefault(key, [])

    def needs(key: Hashable, p: int) -> bool:  # from the times of passes before p only: the same on resume
        return p < passes or not agree(done[key][:p])

    for p in range(passes + extra_passes):
        rng.shuffle(keys)  # the same orders whether or not a resumed run skips some keys
        todo = [key for key in keys if needs(key, p)]
        if not todo:
            break
        if p >= passes and on_extra_pass:
            on_extra_pass(sum(len(done[key]) <= p for key in todo))
        for key in todo:
            if len(done[key]) > p:
                continue
            try:
                done[key].append(measure(factories[key](), settings, timer))
            except BackendError as e:
                raise BackendError(f"{key}: the {settings.backend} backend cannot run it: {e}") from None
            if on_done:
                on_done(key, p)
    return {key: min(done[key][:passes + extra_passes]) for key in factories}


def pass_summary(done: dict[Hashable, list[float]], passes: int) -> dict:
    """How many entries took extra passes, and how many ended without two agreeing passes
    (their minimum is unconfirmed): the build's own account of how noisy its timings were."""
    return {"entries": len(done), "extra_passes": sum(len(m) > passes for m in done.values()),
            "unconfirmed": sum(not agree(m) for m in done.values())}


def agree(times: list[float]) -> bool:
    """Whether the two lowest of an entry's per-pass times are within `AGREE` of each other."""
    if len(times) < 2:
        return False
    low, second = sorted(times)[:2]
    return second <= low * (1 + AGREE)


@dataclass(frozen=True)
class Noise:
    """Spread of repeated measurements of one reference: (max - min) / min."""

    times_ms: tuple[float, ...]  # one measurement each (the settings' statistic of its repeats)

    @property
    def spread(self) -> float:
        return (max(self.times_ms) - min(self.times_ms)) / min(self.times_ms)

    @property
    def noisy(self) -> bool:
        return self.spread > NOISY_SPREAD

    def to_dict(self) -> dict:
        return {"times_ms": list(self.times_ms), "spread": round(self.spread, 4), "noisy": self.noisy}


def noise_check(fn: Callable[[], object], settings: Settings, runs: int = 5, timer: Optional[Timer] = None) -> Noise:
    """Time the same reference `runs` times; a spread above 5 % means the machine is busy."""
    return Noise(tuple(measure(fn, settings, timer) for _ in range(runs)))
