"""Latency of subnets on a target device: measurement now; the lookup table is built on it."""
from .measure import CpuTimer, CudaTimer, Noise, Settings, measure, measure_many, noise_check, prepare, samples

__all__ = ["CpuTimer", "CudaTimer", "Noise", "Settings", "measure", "measure_many", "noise_check", "prepare", "samples"]
