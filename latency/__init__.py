"""Latency of subnets on a target device: measurement, the per-device lookup table, FLOPs/params."""
from .measure import CpuTimer, CudaTimer, Noise, Settings, measure, measure_many, noise_check, prepare, samples
from .ops import Op, OpContext, arch_ops, space_ops
from .table import Correction, LatencyTable, TableError, build_table

__all__ = [
    "CpuTimer", "CudaTimer", "Noise", "Settings", "measure", "measure_many", "noise_check", "prepare", "samples",
    "Op", "OpContext", "arch_ops", "space_ops", "Correction", "LatencyTable", "TableError", "build_table",
]
