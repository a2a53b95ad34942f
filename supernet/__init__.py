"""smnas supernet: the search space as data, the single-path detection supernet, standalone detectors."""
from .heads import PostProcess
from .path import preserve_off_path
from .space import Arch, BackboneArch, HeadArch, NeckArch, SearchSpace, StageArch
from .supernet import Detector, Supernet

__all__ = [
    "Arch", "BackboneArch", "StageArch", "NeckArch", "HeadArch", "SearchSpace",
    "Supernet", "Detector", "PostProcess", "preserve_off_path",
]
