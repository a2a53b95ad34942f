"""The single-path detection supernet and the standalone detectors cut out of it."""
from __future__ import annotations

import functools
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torch.nn as nn
from torch import Tensor
from torchvision.models.detection.image_list import ImageList

from .backbone import Backbone, block_positions
from .heads import PostProcess
from .heads.detections import PaddedDetections
from .io import atomic_torch_save, load_failure
from .layers import ConvBnAct, group_norm, leading_slice
from .registry import component, knobs
from .space import Arch, HeadArch, NeckArch, SearchSpace
from .transform import Images, letterbox, normalize, restore


class Supernet(nn.Module):
    """Every backbone, neck and head option of `space` in one module; `forward(..., arch=...)` runs
    exactly one path.

    Follows torchvision's detection convention: `images` is a list of float [3, H, W] tensors in
    [0, 1] (or one batch tensor); in train mode `targets` (a list of dicts with `boxes` [K, 4] xyxy
    in image pixels and `labels` [K] in 0..num_classes-1) is required and a dict of losses is
    returned; in eval mode a list of {"boxes", "labels", "scores"} in input-image coordinates.

    Weight sharing (see `layers.py` for why widths are elastic): block types, neck and head types
    hold separate candidates; widths use the leading channels of the widest weights; depths,
    repeats and tower convs use the leading layers. Candidates off the path are never called, so
    they cost nothing and their `.grad` stays None; for the partly used weights of elastic layers,
    `preserve_off_path` keeps an optimizer step (weight decay, momentum) off the unused part.
    """

    def __init__(self, space: SearchSpace, num_classes: int, post: Optional[PostProcess] = None, drop_path: float = 0.0):
        super().__init__()
        self.space = space
        _build_parts(self, space, num_classes, post, drop_path, path=None)

    def forward(self, images: Images, targets: Optional[list[dict[str, Tensor]]] = None, arch: Optional[Arch] = None) -> Any:
        if arch is None:
            raise TypeError("Supernet.forward: pass arch=<Arch> (the path to run); see SearchSpace.sample()")
        self.space.validate(arch)
        return _run_path(self, images, targets, arch)

    # ---- standalone detectors ---------------------------------------------------------------
    def detector_config(self, arch: Arch) -> dict:
        """Everything besides weights that `Detector.from_config` needs for `arch`: plain values only."""
        return detector_config(arch, self.num_classes, self.space.activation, self.space.head.anchor_scale, self.post, self.space.norm)

    def extract(self, arch: Arch) -> "Detector":
        """A standalone `Detector` of `arch` holding copies of this path's weights, cut to width.

        The detector is built by the same parts on the space containing `arch`, so each of its
        state-dict entries has the same name as the supernet entry it comes from and is its
        leading slice: extraction is a copy by name. It is returned on this supernet's device and
        in its train/eval mode; its outputs equal `self(images, arch=arch)` in eval mode.
        """
        self.space.validate(arch)
        ref = next(self.parameters())
        det = Detector.from_config(self.detector_config(arch)).to(device=ref.device, dtype=ref.dtype)
        src = self.state_dict()
        with torch.no_grad():
            for name, t in det.state_dict().items():
                t.copy_(src[name][leading_slice(t.shape)])
        return det.train(self.training)

    def path_shapes(self, arch: Arch) -> dict[str, tuple[int, ...]]:
        """Name -> used (leading) shape of every parameter on `arch`'s path; other parameters are
        not used. Called every training step, so it is assembled from cached shapes of each part
        (stem, each block, neck, head) built on the meta device, not from a whole detector; a
        test checks it against the parameters of `extract(arch)`."""
        self.space.validate(arch)
        act, bb = self.space.activation, arch.backbone
        shapes = _prefixed("backbone.stem", _param_shapes(ConvBnAct, 3, bb.stem_width, 3, 2, act=act))
        for s, i, cin, cout, stride in block_positions(bb.stem_width, [(st.width, st.depth) for st in bb.stages]):
            name = bb.stages[s].blocks[i]
            shapes.update(_prefixed(f"backbone.stages.{s}.{i}.{name}", _param_shapes(component("block", name), cin, cout, stride, act=act)))
        in_channels = tuple(st.width for st in bb.stages[-len(self.backbone.out_channels):])
        neck, head = arch.neck, arch.head
        shapes.update(_prefixed(f"neck.{neck.type}", _param_shapes(component("neck", neck.type), in_channels, neck.width, act=act,
                                                                   **knob_values(neck, "neck"))))
        shapes.update(_prefixed(f"head.{head.type}", _param_shapes(component("head", head.type), neck.width, head.width, self.num_classes,
                                                                   act=act, **knob_values(head, "head"))))
        return shapes


class Detector(nn.Module):
    """A standalone detector: exactly one architecture, widths physically cut, no unused weights.

    Built by the same parts as the supernet, on the smallest space that contains `arch`
    (`SearchSpace.containing`) and with only `arch`'s blocks, so it holds exactly the modules of
    that path at their exact widths (each elastic layer runs its plain torch forward) under the
    supernet's state-dict names. `forward(images, targets=None)` follows the supernet's
    convention; `arch=` may be passed but must be this detector's own. Save/load with
    `save`/`load`: the file holds the state dict and the config (arch JSON included), and loads
    with only this library.
    """

    def __init__(self, arch: Arch, num_classes: int, activation: str = "relu", anchor_scale: float = 4.0,
                 post: Optional[PostProcess] = None, drop_path: float = 0.0, classes: Optional[Sequence[dict]] = None,
                 norm: str = "bn"):
        super().__init__()
        self.arch = arch
        self.space = SearchSpace.containing(arch, activation, anchor_scale, norm)
        _build_parts(self, self.space, num_classes, post, drop_path, path=arch)
        self.classes = check_classes(classes, num_classes)

    def path_shapes(self, arch: Arch) -> dict[str, tuple[int, ...]]:
        """Every parameter, whole: a standalone detector has nothing off its path."""
        self._check_own(arch)
        return {name: tuple(p.shape) for name, p in self.named_parameters()}

    def _check_own(self, arch: Optional[Arch]) -> None:
        if arch is not None and arch != self.arch:
            raise ValueError(f"arch: this Detector is {self.arch.hash()}; got a different arch {arch.hash()}")

    @classmethod
    def from_config(cls, config: dict) -> "Detector":
        try:
            arch = Arch.from_dict(config["arch"])
            post = PostProcess(**config.get("post", {}))
            return cls(arch, config["num_classes"], config.get("activation", "relu"), config.get("anchor_scale", 4.0), post,
                       classes=config.get("classes"), norm=config.get("norm", "bn"))
        except (KeyError, TypeError) as e:
            raise ValueError(f"detector config: missing or malformed field ({e})") from None

    def config(self) -> dict:
        config = detector_config(self.arch, self.num_classes, self.space.activation, self.space.head.anchor_scale, self.post, self.space.norm)
        return {**config, **({"classes": self.classes} if self.classes else {})}

    def forward(self, images: Images, targets: Optional[list[dict[str, Tensor]]] = None, arch: Optional[Arch] = None) -> Any:
        self._check_own(arch)
        return _run_path(self, images, targets, self.arch)

    def save(self, path: str | Path) -> None:
        """Write {"config", "state_dict"} atomically; loads with `torch.load(weights_only=True)`."""
        atomic_torch_save({"config": self.config(), "state_dict": self.state_dict()}, path)

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu") -> "Detector":
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"{path}: detector file not found")
        try:
            blob = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as e:  # corrupt or not a torch file
            raise ValueError(f"{path}: not a readable detector file ({load_failure(e)})") from None
        if not isinstance(blob, dict) or "config" not in blob or "state_dict" not in blob:
            raise ValueError(f"{path}: expected a dict with 'config' and 'state_dict' (written by Detector.save)")
        det = cls.from_config(blob["config"])
        det.load_state_dict(blob["state_dict"])
        return det.to(map_location)


def detector_config(arch: Arch, num_classes: int, activation: str, anchor_scale: float, post: PostProcess, norm: str = "bn") -> dict:
    """Everything besides weights that `Detector.from_config` needs: plain values only (`norm`
    only when not BatchNorm: files written before GroupNorm existed read the same)."""
    return {"arch": arch.to_dict(), "num_classes": num_classes, "activation": activation, "anchor_scale": anchor_scale, "post": asdict(post),
            **({"norm": norm} if norm != "bn" else {})}


def _build_parts(model: nn.Module, space: SearchSpace, num_classes: int, post: Optional[PostProcess], drop_path: float,
                 path: Optional[Arch]) -> None:
    """Give `model` the backbone, necks and heads of `space` at its widest: every candidate, or
    with `path` only that path's block at each position (a standalone detector)."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes: expected a positive integer, got {num_classes!r}")
    model.num_classes, model.post, model.drop_path = num_classes, post or PostProcess(), drop_path
    act = space.activation
    model.backbone = Backbone(space.backbone, act, drop_path, path.backbone if path else None)
    neck_width, head_width = max(space.neck.widths), max(space.head.widths)
    model.neck = nn.ModuleDict(
        {t: component("neck", t)(model.backbone.out_channels, neck_width, act=act, **_widest(space, "neck", t)) for t in space.neck.types}
    )
    model.head = nn.ModuleDict({
        t: component("head", t)(neck_width, head_width, num_classes, act=act, anchor_scale=space.head.anchor_scale, post=model.post,
                                **_widest(space, "head", t))
        for t in space.head.types
    })
    if space.norm == "gn":
        group_norm(model)


def _run_path(model: nn.Module, images: Images, targets: Optional[list[dict[str, Tensor]]], arch: Arch) -> Any:
    """`arch`'s path through `model`'s parts: losses in train mode, detections in eval mode."""
    if model.training:
        _check_targets(targets, model.num_classes, 1 if isinstance(images, Tensor) and images.dim() == 3 else len(images))
    batch, targets, meta = letterbox(images, arch.resolution, targets)
    out = model.head[arch.head.type](_features(model, batch.tensors, arch), batch, arch.head, targets)
    return out if model.training else restore(out, meta)


def _features(model: nn.Module, batch: Tensor, arch: Arch) -> list[Tensor]:
    features = model.backbone(batch, arch.backbone)
    return model.neck[arch.neck.type](features, arch.neck.width, **knob_values(arch.neck, "neck"))


def detect_padded(model: nn.Module, batch: Tensor, arch: Arch) -> PaddedDetections:
    """`arch`'s detections on a batch already letterboxed to [B, 3, R, R] in [0, 1]
    (`supernet.export.letterbox_image` makes one), padded and in the batch's coordinates, with no
    Python loop over the images: what an export traces, so that its batch axis stays dynamic."""
    r = arch.resolution
    dtype = next(model.parameters()).dtype  # a half-precision model takes float32 images too
    images = ImageList(normalize(batch.to(dtype)), [(r, r)])  # one size: the images share anchors and clipping bounds
    head = model.head[arch.head.type]
    return head.postprocess_padded(head.raw_outputs(_features(model, images.tensors, arch), images, arch.head), images)


def check_classes(classes: Optional[Sequence[dict]], num_classes: int) -> Optional[list[dict]]:
    """The class map of a detector, label i first to last: [{"label": i, "id": dataset id, "name"}],
    or None (a detector saved before it existed)."""
    if classes is None:
        return None
    if not isinstance(classes, (list, tuple)) or len(classes) != num_classes:
        raise ValueError(f"classes: expected {num_classes} entries {{'label', 'id', 'name'}}, one per label")
    for i, c in enumerate(classes):
        ok = isinstance(c, dict) and c.get("label") == i and isinstance(c.get("name"), str)
        if not ok or isinstance(c.get("id"), bool) or not isinstance(c.get("id"), int):
            raise ValueError(f"classes[{i}]: expected {{'label': {i}, 'id': <int>, 'name': <str>}}, got {c!r}")
    return [dict(c) for c in classes]


def knob_values(part: NeckArch | HeadArch, kind: str) -> dict[str, int]:
    """The values in `part` of the knobs its type declares: what its module is called with."""
    return {k: part.knob(k) for k in knobs(kind, part.type)}


def _widest(space: SearchSpace, kind: str, name: str) -> dict[str, int]:
    """The largest choice of each knob the `kind` component `name` declares: what it is built with."""
    return {k: max(space.knob_gene(kind, k).choices) for k in knobs(kind, name)}


@functools.lru_cache(maxsize=4096)
def _param_shapes(factory, *args, **kwargs) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """(name, shape) of the parameters of `factory(*args, **kwargs)`, built on the meta device."""
    with torch.device("meta"):
        module = factory(*args, **kwargs)
    return tuple((name, tuple(p.shape)) for name, p in module.named_parameters())


def _prefixed(prefix: str, shapes) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.{name}": shape for name, shape in shapes}


def _check_targets(targets: Any, num_classes: int, num_images: int) -> None:
    if targets is None:
        raise ValueError("targets: required in train mode (a list of {'boxes', 'labels'} per image)")
    if len(targets) != num_images:
        raise ValueError(f"targets: {len(targets)} entries for {num_images} images")
    for i, t in enumerate(targets):
        boxes, labels = t.get("boxes"), t.get("labels")
        if not isinstance(boxes, Tensor) or boxes.dim() != 2 or boxes.shape[-1] != 4 or not boxes.is_floating_point():
            raise ValueError(f"targets[{i}]['boxes']: expected a float tensor [K, 4] (x1, y1, x2, y2)")
        if not isinstance(labels, Tensor) or labels.dtype != torch.int64 or labels.shape != boxes.shape[:1]:
            raise ValueError(f"targets[{i}]['labels']: expected an int64 tensor [K] matching the boxes")
        if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"targets[{i}]['labels']: values must be in 0..{num_classes - 1}")
