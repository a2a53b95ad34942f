"""Detection heads; each is elastic in tower width and number of tower convs."""
from .common import PostProcess
from .fcos import FCOSHead
from .retinanet import RetinaNetHead
from .two_stage import TwoStageHead

HEADS = {"fcos": FCOSHead, "retinanet": RetinaNetHead, "two_stage": TwoStageHead}

__all__ = ["HEADS", "PostProcess", "FCOSHead", "RetinaNetHead", "TwoStageHead"]
