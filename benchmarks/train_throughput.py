"""Training throughput: the supernet on sampled paths vs the same archs trained standalone, and
the data loader alone (is it the bottleneck?). Prints one JSON line.

For each of `--archs` paths drawn by the uniform sampler, times full optimizer steps (forward,
backward, `preserve_off_path` + SGD step for the supernet; forward, backward, SGD step for the
extracted detector) on the same in-memory batches, interleaved, and reports images/s of both and
their ratio. Target: supernet >= 0.9x the standalone throughput.

    python benchmarks/train_throughput.py --space tiny --archs 8 --batch-size 16
    python benchmarks/train_throughput.py --space coco --device cuda --amp bf16   # the GPU-hours of configs/

With --amp the steps run under autocast as `train_supernet.py --amp` does (fp16 with its gradient
scaler), so the images/s are the ones a recipe's GPU-hours are computed from.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from torch.utils.data import DataLoader

from supernet import SearchSpace, Supernet, preserve_off_path
from supernet.batches import AugmentedDataset, StepBatchSampler
from supernet.data import CocoDetection, coco_paths, collate, to_model_input
from supernet.io import emit_result
from supernet.sampler import UniformSampler
from supernet.shapes import generate_shapes
from supernet.train_config import AMP
from supernet.trainer import AMP_DTYPES, check_amp
from supernet.errors import TrainError


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_steps(model, opt, batches, device, arch=None, amp: str | None = None) -> float:
    """Seconds per optimizer step, median over `batches` (after one warm-up step)."""
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    times = []
    for i, (images, targets) in enumerate(batches):
        sync(device)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=AMP_DTYPES.get(amp), enabled=amp is not None):
            losses = model(images, targets, arch=arch) if arch is not None else model(images, targets)
        scaler.scale(sum(losses.values())).backward()
        if arch is not None:
            with preserve_off_path(model, arch, opt):
                scaler.step(opt)
        else:
            scaler.step(opt)
        scaler.update()
        sync(device)
        if i:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", default="tiny")
    p.add_argument("--data", help="COCO 2017 layout root; default: the built-in shapes data")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--archs", type=int, default=8)
    p.add_argument("--steps", type=int, default=4, help="timed steps per arch and model")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--loader-batches", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--amp", choices=AMP, help="mixed precision, as train_supernet.py --amp")
    p.add_argument("--out", help="also write the JSON line to this file")
    args = p.parse_args()
    device = torch.device(args.device)
    try:
        check_amp(args.amp, device)
    except TrainError as e:
        p.error(str(e))
    space = SearchSpace.resolve(args.space)
    paths = coco_paths(args.data or generate_shapes("data/shapes"))
    dataset = CocoDetection(paths["train_images"], paths["train_ann"], max(space.resolutions))

    def loader(batches: int, workers: int) -> DataLoader:
        sampler = StepBatchSampler(len(dataset), args.batch_size, args.seed, 0, batches)
        return DataLoader(AugmentedDataset(dataset), batch_sampler=sampler, num_workers=workers, collate_fn=collate)

    t0 = time.perf_counter()
    n = sum(len(images) for images, _ in loader(args.loader_batches, args.workers))
    loader_rate = n / (time.perf_counter() - t0)

    batches = [
        (to_model_input(images, device), [{k: t[k].to(device) for k in ("boxes", "labels")} for t in targets])
        for images, targets in loader(args.steps + 1, 0)
    ]
    torch.manual_seed(args.seed)
    model = Supernet(space, dataset.num_classes).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=4e-5)
    sampler = UniformSampler(space, args.seed)
    per_arch = []
    for step in range(args.archs):
        arch = sampler.paths(step)[0]
        standalone = model.extract(arch).train()
        opt_s = torch.optim.SGD(standalone.parameters(), lr=1e-3, momentum=0.9, weight_decay=4e-5)
        t_super = timed_steps(model, opt, batches, device, arch, args.amp)
        t_alone = timed_steps(standalone, opt_s, batches, device, amp=args.amp)
        per_arch.append({"arch": arch.hash(), "head": arch.head.type, "resolution": arch.resolution,
                         "supernet_img_s": round(args.batch_size / t_super, 2), "standalone_img_s": round(args.batch_size / t_alone, 2),
                         "ratio": round(t_alone / t_super, 4)})
        print(f"{step + 1}/{args.archs} {per_arch[-1]}", file=sys.stderr)
    total_super = sum(args.batch_size / a["supernet_img_s"] for a in per_arch)
    total_alone = sum(args.batch_size / a["standalone_img_s"] for a in per_arch)
    result = {
        "benchmark": "train_throughput", "device": str(device), "space": args.space, "batch_size": args.batch_size, "amp": args.amp,
        "threads": torch.get_num_threads(), "archs": args.archs, "torch": torch.__version__,
        "supernet_img_s": round(args.batch_size * args.archs / total_super, 2),
        "standalone_img_s": round(args.batch_size * args.archs / total_alone, 2),
        "ratio": round(total_alone / total_super, 4),
        "median_ratio": round(statistics.median(a["ratio"] for a in per_arch), 4),
        "loader_img_s": round(loader_rate, 1), "loader_workers": args.workers, "per_arch": per_arch,
    }
    emit_result(result, args.out)


if __name__ == "__main__":
    main()
