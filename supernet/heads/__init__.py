"""Detection heads; each is elastic in tower width and number of tower convs."""
from ..registry import register_head
from .common import PostProcess
from .fcos import FCOSHead
from .retinanet import RetinaNetHead
from .two_stage import TwoStageHead

register_head("fcos", FCOSHead)
register_head("retinanet", RetinaNetHead)
register_head("two_stage", TwoStageHead)

__all__ = ["PostProcess", "FCOSHead", "RetinaNetHead", "TwoStageHead"]
