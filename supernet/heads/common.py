"""What the one-stage heads share: the conv tower, the output layout, and post-processing."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
from timm.layers import create_act_layer
from torch import Tensor
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList

from ..layers import BatchNorm2d, Conv2d
from ..space import HeadArch
from .detections import PaddedDetections, clip_to_sizes, padded_nms

STRIDES = (8, 16, 32)


@dataclass(frozen=True)
class PostProcess:
    """Detection post-processing settings, fixed for a model (not searched)."""

    score_thresh: float = 0.05
    nms_thresh: float = 0.5
    topk_candidates: int = 1000
    detections_per_img: int = 100


DEFAULT_POST = PostProcess()


class Tower(nn.Module):
    """`num_convs` 3x3 conv + BN + act layers whose convs are shared across pyramid levels and
    whose BNs are per level (levels have different statistics; EfficientDet does the same).
    The first `num_convs` layers of the deepest build run."""

    def __init__(self, in_ch: int, width: int, num_convs: int, num_levels: int, act: str):
        super().__init__()
        self.convs = nn.ModuleList(Conv2d(in_ch if i == 0 else width, width, 3, padding=1, bias=False) for i in range(num_convs))
        self.norms = nn.ModuleList(nn.ModuleList(BatchNorm2d(width) for _ in range(num_levels)) for _ in range(num_convs))
        self.act = create_act_layer(act, inplace=True)
        for conv in self.convs:
            nn.init.normal_(conv.weight, std=0.01)

    def forward(self, features: list[Tensor], width: int, num_convs: int) -> list[Tensor]:
        outs = []
        for level, x in enumerate(features):
            for conv, norms in zip(self.convs[:num_convs], self.norms[:num_convs]):
                x = self.act(norms[level](conv(x, width)))
            outs.append(x)
        return outs


def predictor(in_ch: int, out_ch: int, bias: float = 0.0) -> Conv2d:
    conv = Conv2d(in_ch, out_ch, 3, padding=1)
    nn.init.normal_(conv.weight, std=0.01)
    nn.init.constant_(conv.bias, bias)
    return conv


def prior_bias(prior: float = 0.01) -> float:
    """Classifier bias so that every anchor starts at `prior` foreground probability (RetinaNet)."""
    return -math.log((1 - prior) / prior)


def flatten_level(x: Tensor, channels: int) -> Tensor:
    """[N, A*C, H, W] -> [N, H*W*A, C], the order torchvision's AnchorGenerator emits anchors in."""
    n, _, h, w = x.shape
    return x.view(n, -1, channels, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, channels)


def float_anchors(generator: AnchorGenerator, images: ImageList, features: list[Tensor]) -> list[Tensor]:
    """`generator`'s anchors in float32 whatever the features' dtype: it reads only their sizes,
    dtype and device, so empty float32 maps of the same sizes stand in. In bf16 a coordinate
    near 600 px moves in steps of 4 px; boxes are decoded and suppressed in float32, as deployed."""
    return generator(images, [torch.empty(f.shape[-2:], dtype=torch.float32, device=f.device) for f in features])


def anchor_generator(scale: float, aspect_ratios: tuple[float, ...], octaves: int = 1) -> AnchorGenerator:
    """Anchors of size scale x stride x 2^(i/octaves) (i < octaves) at each level."""
    sizes = tuple(tuple(scale * s * 2 ** (i / octaves) for i in range(octaves)) for s in STRIDES)
    return AnchorGenerator(sizes, (aspect_ratios,) * len(STRIDES))


class OneStageHead(nn.Module):
    """Dense head on the three neck levels: a classification and a box tower, then predictors.

    Subclasses define `predict` (tower outputs -> per-level flattened tensors), `loss`, `scores`
    and `decode` (deltas and anchors [..., 4] -> boxes [..., 4]). As torchvision's detectors,
    the work is split in two: `raw_outputs` (the networks, what a loss needs) and `postprocess`
    (decoding, top-k, NMS); `forward` returns the loss dict in training and detections (in the
    coordinates of the padded input batch) in eval.
    """

    knobs: tuple[str, ...] = ("num_convs",)  # of each tower

    def __init__(self, in_ch: int, width: int, num_convs: int, act: str, anchors: AnchorGenerator, post: PostProcess):
        super().__init__()
        self.cls_tower = Tower(in_ch, width, num_convs, len(STRIDES), act)
        self.box_tower = Tower(in_ch, width, num_convs, len(STRIDES), act)
        self.anchor_generator = anchors
        self.post = post

    def predict(self, cls_feats: list[Tensor], box_feats: list[Tensor]) -> dict[str, list[Tensor]]:
        raise NotImplementedError

    def loss(self, outputs: dict[str, Tensor], anchors: list[Tensor], targets: list[dict[str, Tensor]], num_per_level: list[int]) -> dict[str, Tensor]:
        raise NotImplementedError

    def scores(self, outputs: dict[str, Tensor]) -> Tensor:
        raise NotImplementedError

    def decode(self, deltas: Tensor, anchors: Tensor) -> Tensor:
        raise NotImplementedError

    def raw_outputs(self, features: list[Tensor], images: ImageList, arch: HeadArch) -> dict:
        """Per-level predictions, the anchors (float32) and the number of anchors per level."""
        outputs = self.predict(
            self.cls_tower(features, arch.width, arch.num_convs), self.box_tower(features, arch.width, arch.num_convs)
        )
        anchors = float_anchors(self.anchor_generator, images, features)
        return {"outputs": outputs, "anchors": anchors, "num_per_level": [o.shape[1] for o in outputs["bbox_regression"]]}

    def postprocess(self, raw: dict, images: ImageList) -> list[dict[str, Tensor]]:
        """Detections of `raw_outputs` per image, in the coordinates of the padded batch."""
        return self.postprocess_padded(raw, images).unpad()

    def postprocess_padded(self, raw: dict, images: ImageList) -> PaddedDetections:
        """The batch's detections, padded (what an export returns). Per level: the top-k
        (image, anchor, class) candidates; those over the score threshold go to class-wise NMS
        over the levels (torchvision's recipe), in float32 whatever the model's dtype
        (torchvision's CPU NMS has no bf16 kernel). The images share their anchors."""
        outputs, anchors = raw["outputs"], raw["anchors"][0]
        boxes, scores, labels = [], [], []
        for level, anchors_l in enumerate(anchors.split(raw["num_per_level"])):
            out = {k: v[level].float() for k, v in outputs.items()}
            s = self.scores(out)
            num_classes = s.shape[-1]
            s, top = s.flatten(1).topk(min(self.post.topk_candidates, s.shape[1] * num_classes), dim=1)
            idx = torch.div(top, num_classes, rounding_mode="floor")
            deltas = out["bbox_regression"].gather(1, idx[..., None].expand(-1, -1, 4))
            boxes.append(self.decode(deltas, anchors_l[idx]))
            scores.append(s)
            labels.append(top % num_classes)
        boxes, scores = clip_to_sizes(torch.cat(boxes, 1), images.image_sizes), torch.cat(scores, 1)
        return padded_nms(boxes, scores, torch.cat(labels, 1), scores > self.post.score_thresh, self.post.nms_thresh,
                          self.post.detections_per_img, num_classes)

    def forward(self, features: list[Tensor], images: ImageList, arch: HeadArch, targets: Optional[list[dict[str, Tensor]]] = None):
        raw = self.raw_outputs(features, images, arch)
        if self.training:
            return self.loss({k: torch.cat(v, 1) for k, v in raw["outputs"].items()}, raw["anchors"], targets, raw["num_per_level"])
        return self.postprocess(raw, images)
