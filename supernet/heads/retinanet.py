"""RetinaNet-style anchor-based head: 9 anchors per location, focal loss, L1 box loss."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.detection._utils import BoxCoder, Matcher
from torchvision.ops import box_iou, sigmoid_focal_loss

from .common import DEFAULT_POST, OneStageHead, PostProcess, anchor_generator, flatten_level, predictor, prior_bias

ASPECT_RATIOS = (0.5, 1.0, 2.0)
OCTAVES = 3


class RetinaNetHead(OneStageHead):
    """Anchors of 3 octaves x 3 aspect ratios per location, matched with torchvision's `Matcher`
    (IoU >= 0.5 positive, < 0.4 negative, in between ignored, best anchor of each box kept);
    focal loss over non-ignored anchors and L1 on `BoxCoder` deltas of positives, both divided by
    the number of positives of the image, then averaged over images (torchvision's recipe)."""

    def __init__(self, in_ch: int, width: int, num_classes: int, act: str = "relu", anchor_scale: float = 4.0,
                 post: PostProcess = DEFAULT_POST, num_convs: int = 1):
        super().__init__(in_ch, width, num_convs, act, anchor_generator(anchor_scale, ASPECT_RATIOS, OCTAVES), post)
        self.num_classes = num_classes
        self.num_anchors = len(ASPECT_RATIOS) * OCTAVES
        self.box_coder = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))
        self.matcher = Matcher(0.5, 0.4, allow_low_quality_matches=True)
        self.cls_logits = predictor(width, self.num_anchors * num_classes, prior_bias())
        self.bbox_reg = predictor(width, self.num_anchors * 4)

    def predict(self, cls_feats: list[Tensor], box_feats: list[Tensor]) -> dict[str, list[Tensor]]:
        return {
            "cls_logits": [flatten_level(self.cls_logits(x), self.num_classes) for x in cls_feats],
            "bbox_regression": [flatten_level(self.bbox_reg(x), 4) for x in box_feats],
        }

    def scores(self, out: dict[str, Tensor]) -> Tensor:
        return torch.sigmoid(out["cls_logits"])

    def decode(self, deltas: Tensor, anchors: Tensor) -> Tensor:
        return self.box_coder.decode_single(deltas.reshape(-1, 4), anchors.reshape(-1, 4)).view(deltas.shape)

    def loss(self, outputs, anchors, targets, num_per_level):
        cls_losses, box_losses = [], []
        for logits, deltas, a, t in zip(outputs["cls_logits"], outputs["bbox_regression"], anchors, targets):
            if t["boxes"].numel() == 0:
                idx = torch.full((a.shape[0],), Matcher.BELOW_LOW_THRESHOLD, dtype=torch.int64, device=a.device)
            else:
                idx = self.matcher(box_iou(t["boxes"], a))
            fg = idx >= 0
            num_fg = max(1, int(fg.sum()))
            target = torch.zeros_like(logits)
            target[fg, t["labels"][idx[fg]]] = 1.0
            valid = idx != Matcher.BETWEEN_THRESHOLDS
            cls_losses.append(sigmoid_focal_loss(logits[valid], target[valid], reduction="sum") / num_fg)
            reg_t = self.box_coder.encode_single(t["boxes"][idx[fg]], a[fg])
            box_losses.append(F.l1_loss(deltas[fg], reg_t, reduction="sum") / num_fg)
        n = len(targets)
        return {"classification": sum(cls_losses) / n, "bbox_regression": sum(box_losses) / n}
