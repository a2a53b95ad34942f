"""The process group and device of a run: torchrun's environment, or a single process."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import TrainError


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
            raise TrainError(f"`device` {spec}: CUDA is not available on this machine")
        index = dist_info.local_rank if spec == "cuda" else spec.split(":")[1]
        if not str(index).isdigit():
            raise TrainError(f"`device`: expected cpu, cuda or cuda:N, got {spec!r}")
        index = int(index)
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    if spec != "cpu":
        raise TrainError(f"`device`: expected cpu, cuda or cuda:N, got {spec!r}")
    return torch.device("cpu")
