"""Post-processing of a whole batch at once, into detections padded to a fixed count per image.

No step loops over the images in Python, so a traced graph (TorchScript, ONNX) keeps its batch
axis dynamic, and the padded layout (boxes [B, D, 4], scores [B, D], labels [B, D], counts [B])
is the one deployment runtimes use (TensorRT's EfficientNMS plugin: boxes, scores, classes,
num_detections).
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch import Tensor
from torchvision.ops import boxes as box_ops


class PaddedDetections(NamedTuple):
    """Image i's detections are the first `counts[i]` rows of its boxes, scores and labels, best
    first; the rows after them are padding (boxes and scores 0, labels -1)."""

    boxes: Tensor  # [B, D, 4] x1, y1, x2, y2
    scores: Tensor  # [B, D]
    labels: Tensor  # [B, D] int64
    counts: Tensor  # [B] int64

    def unpad(self) -> list[dict[str, Tensor]]:
        """Per image {"boxes", "scores", "labels"}: the detectors' eager output."""
        return [{"boxes": b[:n], "scores": s[:n], "labels": lab[:n]}
                for b, s, lab, n in zip(self.boxes, self.scores, self.labels, self.counts.tolist())]

    def found(self) -> Tensor:
        """[B, D] bool: which rows are detections, not padding."""
        return torch.arange(self.scores.shape[1], device=self.scores.device)[None] < self.counts[:, None]


def clip_to_sizes(boxes: Tensor, image_sizes: Sequence[tuple[int, int]]) -> Tensor:
    """`boxes` [B, ..., 4] clipped to image i's (H, W). One size for every image (an exported
    graph's R x R input passes one) stays a constant of the graph, whatever the batch."""
    if len(set(image_sizes)) == 1:
        return box_ops.clip_boxes_to_image(boxes, image_sizes[0])
    bound = boxes.new_tensor([[w, h, w, h] for h, w in image_sizes]).view(len(image_sizes), *([1] * (boxes.dim() - 2)), 4)
    return boxes.clamp(min=0).minimum(bound)


def padded_nms(boxes: Tensor, scores: Tensor, labels: Tensor, valid: Tensor, iou_threshold: float,
               per_image: int, num_labels: int) -> PaddedDetections:
    """NMS per image and label among the `valid` candidates (boxes [B, K, 4]; scores, labels and
    valid [B, K]; labels in [0, num_labels)), then each image's best `per_image`: what
    torchvision's detectors do image by image (`batched_nms`, then the first `per_image` kept),
    done for the batch in one NMS call, images kept apart as labels are."""
    k = scores.shape[1]
    candidates = torch.where(valid.flatten())[0]
    image, label = torch.div(candidates, k, rounding_mode="floor"), labels.flatten()[candidates]
    if torch.jit.is_tracing() or torch.compiler.is_exporting():
        keep = _nms_shifted_apart(boxes, boxes.flatten(0, 1)[candidates], scores.flatten()[candidates], image, label, iou_threshold)
    else:  # torchvision's choice per device and size (on a CPU, many boxes: one NMS per group)
        keep = box_ops.batched_nms(boxes.flatten(0, 1)[candidates], scores.flatten()[candidates], image * num_labels + label, iou_threshold)
    kept = torch.zeros_like(scores).flatten().scatter(0, candidates[keep], torch.ones_like(keep, dtype=scores.dtype)).view_as(scores) > 0
    ranked, top = torch.where(kept, scores, -1.0).topk(min(per_image, k), dim=1)  # scores are >= 0: kept rows first
    found = kept.gather(1, top)
    return PaddedDetections(
        boxes.gather(1, top[..., None].expand(-1, -1, 4)) * found[..., None],
        torch.where(found, ranked, 0.0),
        torch.where(found, labels.gather(1, top), -1),
        found.sum(1),
    )


def _nms_shifted_apart(all_boxes: Tensor, boxes: Tensor, scores: Tensor, image: Tensor, label: Tensor, iou_threshold: float) -> Tensor:
    """One NMS call in which boxes of different labels cannot overlap, shifted apart along x, nor
    boxes of different images, shifted apart along y. torchvision's coordinate trick shifts every
    group along one diagonal; over images x labels (B x 80) that reaches coordinates where float32
    steps are a sizeable part of a pixel. A graph has no data-dependent branch this way (the
    shift's span comes from `all_boxes`, every candidate's, which is never empty)."""
    low, span = all_boxes.min(), all_boxes.max() - all_boxes.min() + 1
    shift = torch.stack([label, image], -1).repeat(1, 2).to(boxes.dtype) * span
    return box_ops.nms(boxes - low + shift, scores, iou_threshold)
