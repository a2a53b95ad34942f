"""`smnas info --space tiny|coco|PATH`: what a search space holds, as one JSON object.

Builds the supernet, runs the smallest and the largest architecture on a random image in eval
mode, extracts each as a standalone detector and checks it gives the same detections."""
from __future__ import annotations

import json
import sys

import torch

from . import SearchSpace, Supernet
from .cli import CommandParser, error_message


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def info(space: SearchSpace, num_classes: int, seed: int) -> dict:
    torch.manual_seed(seed)
    model = Supernet(space, num_classes).eval()
    report = {"space_size": space.size(), "supernet_params": _count(model), "archs": {}}
    for name, arch in (("smallest", space.smallest()), ("largest", space.largest())):
        image = torch.rand(3, arch.resolution, arch.resolution)
        det = model.extract(arch)
        with torch.no_grad():
            a, b = model([image], arch=arch)[0], det([image])[0]
        same = a["boxes"].shape == b["boxes"].shape and torch.allclose(a["boxes"], b["boxes"], atol=1e-4)
        report["archs"][name] = {"hash": arch.hash(), "params": _count(det), "extract_matches": bool(same), "arch": arch.to_dict()}
    return report


def main(argv: list[str] | None = None, prog: str = "python -m supernet info") -> int:
    p = CommandParser(prog=prog, description=__doc__)
    p.add_argument("--space", default="tiny", help="preset name (tiny, coco) or a .yaml/.json space file")
    p.add_argument("--num-classes", type=int, default=80)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        space = SearchSpace.resolve(args.space)
    except ValueError as e:
        print(error_message(e), file=sys.stderr)
        return 2
    print(json.dumps(info(space, args.num_classes, args.seed)))
    return 0


if __name__ == "__main__":  # python -m supernet info ...
    sys.exit(main(sys.argv[2:] if sys.argv[1:2] == ["info"] else sys.argv[1:]))
