"""Two-stage head (Faster R-CNN style): an RPN on the neck levels, RoIAlign, a conv+FC box head.

torchvision's `RegionProposalNetwork` and `RoIHeads` do the anchor matching, proposal filtering,
RoI sampling, losses and post-processing; this module only supplies elastic sub-networks and calls
their steps with the arch's widths (their `forward` takes no such argument).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import RoIHeads, fastrcnn_loss
from torchvision.models.detection.rpn import RegionProposalNetwork, concat_box_prediction_layers
from torchvision.ops import MultiScaleRoIAlign, roi_align
from torchvision.ops.poolers import _setup_scales

from ..layers import Conv2d, ConvBnAct, Linear
from ..space import HeadArch
from .common import DEFAULT_POST, PostProcess, STRIDES, anchor_generator, float_anchors
from .detections import PaddedDetections, clip_to_sizes, padded_nms

ROI_SIZE = 7
MIN_BOX = 1e-2  # RoIHeads.postprocess_detections drops boxes narrower or lower than this


class RPNHead(nn.Module):
    """torchvision's RPN head (3x3 conv + ReLU, objectness and delta 1x1 convs) at the neck width."""

    def __init__(self, in_ch: int, num_anchors: int):
        super().__init__()
        self.conv = Conv2d(in_ch, in_ch, 3, padding=1)
        self.cls_logits = Conv2d(in_ch, num_anchors, 1)
        self.bbox_pred = Conv2d(in_ch, num_anchors * 4, 1)
        for conv in (self.conv, self.cls_logits, self.bbox_pred):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, features: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        hidden = [F.relu(self.conv(x, x.shape[1])) for x in features]
        return [self.cls_logits(h) for h in hidden], [self.bbox_pred(h) for h in hidden]


class BoxHead(nn.Module):
    """`num_convs` 3x3 conv+BN+act on the RoI features, then one FC layer of 4 x width units."""

    def __init__(self, in_ch: int, width: int, num_convs: int, act: str):
        super().__init__()
        self.convs = nn.ModuleList(ConvBnAct(in_ch if i == 0 else width, width, 3, act=act) for i in range(num_convs))
        self.fc = Linear(width * ROI_SIZE * ROI_SIZE, 4 * width)

    def forward(self, x: Tensor, width: int, num_convs: int) -> Tensor:
        for conv in self.convs[:num_convs]:
            x = conv(x, width)
        # channel-major flattening: the first `width` channels are the leading fc inputs
        return F.relu(self.fc(x.flatten(1), 4 * width))


class BoxPredictor(nn.Module):
    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.cls_score = Linear(in_features, num_classes + 1)
        self.bbox_pred = Linear(in_features, (num_classes + 1) * 4)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.cls_score(x), self.bbox_pred(x)


class TwoStageHead(nn.Module):
    """Labels outside are 0..K-1 like the other heads; inside, torchvision's RoIHeads reserves 0
    for background, so they are shifted by one on the way in and out."""

    knobs: tuple[str, ...] = ("num_convs",)  # of the box head

    def __init__(self, in_ch: int, width: int, num_classes: int, act: str = "relu", anchor_scale: float = 4.0,
                 post: PostProcess = DEFAULT_POST, num_convs: int = 1):
        super().__init__()
        # three octaves per level (as RetinaNet's): with one size per level, objects between two
        # levels' sizes match almost no anchor at IoU 0.7 and the RPN learns from ~1 positive per box
        anchors = anchor_generator(anchor_scale, (0.5, 1.0, 2.0), octaves=3)
        self.rpn = RegionProposalNetwork(
            anchors, RPNHead(in_ch, anchors.num_anchors_per_location()[0]),
            fg_iou_thresh=0.7, bg_iou_thresh=0.3, batch_size_per_image=256, positive_fraction=0.5,
            # fewer proposals and sampled RoIs than Faster R-CNN's R50 defaults (2000/1000, 512): the
            # lighter budget of mobile two-stage detectors (torchvision's *_mobilenet_* use 150-1000)
            pre_nms_top_n={"training": 2000, "testing": 1000}, post_nms_top_n={"training": 1000, "testing": 300},
            nms_thresh=0.7,
        )
        self.roi = RoIHeads(
            MultiScaleRoIAlign([str(i) for i in range(len(STRIDES))], ROI_SIZE, sampling_ratio=2),
            BoxHead(in_ch, width, num_convs, act), BoxPredictor(4 * width, num_classes),
            # 128 sampled RoIs per image (Faster R-CNN: 512): a detection image here holds a few objects,
            # and fewer background RoIs keep positives from being drowned early in training
            fg_iou_thresh=0.5, bg_iou_thresh=0.5, batch_size_per_image=128, positive_fraction=0.25, bbox_reg_weights=None,
            score_thresh=post.score_thresh, nms_thresh=post.nms_thresh, detections_per_img=post.detections_per_img,
        )

    def raw_outputs(self, features: list[Tensor], images: ImageList, arch: HeadArch) -> dict:
        """Both stages' networks, the proposal filtering between them included: the proposals
        (padded, [B, P, 4], and which are proposals, `found`), and the box head's class logits
        and box deltas for each of the B x P (float32)."""
        proposals = self._proposals(features, images)[0]
        n, p = proposals.scores.shape
        image = torch.arange(n, device=proposals.boxes.device)[:, None].expand(n, p)
        rois = torch.cat([image.reshape(-1, 1).to(proposals.boxes.dtype), proposals.boxes.reshape(-1, 4)], 1)
        class_logits, box_regression = self._box_outputs(features, images, rois, arch)
        return {"proposals": proposals.boxes, "found": proposals.found(), "class_logits": class_logits, "box_regression": box_regression}

    def postprocess(self, raw: dict, images: ImageList) -> list[dict[str, Tensor]]:
        """Detections of `raw_outputs` per image, labels 0..K-1."""
        return self.postprocess_padded(raw, images).unpad()

    def postprocess_padded(self, raw: dict, images: ImageList) -> PaddedDetections:
        """The batch's detections, padded: torchvision's `RoIHeads.postprocess_detections`
        (decode, clip, per-class score threshold, small boxes out, class-wise NMS, the best
        `detections_per_img`) for all images at once."""
        roi, (n, p) = self.roi, raw["found"].shape
        num_classes = raw["class_logits"].shape[-1] - 1
        boxes = roi.box_coder.decode_single(raw["box_regression"], raw["proposals"].reshape(-1, 4)).view(n, p, -1, 4)[:, :, 1:]
        boxes = clip_to_sizes(boxes, images.image_sizes).reshape(n, -1, 4)
        scores = F.softmax(raw["class_logits"], -1).view(n, p, -1)[:, :, 1:].reshape(n, -1)
        labels = torch.arange(num_classes, device=scores.device).repeat(p)[None].expand_as(scores)
        wh = boxes[..., 2:] - boxes[..., :2]
        found = raw["found"][..., None].expand(-1, -1, num_classes).reshape(n, -1)
        valid = found & (scores > roi.score_thresh) & (wh[..., 0] >= MIN_BOX) & (wh[..., 1] >= MIN_BOX)
        return padded_nms(boxes, scores, labels, valid, roi.nms_thresh, roi.detections_per_img, num_classes)

    def forward(self, features: list[Tensor], images: ImageList, arch: HeadArch, targets: Optional[list[dict[str, Tensor]]] = None):
        if not self.training:
            return self.postprocess(self.raw_outputs(features, images, arch), images)
        rpn = self.rpn
        proposals, objectness, deltas, anchors = self._proposals(features, images)
        labels, matched = rpn.assign_targets_to_anchors(anchors, targets)
        loss_obj, loss_rpn_box = rpn.compute_loss(objectness, deltas, labels, rpn.box_coder.encode(matched, anchors))
        shifted = [{"boxes": t["boxes"], "labels": t["labels"] + 1} for t in targets]
        proposals, _, labels, regression_targets = self.roi.select_training_samples([d["boxes"] for d in proposals.unpad()], shifted)
        rois = torch.cat([torch.cat([p.new_full((len(p), 1), i), p], 1) for i, p in enumerate(proposals)])
        class_logits, box_regression = self._box_outputs(features, images, rois, arch)
        loss_cls, loss_box = fastrcnn_loss(class_logits, box_regression, labels, regression_targets)
        return {"loss_objectness": loss_obj, "loss_rpn_box_reg": loss_rpn_box, "loss_classifier": loss_cls, "loss_box_reg": loss_box}

    def _proposals(self, features: list[Tensor], images: ImageList) -> tuple[PaddedDetections, Tensor, Tensor, list[Tensor]]:
        """The RPN's proposals, padded (boxes, objectness probabilities), and its objectness,
        deltas and anchors (what its loss needs). torchvision's `filter_proposals` for all
        images at once: the top-k per level, clipped, small and low-scoring boxes out, NMS per
        level, the best `post_nms_top_n`. Proposals are float32 whatever the dtype."""
        rpn = self.rpn
        objectness, deltas = rpn.head(features)
        anchors = float_anchors(rpn.anchor_generator, images, features)
        num_per_level = [o[0].numel() for o in objectness]
        objectness, deltas = (t.float() for t in concat_box_prediction_layers(objectness, deltas))
        n = features[0].shape[0]
        boxes = rpn.box_coder.decode_single(deltas.detach(), anchors[0].expand(n, -1, -1).reshape(-1, 4)).view(n, -1, 4)
        scores = objectness.detach().view(n, -1)
        top = rpn._get_top_n_idx(scores, num_per_level)
        levels = torch.cat([torch.full((k,), i, dtype=torch.int64, device=scores.device) for i, k in enumerate(num_per_level)])[top]
        scores = torch.sigmoid(scores.gather(1, top))
        boxes = clip_to_sizes(boxes.gather(1, top[..., None].expand(-1, -1, 4)), images.image_sizes)
        wh = boxes[..., 2:] - boxes[..., :2]
        valid = (wh[..., 0] >= rpn.min_size) & (wh[..., 1] >= rpn.min_size) & (scores >= rpn.score_thresh)
        proposals = padded_nms(boxes, scores, levels, valid, rpn.nms_thresh, rpn.post_nms_top_n(), len(num_per_level))
        return proposals, objectness, deltas, anchors

    def _box_outputs(self, features: list[Tensor], images: ImageList, rois: Tensor, arch: HeadArch) -> tuple[Tensor, Tensor]:
        """The second stage on `rois` [N, 5] (image index, x1, y1, x2, y2): multi-scale RoIAlign
        (torchvision's `MultiScaleRoIAlign` levels and scales, given image indices instead of a
        list per image), box head, predictor (float32 outputs)."""
        pool = self.roi.box_roi_pool
        # RoIAlign wants one dtype for features and boxes, and has no bf16 kernel: pool bf16 in float32
        dtype = features[0].dtype
        maps = [f.to(torch.float32 if dtype == torch.bfloat16 else dtype) for f in features]
        rois = rois.to(maps[0].dtype)
        # the level scales follow from the padded batch size, which is exact
        scales, level_of = _setup_scales(maps, [tuple(images.tensors.shape[-2:])], pool.canonical_scale, pool.canonical_level)
        levels = level_of([rois[:, 1:]])
        x = maps[0].new_zeros((rois.shape[0], maps[0].shape[1], ROI_SIZE, ROI_SIZE))
        for level, (f, scale) in enumerate(zip(maps, scales)):
            idx = torch.where(levels == level)[0]
            x = x.index_put((idx,), roi_align(f, rois[idx], ROI_SIZE, spatial_scale=scale, sampling_ratio=pool.sampling_ratio))
        class_logits, box_regression = self.roi.box_predictor(self.roi.box_head(x.to(dtype), arch.width, arch.num_convs))
        return class_logits.float(), box_regression.float()
