"""An architecture as the ops a latency table times, and how to run each op on its own.

A subnet's forward pass is, in order: letterbox in / boxes out (`io`), the stride-2 `stem`, each
backbone `block` at its position's widths, stride and input size, the `neck`, the `head` and its
`post`-processing. A head's two ops are its own split, as torchvision's detectors split theirs:
`raw_outputs` (the networks; a two-stage head's proposal filtering, which sits between its two
stages, included) and `postprocess` (decoding, score threshold, top-k, NMS).

An op's key names everything its time depends on within one table; what is the same for a whole
table (batch size, dtype, device, number of classes, activation, anchor scale) lives in
`OpContext` and the table's settings. Identical ops (every block after the first of a stage with
the same width, for instance) share one key, so a table measures each once.

Post-processing is timed at its worst case, `score_thresh = 0`: every top-k candidate reaches
NMS, as on a cluttered image. Its cost is then fixed by the top-k, not by what a random or
half-trained model happens to score, so op timings and end-to-end timings agree.
"""
from __future__ import annotations

import contextlib
import functools
import itertools
import random
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import torch
import torch.nn as nn
from torch.utils._pytree import tree_flatten, tree_unflatten
from torchvision.models.detection.image_list import ImageList

from supernet.backbone import block_input_side, block_positions, block_stride, stage_sides
from supernet.heads import PostProcess
from supernet.layers import ConvBnAct, group_norm
from supernet.registry import component
from supernet.space import Arch, HeadArch, NUM_NECK_LEVELS, NeckArch, SearchSpace
from supernet.supernet import Detector, knob_values
from supernet.transform import IMAGENET_MEAN, letterbox, letterbox_image, restore

from .measure import Settings, prepare


@dataclass(frozen=True)
class OpContext:
    """What every op of one table shares besides the measurement settings."""

    num_classes: int = 80
    activation: str = "relu"
    anchor_scale: float = 4.0
    post: PostProcess = field(default_factory=lambda: PostProcess(score_thresh=0.0))
    norm: str = "bn"

    @classmethod
    def for_space(cls, space: SearchSpace, num_classes: int) -> "OpContext":
        return cls(num_classes, space.activation, space.head.anchor_scale, norm=space.norm)

    def to_dict(self) -> dict:
        """Plain data; `norm` only when not BatchNorm, as `SearchSpace.to_dict` (tables built before stay equal)."""
        data = asdict(self)
        if data["norm"] == "bn":
            del data["norm"]
        return data

    def normed(self, module: nn.Module) -> nn.Module:
        """`module` with this table's normalisation (parts are built with BatchNorm)."""
        return group_norm(module) if self.norm == "gn" else module

    @classmethod
    def from_dict(cls, data: dict) -> "OpContext":
        return cls(**{**data, "post": PostProcess(**data["post"])})


@dataclass(frozen=True)
class Op:
    kind: str  # io, stem, block, neck, head, post
    params: tuple[tuple[str, object], ...]
    key: str = field(init=False, compare=False)  # e.g. "block(type=basic,cin=16,cout=24,stride=2,size=32)"

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", f"{self.kind}(" + ",".join(f"{k}={_fmt(v)}" for k, v in self.params) + ")")

    def __getitem__(self, name: str):
        return dict(self.params)[name]


def _fmt(value) -> str:
    return "x".join(map(str, value)) if isinstance(value, tuple) else str(value)


@functools.lru_cache(maxsize=None)  # prediction builds an arch's ops thousands of times a second
def make_op(kind: str, **params) -> Op:
    return Op(kind, tuple(params.items()))


def arch_ops(arch: Arch) -> list[Op]:
    """The ops of `arch`'s forward pass, in order (one per block position, duplicates kept)."""
    r, bb = arch.resolution, arch.backbone
    ops = [make_op("io", res=r), make_op("stem", res=r, width=bb.stem_width)]
    for s, i, cin, cout, stride in block_positions(bb.stem_width, [(st.width, st.depth) for st in bb.stages]):
        ops.append(make_op("block", type=bb.stages[s].blocks[i], cin=cin, cout=cout, stride=stride, size=block_input_side(r, s, i)))
    return ops + neck_head_ops(arch.neck, arch.head, tuple(st.width for st in bb.stages[-NUM_NECK_LEVELS:]), r)


def neck_head_ops(neck: NeckArch, head: HeadArch, in_channels: tuple[int, ...], resolution: int) -> list[Op]:
    """The ops after the backbone: the neck on the last stages' widths, the head, post-processing."""
    return [neck_op(neck, in_channels, resolution), head_op(head, neck.width, resolution), post_op(head, resolution)]


def neck_op(neck: NeckArch, in_channels: tuple[int, ...], resolution: int) -> Op:
    """A neck's op; user knobs (`options`) follow the built-in parameters in its key."""
    return make_op("neck", type=neck.type, cin=in_channels, width=neck.width, repeats=neck.repeats, res=resolution, **dict(neck.options))


def head_op(head: HeadArch, in_channels: int, resolution: int) -> Op:
    return make_op("head", type=head.type, cin=in_channels, width=head.width, convs=head.num_convs, res=resolution, **dict(head.options))


def post_op(head: HeadArch, resolution: int) -> Op:
    """A head's post-processing: by type and resolution (and a user head's knobs), not its widths."""
    return make_op("post", type=head.type, res=resolution, **dict(head.options))


_BUILT_IN_PARAMS = {"type", "cin", "width", "repeats", "convs", "res"}


def space_ops(space: SearchSpace) -> dict[str, Op]:
    """Every distinct op any arch of `space` can produce, by key."""
    ops: dict[str, Op] = {}

    def add(op: Op) -> None:
        ops.setdefault(op.key, op)

    bb, neck, head = space.backbone, space.neck, space.head
    for r in space.resolutions:
        add(make_op("io", res=r))
        for w in bb.stem_widths:
            add(make_op("stem", res=r, width=w))
        in_widths = bb.stem_widths
        for s, stage in enumerate(bb.stages):
            for i in range(max(stage.depths)):
                for cout in stage.widths:
                    for cin in in_widths if i == 0 else (cout,):
                        for name in stage.blocks:
                            add(make_op("block", type=name, cin=cin, cout=cout, stride=block_stride(i), size=block_input_side(r, s, i)))
            in_widths = stage.widths
        necks = [v for t in neck.types for v in space.variants("neck", t)]
        for cin in itertools.product(*(st.widths for st in bb.stages[-NUM_NECK_LEVELS:])):
            for v in necks:
                add(neck_op(v, cin, r))
        for t in head.types:
            for cin, v in itertools.product(neck.widths, space.variants("head", t)):
                add(head_op(v, cin, r))
                add(post_op(v, r))
    return ops


# ---- running ops on their own -------------------------------------------------------------------
@contextlib.contextmanager
def seeded(name: str) -> Iterator[None]:
    """The CPU RNG seeded from `name`, the caller's RNG state restored after. Weights are
    initialised and inputs drawn on the CPU, so one op or subnet is the same model on the same
    input in every pass: its passes differ only by the machine (post-processing, whose work
    depends on the values, included). Only the CPU generator: seeding CUDA's costs ~20 ms."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(zlib.crc32(name.encode()))
        yield


def _inputs(settings: Settings, fill: Callable[..., torch.Tensor] = torch.rand) -> Callable[..., torch.Tensor]:
    def make(*shape: int) -> torch.Tensor:
        x = fill(shape).to(device=settings.device, dtype=settings.torch_dtype)
        return x.contiguous(memory_format=settings.memory_format) if x.dim() == 4 else x

    return make


class Runner(nn.Module):
    """A module with its example inputs: `runner()` runs it once on them, `runner(*tensors)` on
    others of their shapes. The inputs are explicit tensors, not captured in a closure, so that a
    runtime backend can take them as its graph's inputs (`latency.backends`); the module is a
    registered submodule so that its weights are counted and exported. `counted` False: the op
    adds no FLOPs or parameters to a model's count (bookkeeping, or post-processing whose module
    only carries its settings)."""

    def __init__(self, module: nn.Module, call: Callable[..., object], inputs: tuple[torch.Tensor, ...], counted: bool = True):
        super().__init__()
        self.module, self.call, self.inputs, self.counted = module, call, tuple(inputs), counted
        self.graph_file: Optional[Path] = None  # where a runtime backend keeps its exported graph (a table build sets it)

    def forward(self, *inputs: torch.Tensor) -> object:
        return self.call(self.module, *(inputs or self.inputs))


def _packed(structure) -> tuple[tuple[torch.Tensor, ...], Callable[[tuple], object]]:
    """(the tensors of a nested structure, a function that rebuilds it from tensors of the same
    shapes): how an op whose input is a dict or list of tensors takes them one by one."""
    leaves, spec = tree_flatten(structure)
    slots = [i for i, leaf in enumerate(leaves) if isinstance(leaf, torch.Tensor)]

    def rebuild(tensors: tuple) -> object:
        filled = list(leaves)
        for i, t in zip(slots, tensors):
            filled[i] = t
        return tree_unflatten(filled, spec)

    return tuple(leaves[i] for i in slots), rebuild


def op_runner(op: Op, ctx: OpContext, settings: Settings) -> Runner:
    """`op` on random inputs, as it runs inside a detector (eval mode, the settings' device,
    dtype and memory format); its weights and inputs are fixed by its key. Call under no_grad."""
    with seeded(op.key):
        return _op_runner(op, ctx, settings)


def _op_runner(op: Op, ctx: OpContext, settings: Settings) -> Runner:
    p, b, act = dict(op.params), settings.batch_size, ctx.activation
    rand = _inputs(settings)
    if op.kind == "io":
        r = p["res"]
        x = rand(b, 3, r, r)
        boxes = rand(ctx.post.detections_per_img, 4).float() * r  # detections come out in float32 whatever the dtype

        def io(_, x, boxes):
            dets = [{"boxes": boxes, "scores": boxes[:, 0], "labels": boxes[:, 1].long()}] * b
            return restore(dets, letterbox(x, r)[2])
        return Runner(nn.Identity(), io, (x, boxes), counted=False)
    if op.kind == "stem":
        x = rand(b, 3, p["res"], p["res"])
        return Runner(prepare(ctx.normed(ConvBnAct(3, p["width"], 3, 2, act=act)), settings), lambda m, x: m(x), (x,))
    if op.kind == "block":
        x = rand(b, p["cin"], p["size"], p["size"])
        return Runner(prepare(ctx.normed(component("block", p["type"])(p["cin"], p["cout"], p["stride"], act=act)), settings),
                      lambda m, x: m(x, p["cout"]), (x,))
    sides = stage_sides(p["res"])[-NUM_NECK_LEVELS:]
    options = tuple((k, v) for k, v in p.items() if k not in _BUILT_IN_PARAMS)  # a user component's own knobs
    if op.kind == "neck":
        feats = [rand(b, c, s, s) for c, s in zip(p["cin"], sides)]
        neck = knob_values(NeckArch(p["type"], p["width"], p["repeats"], options), "neck")
        module = prepare(ctx.normed(component("neck", p["type"])(list(p["cin"]), p["width"], act=act, **neck)), settings)
        return Runner(module, lambda m, *feats: m(list(feats), p["width"], **neck), tuple(feats))
    if op.kind in ("head", "post"):  # post-processing does not depend on the head's widths: a narrow build feeds it
        cin, arch = (p["cin"], HeadArch(p["type"], p["width"], p["convs"], options)) if op.kind == "head" else (8, HeadArch(p["type"], 8, 1, options))
        module = prepare(ctx.normed(component("head", p["type"])(cin, arch.width, ctx.num_classes, act=act, anchor_scale=ctx.anchor_scale,
                                                                 post=ctx.post, **knob_values(arch, "head"))), settings)
        # zero features, as a timed detector's (`detector_runner`): a two-stage head's RPN and every post-processing
        # then filter the same candidates in the op as in the detector
        feats = [_inputs(settings, torch.zeros)(b, cin, s, s) for s in sides]
        image = rand(b, 3, p["res"], p["res"])
        sizes = [(p["res"], p["res"])] * b
        if op.kind == "head":
            return Runner(module, lambda m, image, *feats: m.raw_outputs(list(feats), ImageList(image, sizes), arch), (image, *feats))
        with torch.no_grad():
            raw, rebuild = _packed(module.raw_outputs(feats, ImageList(image, sizes), arch))
        return Runner(module, lambda m, image, *raw: m.postprocess(rebuild(raw), ImageList(image, sizes)), (image, *raw), counted=False)
    raise ValueError(f"op {op.key}: unknown kind {op.kind!r}")


def detector(arch: Arch, ctx: OpContext) -> Detector:
    """The standalone detector of `arch` as the table times it (random weights, `ctx.post`)."""
    return Detector(arch, ctx.num_classes, ctx.activation, ctx.anchor_scale, ctx.post, norm=ctx.norm)


def detector_runner(arch: Arch, ctx: OpContext, settings: Settings, state_dict: Optional[dict] = None,
                    seed: Optional[int] = None, images: Optional[Sequence[torch.Tensor]] = None) -> Runner:
    """`arch`'s whole standalone detector end to end, with random weights fixed by the arch (and
    `seed`) on a batch of the normalisation's mean colour; with `state_dict`, a trained
    detector's weights (its post-processing still `ctx.post`'s, as the table's) on `images`
    (float [3, H, W] in [0, 1], letterboxed to the arch's resolution; the batch cycles through
    them) or, without any, a random batch.

    Why the mean colour: it normalises to exactly zero, so every feature of an untrained
    detector is zero and its head's outputs are its biases (every box an anchor, every score
    tied), whatever its widths. The post op (`op_runner`) is fed the same zero features, so both
    run post-processing on identical candidates: its cost depends on them (ONNX Runtime's NMS by
    up to 2x), and on a random batch they differ by float noise between the two. Why real
    images for a trained detector: its NMS then filters the candidates it filters when deployed."""
    shape = (settings.batch_size, 3, arch.resolution, arch.resolution)
    with seeded(f"{arch.hash()}/{seed}"):
        if state_dict is None:
            x = _inputs(settings, _mean_colour)(*shape)
        elif images:
            x = _inputs(settings, lambda _: _image_batch(images, settings.batch_size, arch.resolution))(*shape)
        else:
            x = _inputs(settings)(*shape)
        model = detector(arch, ctx)
    if state_dict is not None:
        model.load_state_dict(state_dict)
    return Runner(prepare(model, settings), lambda m, x: m(x), (x,))


def _image_batch(images: Sequence[torch.Tensor], batch_size: int, resolution: int) -> torch.Tensor:
    """`batch_size` of `images`, cycled, letterboxed to [B, 3, R, R] as the detector's own forward does."""
    return torch.cat([letterbox_image(images[i % len(images)], resolution)[0] for i in range(batch_size)])


def _mean_colour(shape: tuple[int, ...]) -> torch.Tensor:
    """Images [B, 3, H, W] of the normalisation's mean colour: they normalise to exactly zero."""
    return torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1).expand(shape)


def reference_runner(arch: Arch, ctx: OpContext, settings: Settings, seed: int) -> Runner:
    """The detector a build's noise check times, fixed by `arch` and `seed` (weights and input;
    the table stores both), so a later validation can time the very same model and tell a change
    of the machine's speed from an error of the table."""
    return detector_runner(arch, ctx, settings, seed=seed)


def iter_archs(space: SearchSpace, n: int, seed: int) -> Iterator[Arch]:
    """`n` distinct seeded random archs of `space` (fewer if the space is smaller)."""
    rng, seen = random.Random(seed), set()
    for _ in range(50 * n):
        if len(seen) == n:
            return
        arch = space.sample(rng)
        if arch.hash() not in seen:
            seen.add(arch.hash())
            yield arch

