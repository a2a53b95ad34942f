"""FCOS-style anchor-free head: per-point classification, l/t/r/b box distances and centerness."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.detection._utils import BoxLinearCoder
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

from .common import DEFAULT_POST, OneStageHead, PostProcess, anchor_generator, flatten_level, predictor, prior_bias


LEAK = 0.01  # the gradient the box distances pass below zero


def relu_leaking_gradient(x: Tensor, leak: float = LEAK) -> Tensor:
    """Exactly `relu(x)`, but below zero the gradient is `leak` instead of 0. FCOS predicts box
    distances through a ReLU (torchvision's, FCOS v2's); a distance pushed below zero then gets no
    gradient, and a box with two of them there has zero width or height for good. Trained from
    scratch on coco128 a whole head ended so, its GIoU loss at exactly 1 for 560 steps; with the
    leak the same run recovered. The output, and so every trained or exported model, is a ReLU's."""
    out = F.relu(x)
    if not (torch.is_grad_enabled() and x.requires_grad):
        return out
    return out + leak * (x - x.detach()) * (x.detach() < 0)


class FCOSHead(OneStageHead):
    """Matching follows torchvision's FCOS: a point is positive for a box if it lies inside the box,
    within `center_sampling_radius` strides of its centre, and the box's largest l/t/r/b distance
    falls in the level's range [4s, 8s] (open-ended at the first and last level); ties go to the
    smallest box. Losses: focal (classification), GIoU (boxes), BCE (centerness), each divided by
    the number of positives."""

    def __init__(self, in_ch: int, width: int, num_classes: int, act: str = "relu", anchor_scale: float = 4.0,
                 post: PostProcess = DEFAULT_POST, num_convs: int = 1, center_sampling_radius: float = 1.5):
        # the "anchor" of a point is a stride-sized box: it sets the regression scale and the ranges
        super().__init__(in_ch, width, num_convs, act, anchor_generator(1.0, (1.0,)), post)
        self.num_classes = num_classes
        self.center_sampling_radius = center_sampling_radius
        self.box_coder = BoxLinearCoder(normalize_by_size=True)
        self.cls_logits = predictor(width, num_classes, prior_bias())
        self.bbox_reg = predictor(width, 4, 1.0)  # every distance starts at one stride, as FCOS's exp(0) does: no box starts at zero size
        self.bbox_ctrness = predictor(width, 1)

    def predict(self, cls_feats: list[Tensor], box_feats: list[Tensor]) -> dict[str, list[Tensor]]:
        return {
            "cls_logits": [flatten_level(self.cls_logits(x), self.num_classes) for x in cls_feats],
            "bbox_regression": [flatten_level(relu_leaking_gradient(self.bbox_reg(x)), 4) for x in box_feats],
            "bbox_ctrness": [flatten_level(self.bbox_ctrness(x), 1) for x in box_feats],
        }

    def scores(self, out: dict[str, Tensor]) -> Tensor:
        return torch.sqrt(torch.sigmoid(out["cls_logits"]) * torch.sigmoid(out["bbox_ctrness"]))

    def decode(self, deltas: Tensor, anchors: Tensor) -> Tensor:
        return self.box_coder.decode(deltas, anchors)

    def match(self, anchors: Tensor, boxes: Tensor, num_per_level: list[int]) -> Tensor:
        """Index of the matched box per point, -1 for background."""
        if boxes.numel() == 0:
            return torch.full((anchors.shape[0],), -1, dtype=torch.int64, device=anchors.device)
        centers = (anchors[:, :2] + anchors[:, 2:]) / 2
        sizes = anchors[:, 2] - anchors[:, 0]
        gt_centers = (boxes[:, :2] + boxes[:, 2:]) / 2
        match = (centers[:, None] - gt_centers[None]).abs().amax(dim=2) < self.center_sampling_radius * sizes[:, None]
        x, y = centers[:, 0:1], centers[:, 1:2]
        dist = torch.stack([x - boxes[None, :, 0], y - boxes[None, :, 1], boxes[None, :, 2] - x, boxes[None, :, 3] - y], dim=2)
        match &= dist.amin(dim=2) > 0
        lower, upper = sizes * 4, sizes * 8
        lower[: num_per_level[0]] = 0
        upper[-num_per_level[-1]:] = float("inf")
        reach = dist.amax(dim=2)
        match &= (reach > lower[:, None]) & (reach < upper[:, None])
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        score = match.to(areas.dtype) * (1e8 - areas[None])
        best, idx = score.max(dim=1)
        idx[best < 1e-5] = -1
        return idx

    def loss(self, outputs, anchors, targets, num_per_level):
        cls_t, box_t = [], []
        for a, t in zip(anchors, targets):
            idx = self.match(a, t["boxes"], num_per_level)
            fg = idx >= 0
            onehot = torch.zeros((a.shape[0], self.num_classes), dtype=outputs["cls_logits"].dtype, device=a.device)
            onehot[fg, t["labels"][idx[fg]]] = 1.0
            cls_t.append(onehot)
            box_t.append(t["boxes"][idx.clamp(min=0)] if t["boxes"].numel() else a.new_zeros(a.shape))
            box_t[-1] = torch.where(fg[:, None], box_t[-1], a)  # background rows: harmless finite targets
        cls_t, box_t, anchors_t = torch.stack(cls_t), torch.stack(box_t), torch.stack(anchors)
        fg = cls_t.sum(-1) > 0
        num_fg = max(1.0, float(fg.sum()))
        pred_boxes = self.box_coder.decode(outputs["bbox_regression"], anchors_t)
        reg_t = self.box_coder.encode(anchors_t, box_t)
        lr, tb = reg_t[..., [0, 2]], reg_t[..., [1, 3]]
        ctr_t = torch.sqrt((lr.amin(-1) / lr.amax(-1).clamp(min=1e-6)) * (tb.amin(-1) / tb.amax(-1).clamp(min=1e-6)))
        return {
            "classification": sigmoid_focal_loss(outputs["cls_logits"], cls_t, reduction="sum") / num_fg,
            "bbox_regression": generalized_box_iou_loss(pred_boxes[fg], box_t[fg], reduction="sum") / num_fg,
            "bbox_ctrness": F.binary_cross_entropy_with_logits(
                outputs["bbox_ctrness"][..., 0][fg], ctr_t[fg].clamp(min=0), reduction="sum") / num_fg,
        }
