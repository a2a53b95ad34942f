"""Blocks, necks and heads by name: the built-in ones and the ones a user registers.

A space names its components; this is where a name becomes a class, for the space's validation,
the supernet, standalone detectors and the latency table alike. A component class states which
searchable knobs it takes besides its width (`knobs`, e.g. a neck's `("repeats",)`): a knob's
gene is active only for the types that declare it.

    from supernet.registry import register_block
    register_block("my_block", MyBlock)   # before building a space that lists "my_block"

The built-in components register themselves when their modules are imported, which happens on
the first lookup, so importing this module (and `supernet.space`) does not import torch.
"""
from __future__ import annotations

import importlib
from typing import Any

KINDS = ("block", "neck", "head")
_BUILT_IN = {"block": "supernet.blocks", "neck": "supernet.necks", "head": "supernet.heads"}
_REGISTRIES: dict[str, dict[str, Any]] = {kind: {} for kind in KINDS}


def _register(kind: str, name: str, component: Any, replace: bool) -> Any:
    if not isinstance(name, str) or not name or not name.replace("_", "").isalnum():
        raise ValueError(f"register_{kind}: name {name!r} must be a non-empty identifier (letters, digits, _)")
    if not callable(component):
        raise ValueError(f"register_{kind}({name!r}): expected a class or factory, got {type(component).__name__}")
    knobs = getattr(component, "knobs", ())
    if not isinstance(knobs, tuple) or not all(isinstance(k, str) for k in knobs):
        raise ValueError(f"register_{kind}({name!r}): its `knobs` must be a tuple of knob names, got {knobs!r}")
    registry = _REGISTRIES[kind]
    if name in registry and registry[name] is not component and not replace:
        raise ValueError(f"register_{kind}: {name!r} is already registered ({registry[name]!r}); pass replace=True to override it")
    registry[name] = component
    return component


def register_block(name: str, factory: Any, replace: bool = False) -> Any:
    """`factory(in_ch, out_ch, stride, act=..., drop_path=...)` builds the block at its widest;
    the block's `forward(x, out_channels)` runs on `x.shape[1]` input and `out_channels` output
    channels (see `supernet.blocks` and the elastic layers of `supernet.layers`)."""
    return _register("block", name, factory, replace)


def register_neck(name: str, cls: Any, replace: bool = False) -> Any:
    """`cls(in_channels, width, act=..., **knobs)` builds the neck at its widest width and the
    largest choice of each knob it declares; `forward(features, width, **knobs)` runs three
    levels in, three levels of `width` channels out."""
    return _register("neck", name, cls, replace)


def register_head(name: str, cls: Any, replace: bool = False) -> Any:
    """`cls(in_ch, width, num_classes, act=..., anchor_scale=..., post=..., **knobs)`; it
    splits its work into `raw_outputs(features, images, arch)` and `postprocess(raw, images)`
    (what the latency table times apart), and `forward` returns losses in training. Exports also
    need `postprocess_padded(raw, images)`: the whole batch's detections as
    `supernet.heads.detections.PaddedDetections`, with no loop over images (`OneStageHead`
    subclasses have it)."""
    return _register("head", name, cls, replace)


def components(kind: str) -> dict[str, Any]:
    """Name -> class (or factory) of every registered component of `kind`, built-in ones first."""
    if kind not in _REGISTRIES:
        raise ValueError(f"component kind {kind!r}: expected one of {list(KINDS)}")
    importlib.import_module(_BUILT_IN[kind])  # registers the built-in ones the first time
    return _REGISTRIES[kind]


def component(kind: str, name: str) -> Any:
    """The registered class of `name`; ValueError naming what is registered otherwise."""
    found = components(kind)
    if name not in found:
        raise ValueError(f"{kind} {name!r} is not registered; registered: {sorted(found)} (register_{kind} adds one)")
    return found[name]


def knobs(kind: str, name: str) -> tuple[str, ...]:
    """The knobs a registered component declares (besides its width)."""
    return tuple(getattr(component(kind, name), "knobs", ()))
