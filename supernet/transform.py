"""Letterbox preprocessing: each image is scaled so its longer side is the arch's resolution,
normalised, and padded (bottom/right) into an R x R batch; detections are mapped back."""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch.nn.functional as F
from torch import Tensor
from torchvision.models.detection.image_list import ImageList

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Images = Union[Tensor, Sequence[Tensor]]


def letterbox(images: Images, resolution: int, targets: Optional[list[dict[str, Tensor]]] = None):
    """Return (ImageList of [N, 3, R, R], targets with boxes scaled, per-image (scale, (H, W))).

    Images are float [3, H, W] in [0, 1] (torchvision's convention), as a list or a batch tensor.
    An image whose longer side already is R is not resampled (the data loader usually did it)."""
    if isinstance(images, Tensor) and images.dim() == 3:
        images = [images]
    if len(images) == 0:
        raise ValueError("images: expected at least one image")
    first = images[0]
    batch = first.new_zeros((len(images), 3, resolution, resolution))
    sizes, meta = [], []
    for i, img in enumerate(images):
        if img.dim() != 3 or img.shape[0] != 3:
            raise ValueError(f"images[{i}]: expected a float tensor [3, H, W], got shape {tuple(img.shape)}")
        h, w = img.shape[-2:]
        scale = resolution / max(h, w)
        if scale != 1.0:
            nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
            img = F.interpolate(img[None], size=(nh, nw), mode="bilinear", align_corners=False, antialias=scale < 1)[0]
        else:
            nh, nw = h, w
        batch[i, :, :nh, :nw] = normalize(img)  # the padding stays 0, the mean colour
        sizes.append((int(nh), int(nw)))
        meta.append((nw / w, nh / h, (int(h), int(w))))
    if targets is not None:
        targets = [{**t, "boxes": _scale_boxes(t["boxes"], sx, sy)} for t, (sx, sy, _) in zip(targets, meta)]
    return ImageList(batch, sizes), targets, meta


def letterbox_image(image: Tensor, resolution: int) -> tuple[Tensor, float]:
    """(input [1, 3, R, R] for the exported model, scale): divide its boxes by `scale` and clip
    them to the image's width and height to get back to `image`'s pixels. `image` is a float [3, H, W] in [0, 1]; resampled as the detector
    does it (bilinear, antialiased when shrinking)."""
    if image.dim() != 3 or image.shape[0] != 3 or not image.is_floating_point():
        raise ValueError(f"image: expected a float tensor [3, H, W] in [0, 1], got {tuple(image.shape)} {image.dtype}")
    h, w = image.shape[-2:]
    scale = resolution / max(h, w)
    if scale != 1.0:
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=scale < 1)[0]
    out = image.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1).expand(1, 3, resolution, resolution).clone()
    out[0, :, : image.shape[1], : image.shape[2]] = image
    return out, scale


def normalize(images: Tensor) -> Tensor:
    """[..., 3, H, W] in [0, 1] -> (x - mean) / std, the input the backbones are trained on."""
    mean, std = images.new_tensor(IMAGENET_MEAN).view(3, 1, 1), images.new_tensor(IMAGENET_STD).view(3, 1, 1)
    return (images - mean) / std


def _scale_boxes(boxes: Tensor, sx: float, sy: float) -> Tensor:
    return boxes * boxes.new_tensor([sx, sy, sx, sy])


def restore(detections: list[dict[str, Tensor]], meta: list) -> list[dict[str, Tensor]]:
    """Map boxes from the letterboxed batch back to each input image's coordinates."""
    out = []
    for det, (sx, sy, (h, w)) in zip(detections, meta):
        boxes = _scale_boxes(det["boxes"], 1 / sx, 1 / sy)
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
        out.append({**det, "boxes": boxes})
    return out
