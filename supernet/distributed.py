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


def end_distributed() -> None:
    """Leave torchrun's process group, every rank together: PyTorch asks each rank to destroy it
    before exiting, and a rank that exits while another still talks to gloo can abort at
    interpreter exit. Only where every rank gets alike (a finished run, or an interruption the
    ranks agreed on); never after one rank's own error, where the others would wait forever."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


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
