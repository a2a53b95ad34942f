"""Supernet overhead: wall time of one path through the supernet vs. the same arch extracted.

For `--archs` seeded random archs, times a training step (forward + backward of the summed losses,
`zero_grad(set_to_none=True)` before each) and an inference forward (eval mode, `torch.no_grad`)
on `Supernet(..., arch=arch)` and on `Supernet.extract(arch)`, same synthetic batch (square images
at the arch's resolution, so no resize, with a few random boxes each), same device. Each
(arch, model) is warmed up, then supernet and extracted runs alternate (A/B/A/B) and the median of
the repeats is taken. Per arch, ratio = supernet time / extracted time. `*_ratio_min` use each
model's fastest repeat instead: far less sensitive to other processes competing for the CPU.
Target: median ratio <= 1.10 for both train and infer, on CPU and on GPU.

Prints one JSON line to stdout (progress on stderr):
    python benchmarks/supernet_overhead.py --space tiny --archs 20 --out benchmarks/results/x.json
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from supernet import SearchSpace, Supernet
from supernet.io import emit_result


def make_batch(arch, batch_size: int, num_classes: int, seed: int, device: torch.device):
    g = torch.Generator().manual_seed(seed)
    r = arch.resolution
    images, targets = [], []
    for _ in range(batch_size):
        images.append(torch.rand(3, r, r, generator=g))
        k = int(torch.randint(1, 5, (1,), generator=g))
        xy = torch.rand(k, 2, generator=g) * 0.6 * r
        wh = (0.1 + 0.3 * torch.rand(k, 2, generator=g)) * r
        boxes = torch.cat([xy, (xy + wh).clamp(max=r)], 1)
        targets.append({"boxes": boxes.to(device), "labels": torch.randint(0, num_classes, (k,), generator=g).to(device)})
    return [im.to(device) for im in images], targets


def timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def compare(model, det, arch, images, targets, args, device) -> dict:
    """Seconds of each repeat, per phase, for the supernet path (A) and the extracted detector (B)."""
    runners = {"supernet": lambda *a: model(*a, arch=arch), "extracted": lambda *a: det(*a)}

    def train_step(name):
        m = model if name == "supernet" else det
        m.zero_grad(set_to_none=True)
        return timed(lambda: sum(runners[name](images, targets).values()).backward(), device)

    def infer_step(name):
        with torch.no_grad():
            return timed(lambda: runners[name](images), device)

    out = {}
    for phase, step, train in (("train", train_step, True), ("infer", infer_step, False)):
        model.train(train), det.train(train)
        for _ in range(args.warmup):
            step("supernet"), step("extracted")
        times = {"supernet": [], "extracted": []}
        for _ in range(args.repeats):
            for name in ("supernet", "extracted"):  # interleaved A/B/A/B
                times[name].append(step(name))
        out[phase] = times
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="tiny", help="tiny | coco | path to a .yaml/.json space")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--archs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--num-classes", type=int, default=3)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON line to this file")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    try:
        space = SearchSpace.resolve(args.space)
    except ValueError as e:
        p.error(str(e))
    model = Supernet(space, args.num_classes).to(device)
    rng = random.Random(args.seed)
    per_arch, t_start, load_start = [], time.perf_counter(), os.getloadavg()[0]
    for i in tqdm(range(args.archs), desc="archs", file=sys.stderr):
        arch = space.sample(rng)
        det = model.extract(arch)
        images, targets = make_batch(arch, args.batch_size, args.num_classes, args.seed * 100003 + i, device)
        times = compare(model, det, arch, images, targets, args, device)
        entry = {"arch": arch.hash(), "resolution": arch.resolution, "neck": arch.neck.type, "head": arch.head.type}
        for ph, t in times.items():
            ms = {k: 1e3 * statistics.median(v) for k, v in t.items()}
            entry[f"{ph}_ms"] = {k: round(v, 3) for k, v in ms.items()}
            entry[f"{ph}_ratio"] = round(ms["supernet"] / ms["extracted"], 4)
            entry[f"{ph}_ratio_min"] = round(min(t["supernet"]) / min(t["extracted"]), 4)
        per_arch.append(entry)
        del det
    ratios = {f"{ph}_ratio{m}": [a[f"{ph}_ratio{m}"] for a in per_arch] for ph in ("train", "infer") for m in ("", "_min")}
    result = {
        "device": str(device) if device.type != "cuda" else f"{device} ({torch.cuda.get_device_name(device)})",
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "space": args.space, "batch_size": args.batch_size, "num_archs": args.archs,
        "threads": torch.get_num_threads(), "repeats": args.repeats, "warmup": args.warmup, "seed": args.seed,
        "torch": torch.__version__,
        **{f"median_{k}": round(float(np.median(r)), 4) for k, r in ratios.items()},
        **{f"p90_{k}": round(float(np.percentile(r, 90)), 4) for k, r in ratios.items()},
        "wall_s": round(time.perf_counter() - t_start, 1),
        # 1-min load average: well above `threads` means other processes competed for the CPU
        "loadavg_start_end": [round(load_start, 2), round(os.getloadavg()[0], 2)],
        "per_arch": per_arch,
    }
    emit_result(result, args.out)


if __name__ == "__main__":
    main()
