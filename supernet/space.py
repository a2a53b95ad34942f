"""The search space and an architecture, as plain validated data.

A `SearchSpace` lists every choice; an `Arch` is one value for each of them. Both are frozen
dataclasses that round-trip through JSON/YAML, so spaces and results can be written by hand,
diffed and stored next to checkpoints. Nothing here imports torch.

Conventions:
- The backbone is a stride-2 stem followed by stages that each start with a stride-2 block; the
  last three stages (strides 8, 16, 32) feed the neck, so every resolution is a multiple of 32.
- Elastic depth: a stage with depth d runs its first d block positions; an `Arch` names the block
  type of exactly those d positions (positions past the depth have no choice to make).
- `neck.repeats` applies to the necks in `REPEATABLE_NECKS`; FPN is a single top-down pass and its
  repeats is always 1.
- Categorical choices (block types, neck and head types) are listed from cheapest to most
  expensive: `smallest()`/`largest()` take the first/last of them, and the minimum/maximum of every
  numeric choice.
"""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import MISSING, asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

BLOCK_TYPES: tuple[str, ...] = (
    *(f"ir_k{k}_e{e}{se}" for k in (3, 5, 7) for e in (3, 6) for se in ("", "_se")),
    "basic",
    "bottleneck",
)
NECK_TYPES: tuple[str, ...] = ("fpn", "pan", "bifpn")
REPEATABLE_NECKS: frozenset[str] = frozenset({"pan", "bifpn"})
HEAD_TYPES: tuple[str, ...] = ("fcos", "retinanet", "two_stage")
BACKBONE_STRIDE = 32
NUM_NECK_LEVELS = 3
WIDTH_SAMPLING = ("uniform", "wide")  # how SearchSpace.sample draws widths


def _check_choices(where: str, values: Sequence[Any], kind: type, allowed: Iterable | None = None) -> tuple:
    values = tuple(values) if isinstance(values, (list, tuple)) else (values,)
    if not values:
        raise ValueError(f"{where}: needs at least one choice")
    for v in values:
        if kind is int and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
            raise ValueError(f"{where}: {v!r} is not a positive integer")
        if kind is str and not isinstance(v, str):
            raise ValueError(f"{where}: {v!r} is not a string")
        if allowed is not None and v not in allowed:
            raise ValueError(f"{where}: {v!r} is not one of {list(allowed)}")
    if len(set(values)) != len(values):
        raise ValueError(f"{where}: duplicate choices in {list(values)}")
    return values


def _check_keys(where: str, data: Any, cls: type) -> dict:
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping with keys {[f.name for f in fields(cls)]}, got {type(data).__name__}")
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; expected {sorted(names)}")
    return data


# ---------------------------------------------------------------------------------------------
# The space
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StageSpace:
    depths: tuple[int, ...]
    widths: tuple[int, ...]
    blocks: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "depths", _check_choices("depths", self.depths, int))
        object.__setattr__(self, "widths", _check_choices("widths", self.widths, int))
        object.__setattr__(self, "blocks", _check_choices("blocks", self.blocks, str, BLOCK_TYPES))


@dataclass(frozen=True)
class BackboneSpace:
    stem_widths: tuple[int, ...]
    stages: tuple[StageSpace, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "stem_widths", _check_choices("stem_widths", self.stem_widths, int))
        object.__setattr__(self, "stages", tuple(self.stages))
        if len(self.stages) != 4:
            # stem (2) x four stride-2 stages = 32 = BACKBONE_STRIDE; the last three feed the neck
            raise ValueError("stages: exactly 4 stages are supported (strides 4, 8, 16, 32)")


@dataclass(frozen=True)
class NeckSpace:
    types: tuple[str, ...]
    widths: tuple[int, ...]
    repeats: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "types", _check_choices("types", self.types, str, NECK_TYPES))
        object.__setattr__(self, "widths", _check_choices("widths", self.widths, int))
        object.__setattr__(self, "repeats", _check_choices("repeats", self.repeats, int))

    def repeat_choices(self, neck_type: str) -> tuple[int, ...]:
        return self.repeats if neck_type in REPEATABLE_NECKS else (1,)


@dataclass(frozen=True)
class HeadSpace:
    types: tuple[str, ...]
    widths: tuple[int, ...]
    num_convs: tuple[int, ...]
    anchor_scale: float = 4.0  # anchor size = anchor_scale x stride (RetinaNet, RPN); fixed, not searched

    def __post_init__(self) -> None:
        object.__setattr__(self, "types", _check_choices("types", self.types, str, HEAD_TYPES))
        object.__setattr__(self, "widths", _check_choices("widths", self.widths, int))
        object.__setattr__(self, "num_convs", _check_choices("num_convs", self.num_convs, int))
        if not isinstance(self.anchor_scale, (int, float)) or self.anchor_scale <= 0:
            raise ValueError(f"anchor_scale: {self.anchor_scale!r} is not a positive number")


@dataclass(frozen=True)
class SearchSpace:
    resolutions: tuple[int, ...]
    backbone: BackboneSpace
    neck: NeckSpace
    head: HeadSpace
    activation: str = "relu"  # timm activation name used by every layer; fixed, not searched

    def __post_init__(self) -> None:
        res = _check_choices("resolutions", self.resolutions, int)
        for r in res:
            if r % BACKBONE_STRIDE:
                raise ValueError(f"resolutions: {r} is not a multiple of {BACKBONE_STRIDE} (the backbone's total stride)")
        object.__setattr__(self, "resolutions", res)

    # ---- (de)serialisation ------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict, source: str = "space") -> "SearchSpace":
        """Build from a plain dict; every error names the offending field, prefixed by `source`."""

        def build(sub_cls, sub, where):
            sub = _check_keys(where, sub, sub_cls)
            try:
                return sub_cls(**sub)
            except TypeError as e:  # missing keys
                missing = [f.name for f in fields(sub_cls) if f.name not in sub and f.default is MISSING]
                raise ValueError(f"{where}: missing key(s) {missing}") from e
            except ValueError as e:
                raise ValueError(f"{where}.{e}") from None

        data = _check_keys(source, data, cls)
        for key in ("resolutions", "backbone", "neck", "head"):
            if key not in data:
                raise ValueError(f"{source}: missing key '{key}'")
        bb = _check_keys(f"{source}.backbone", data["backbone"], BackboneSpace)
        if not isinstance(bb.get("stages"), list):
            raise ValueError(f"{source}.backbone.stages: expected a list of stages")
        stages = tuple(build(StageSpace, s, f"{source}.backbone.stages[{i}]") for i, s in enumerate(bb["stages"]))
        backbone = build(BackboneSpace, {**bb, "stages": stages}, f"{source}.backbone")
        try:
            return cls(
                resolutions=data["resolutions"],
                backbone=backbone,
                neck=build(NeckSpace, data["neck"], f"{source}.neck"),
                head=build(HeadSpace, data["head"], f"{source}.head"),
                **({"activation": data["activation"]} if "activation" in data else {}),
            )
        except ValueError as e:
            msg = str(e)
            raise ValueError(msg if msg.startswith(source) else f"{source}.{msg}") from None

    def to_dict(self) -> dict:
        return _plain(asdict(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str, source: str = "space") -> "SearchSpace":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{source}: not valid JSON ({e})") from None
        return cls.from_dict(data, source)

    def save(self, path: str | Path) -> None:
        """Write as YAML (.yaml/.yml) or JSON (anything else), atomically."""
        path = Path(path)
        if path.suffix in (".yaml", ".yml"):
            import yaml

            text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        else:
            text = self.to_json()
        _atomic_write_text(path, text)

    @classmethod
    def load(cls, path: str | Path) -> "SearchSpace":
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"{path}: search space file not found")
        text = path.read_text()
        if path.suffix in (".yaml", ".yml"):
            import yaml

            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as e:
                raise ValueError(f"{path}: not valid YAML ({e})") from None
            return cls.from_dict(data, str(path))
        return cls.from_json(text, str(path))

    @classmethod
    def preset(cls, name: str) -> "SearchSpace":
        """`tiny`: CPU-sized (64-128 px, narrow), for tests. `tiny_one_stage`: `tiny` with the
        one-stage heads only, for the CPU demo. `coco`: real use."""
        if name not in PRESETS:
            raise ValueError(f"unknown search space preset {name!r}; expected one of {sorted(PRESETS)}")
        return cls.from_dict(PRESETS[name], f"preset {name}")

    @classmethod
    def resolve(cls, spec: str) -> "SearchSpace":
        """A preset name or a path to a YAML/JSON space file (what `--space` accepts)."""
        if spec in PRESETS:
            return cls.preset(spec)
        if Path(spec).suffix in (".yaml", ".yml", ".json"):
            return cls.load(spec)
        raise ValueError(f"--space: {spec!r} is neither a preset {sorted(PRESETS)} nor a .yaml/.json file")

    @classmethod
    def point(cls, arch: "Arch", activation: str = "relu", anchor_scale: float = 4.0) -> "SearchSpace":
        """The one-architecture space holding exactly `arch`'s choices (used to build standalone models)."""
        return cls(
            resolutions=(arch.resolution,),
            backbone=BackboneSpace(
                stem_widths=(arch.backbone.stem_width,),
                stages=tuple(StageSpace((s.depth,), (s.width,), tuple(dict.fromkeys(s.blocks))) for s in arch.backbone.stages),
            ),
            neck=NeckSpace((arch.neck.type,), (arch.neck.width,), (arch.neck.repeats,)),
            head=HeadSpace((arch.head.type,), (arch.head.width,), (arch.head.num_convs,), anchor_scale),
            activation=activation,
        )

    def restrict(self, blocks: Sequence[str] | None = None, structure: "Arch | None" = None) -> "SearchSpace":
        """The sub-space a training stage samples from (SM-NAS's stage-matched training).

        `blocks`: every stage keeps only these block types, or its first choice where it offers
        none of them (the structural stage runs one block everywhere). `structure`: the
        resolution, neck and head types and stage depths of this arch are fixed (the modular
        stage's fine-tune); widths, blocks, repeats and convs stay free. Raises ValueError naming
        what does not fit this space."""
        space = self
        if blocks is not None:
            blocks = tuple(blocks)
            offered = {b for s in self.backbone.stages for b in s.blocks}
            if not blocks or not offered & set(blocks):
                raise ValueError(f"blocks: none of {list(blocks)} is a block choice of this space ({sorted(offered)})")
            stages = tuple(StageSpace(s.depths, s.widths, tuple(b for b in s.blocks if b in blocks) or s.blocks[:1])
                           for s in self.backbone.stages)
            space = replace(space, backbone=replace(space.backbone, stages=stages))
        if structure is not None:
            self.validate(structure)
            stages = tuple(replace(s, depths=(a.depth,)) for s, a in zip(space.backbone.stages, structure.backbone.stages))
            space = replace(space, resolutions=(structure.resolution,), backbone=replace(space.backbone, stages=stages),
                            neck=replace(space.neck, types=(structure.neck.type,)), head=replace(space.head, types=(structure.head.type,)))
        return space

    # ---- architectures ----------------------------------------------------------------------
    def validate(self, arch: "Arch") -> "Arch":
        """Raise ValueError naming the first field of `arch` outside this space; return `arch`."""

        def check(field: str, value: Any, allowed: Sequence[Any]) -> None:
            if value not in allowed:
                raise ValueError(f"arch.{field}: {value!r} is not allowed; allowed values: {list(allowed)}")

        if not isinstance(arch, Arch):
            raise ValueError(f"arch: expected an Arch, got {type(arch).__name__}")
        check("resolution", arch.resolution, self.resolutions)
        bb = arch.backbone
        check("backbone.stem_width", bb.stem_width, self.backbone.stem_widths)
        if len(bb.stages) != len(self.backbone.stages):
            raise ValueError(f"arch.backbone.stages: has {len(bb.stages)} stages; the space has {len(self.backbone.stages)}")
        for i, (sa, ss) in enumerate(zip(bb.stages, self.backbone.stages)):
            check(f"backbone.stages[{i}].depth", sa.depth, ss.depths)
            check(f"backbone.stages[{i}].width", sa.width, ss.widths)
            for j, b in enumerate(sa.blocks):
                check(f"backbone.stages[{i}].blocks[{j}]", b, ss.blocks)
        check("neck.type", arch.neck.type, self.neck.types)
        check("neck.width", arch.neck.width, self.neck.widths)
        check("neck.repeats", arch.neck.repeats, self.neck.repeat_choices(arch.neck.type))
        check("head.type", arch.head.type, self.head.types)
        check("head.width", arch.head.width, self.head.widths)
        check("head.num_convs", arch.head.num_convs, self.head.num_convs)
        return arch

    def sample(self, rng: random.Random | int, widths: str = "uniform") -> "Arch":
        """Draw every choice independently (SPOS): depth first, then that many blocks.

        widths="uniform" draws every choice uniformly. widths="wide" draws each width (stem,
        stages, neck, head) with weight 1..n by its rank, narrowest first: a narrow path trains
        only the leading channels, so under uniform draws the trailing channels of a layer, which
        only the wider paths use, get the fewest updates, and wide paths rank too low."""
        if widths not in WIDTH_SAMPLING:
            raise ValueError(f"widths: {widths!r} is not one of {list(WIDTH_SAMPLING)}")
        rng = rng if isinstance(rng, random.Random) else random.Random(rng)
        if widths == "uniform":
            width = rng.choice
        else:
            def width(choices: Sequence[int]) -> int:
                rank = sorted(choices)
                return rng.choices(choices, weights=[rank.index(c) + 1 for c in choices])[0]
        stages = []
        for ss in self.backbone.stages:
            depth = rng.choice(ss.depths)
            stages.append(StageArch(width=width(ss.widths), blocks=tuple(rng.choice(ss.blocks) for _ in range(depth))))
        neck_type = rng.choice(self.neck.types)
        return Arch(
            resolution=rng.choice(self.resolutions),
            backbone=BackboneArch(stem_width=width(self.backbone.stem_widths), stages=tuple(stages)),
            neck=NeckArch(type=neck_type, width=width(self.neck.widths), repeats=rng.choice(self.neck.repeat_choices(neck_type))),
            head=HeadArch(type=rng.choice(self.head.types), width=width(self.head.widths), num_convs=rng.choice(self.head.num_convs)),
        )

    def _extreme(self, pick_num, pick_cat) -> "Arch":
        neck_type = pick_cat(self.neck.types)
        return Arch(
            resolution=pick_num(self.resolutions),
            backbone=BackboneArch(
                stem_width=pick_num(self.backbone.stem_widths),
                stages=tuple(
                    StageArch(width=pick_num(s.widths), blocks=tuple(pick_cat(s.blocks) for _ in range(pick_num(s.depths))))
                    for s in self.backbone.stages
                ),
            ),
            neck=NeckArch(neck_type, pick_num(self.neck.widths), pick_num(self.neck.repeat_choices(neck_type))),
            head=HeadArch(pick_cat(self.head.types), pick_num(self.head.widths), pick_num(self.head.num_convs)),
        )

    def smallest(self, rng: random.Random | None = None) -> "Arch":
        """Every ordered choice at its least; the types (blocks, neck, head) the first listed, or
        drawn from `rng`: types have no order, and the presets' first are merely the cheapest."""
        return self._extreme(min, rng.choice if rng else lambda c: c[0])

    def largest(self, rng: random.Random | None = None) -> "Arch":
        """Every ordered choice at its most; the types the last listed, or drawn from `rng`."""
        return self._extreme(max, rng.choice if rng else lambda c: c[-1])

    def size(self) -> int:
        """Number of distinct architectures (blocks past a stage's depth are not choices)."""
        n = len(self.resolutions) * len(self.backbone.stem_widths)
        for s in self.backbone.stages:
            n *= len(s.widths) * sum(len(s.blocks) ** d for d in s.depths)
        n *= sum(len(self.neck.widths) * len(self.neck.repeat_choices(t)) for t in self.neck.types)
        n *= len(self.head.types) * len(self.head.widths) * len(self.head.num_convs)
        return n

    # ---- genes: the space as a flat list of categorical choices ------------------------------
    def genes(self) -> list[tuple[str, tuple]]:
        """(name, choices) of every choice, in a fixed order: what samplers and evolution work on.

        Some genes are inactive for some archs (blocks past a stage's depth, neck repeats of FPN);
        `decode` ignores them, so archs, not gene vectors, are the unit to deduplicate."""
        genes: list[tuple[str, tuple]] = [("resolution", self.resolutions), ("backbone.stem_width", self.backbone.stem_widths)]
        for i, s in enumerate(self.backbone.stages):
            genes += [(f"backbone.stages[{i}].depth", s.depths), (f"backbone.stages[{i}].width", s.widths)]
            genes += [(f"backbone.stages[{i}].blocks[{j}]", s.blocks) for j in range(max(s.depths))]
        genes += [("neck.type", self.neck.types), ("neck.width", self.neck.widths), ("neck.repeats", self.neck.repeats)]
        genes += [("head.type", self.head.types), ("head.width", self.head.widths), ("head.num_convs", self.head.num_convs)]
        return genes

    def decode(self, values: dict[str, Any]) -> "Arch":
        """The arch of a full gene assignment (name -> value); inactive genes are ignored."""
        stages = []
        for i in range(len(self.backbone.stages)):
            depth = values[f"backbone.stages[{i}].depth"]
            blocks = tuple(values[f"backbone.stages[{i}].blocks[{j}]"] for j in range(depth))
            stages.append(StageArch(width=values[f"backbone.stages[{i}].width"], blocks=blocks))
        neck_type = values["neck.type"]
        return self.validate(
            Arch(
                resolution=values["resolution"],
                backbone=BackboneArch(stem_width=values["backbone.stem_width"], stages=tuple(stages)),
                neck=NeckArch(neck_type, values["neck.width"], values["neck.repeats"] if neck_type in REPEATABLE_NECKS else 1),
                head=HeadArch(values["head.type"], values["head.width"], values["head.num_convs"]),
            )
        )

    def encode(self, arch: "Arch") -> dict[str, Any]:
        """Gene values of `arch`; inactive genes take their first choice."""
        self.validate(arch)
        values = {name: choices[0] for name, choices in self.genes()}
        values["resolution"] = arch.resolution
        values["backbone.stem_width"] = arch.backbone.stem_width
        for i, s in enumerate(arch.backbone.stages):
            values[f"backbone.stages[{i}].depth"] = s.depth
            values[f"backbone.stages[{i}].width"] = s.width
            for j, b in enumerate(s.blocks):
                values[f"backbone.stages[{i}].blocks[{j}]"] = b
        values.update({"neck.type": arch.neck.type, "neck.width": arch.neck.width, "head.type": arch.head.type,
                       "head.width": arch.head.width, "head.num_convs": arch.head.num_convs})
        if arch.neck.type in REPEATABLE_NECKS:
            values["neck.repeats"] = arch.neck.repeats
        return values

    def is_active(self, name: str, values: dict[str, Any]) -> bool:
        """Whether `decode` reads gene `name`, given the values of the genes before it."""
        if ".blocks[" in name:
            stage, j = name.split(".blocks[")
            return int(j[:-1]) < values[f"{stage}.depth"]
        return name != "neck.repeats" or values["neck.type"] in REPEATABLE_NECKS

    def active_genes(self, values: dict[str, Any]) -> list[str]:
        """Names of the genes that `decode(values)` reads."""
        return [name for name, _ in self.genes() if self.is_active(name, values)]


# ---------------------------------------------------------------------------------------------
# An architecture
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StageArch:
    width: int
    blocks: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "blocks", tuple(self.blocks))

    @property
    def depth(self) -> int:
        return len(self.blocks)


@dataclass(frozen=True)
class BackboneArch:
    stem_width: int
    stages: tuple[StageArch, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(self.stages))


@dataclass(frozen=True)
class NeckArch:
    type: str
    width: int
    repeats: int = 1


@dataclass(frozen=True)
class HeadArch:
    type: str
    width: int
    num_convs: int


@dataclass(frozen=True)
class Arch:
    resolution: int
    backbone: BackboneArch
    neck: NeckArch
    head: HeadArch

    def to_dict(self) -> dict:
        d = _plain(asdict(self))
        for s in d["backbone"]["stages"]:  # depth is implied by len(blocks); shown for readers
            s["depth"] = len(s["blocks"])
        return d

    @classmethod
    def from_dict(cls, data: Any, source: str = "arch") -> "Arch":
        """Parse the JSON form; a malformed field raises ValueError naming it (choices are checked by
        `SearchSpace.validate`)."""

        def get(d: Any, key: str, where: str, kind: type) -> Any:
            if not isinstance(d, dict) or key not in d:
                raise ValueError(f"{where}: missing key '{key}'")
            v = d[key]
            ok = isinstance(v, kind) and not (kind is int and isinstance(v, bool))
            if not ok:
                raise ValueError(f"{where}.{key}: expected {kind.__name__}, got {v!r}")
            return v

        if not isinstance(data, dict):
            raise ValueError(f"{source}: expected a JSON object, got {type(data).__name__}")
        bb = get(data, "backbone", source, dict)
        stages = []
        for i, s in enumerate(get(bb, "stages", f"{source}.backbone", list)):
            where = f"{source}.backbone.stages[{i}]"
            blocks = get(s, "blocks", where, list)
            if not all(isinstance(b, str) for b in blocks):
                raise ValueError(f"{where}.blocks: expected a list of block type names, got {blocks!r}")
            if "depth" in s and s["depth"] != len(blocks):
                raise ValueError(f"{where}.depth: {s['depth']!r} does not match the {len(blocks)} blocks listed")
            stages.append(StageArch(width=get(s, "width", where, int), blocks=tuple(blocks)))
        neck, head = get(data, "neck", source, dict), get(data, "head", source, dict)
        return cls(
            resolution=get(data, "resolution", source, int),
            backbone=BackboneArch(stem_width=get(bb, "stem_width", f"{source}.backbone", int), stages=tuple(stages)),
            neck=NeckArch(
                type=get(neck, "type", f"{source}.neck", str),
                width=get(neck, "width", f"{source}.neck", int),
                repeats=get(neck, "repeats", f"{source}.neck", int) if "repeats" in neck else 1,
            ),
            head=HeadArch(
                type=get(head, "type", f"{source}.head", str),
                width=get(head, "width", f"{source}.head", int),
                num_convs=get(head, "num_convs", f"{source}.head", int),
            ),
        )

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "arch") -> "Arch":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{source}: not valid JSON ({e})") from None
        return cls.from_dict(data, source)

    def hash(self) -> str:
        """Stable 12-hex-digit id: the same architecture gives the same id on any machine."""
        canonical = json.dumps(_plain(asdict(self)), sort_keys=True, separators=(",", ":"))
        return hashlib.sha1(canonical.encode()).hexdigest()[:12]


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _atomic_write_text(path: Path, text: str) -> None:
    from .io import atomic_write_bytes

    atomic_write_bytes(path, text.encode())


_ALL_IR = [b for b in BLOCK_TYPES if b.startswith("ir_")]
# cheapest first (see module docstring): bottleneck, then inverted residuals by kernel and
# expansion (squeeze-excite after its plain twin), the basic block (two full 3x3 convs) last.
_BLOCKS_BY_COST = ["bottleneck", *_ALL_IR, "basic"]

PRESETS: dict[str, dict] = {
    "tiny": {
        "resolutions": [64, 96, 128],
        "backbone": {
            "stem_widths": [8, 16],
            "stages": [
                {"depths": [1, 2], "widths": [8, 16], "blocks": _BLOCKS_BY_COST},
                {"depths": [1, 2], "widths": [16, 24], "blocks": _BLOCKS_BY_COST},
                {"depths": [1, 2, 3], "widths": [24, 32], "blocks": _BLOCKS_BY_COST},
                {"depths": [1, 2], "widths": [32, 48], "blocks": _BLOCKS_BY_COST},
            ],
        },
        "neck": {"types": ["fpn", "bifpn", "pan"], "widths": [16, 24, 32], "repeats": [1, 2]},
        "head": {"types": ["fcos", "retinanet", "two_stage"], "widths": [16, 24, 32], "num_convs": [1, 2], "anchor_scale": 2.0},
        "activation": "relu",
    },
    "coco": {
        "resolutions": [320, 416, 512, 640],
        "backbone": {
            "stem_widths": [16, 24, 32],
            "stages": [
                {"depths": [1, 2, 3], "widths": [24, 32, 48], "blocks": _BLOCKS_BY_COST},
                {"depths": [2, 3, 4], "widths": [40, 64, 96], "blocks": _BLOCKS_BY_COST},
                {"depths": [2, 3, 4, 6], "widths": [96, 128, 192], "blocks": _BLOCKS_BY_COST},
                {"depths": [1, 2, 3], "widths": [192, 256, 320], "blocks": _BLOCKS_BY_COST},
            ],
        },
        "neck": {"types": ["fpn", "bifpn", "pan"], "widths": [64, 96, 128], "repeats": [1, 2, 3]},
        "head": {"types": ["fcos", "retinanet", "two_stage"], "widths": [64, 96, 128], "num_convs": [1, 2, 3, 4], "anchor_scale": 4.0},
        "activation": "relu",
    },
}
# The CPU demo's space: `tiny` without the two-stage head, whose paths cost ~2.4x an FCOS path per
# supernet step on CPU; at a fixed time the supernet then trains ~2.4x more steps, which is what
# the inherited weights lack (benchmarks/results/weight_sharing_cpu_tiny_steps.json).
PRESETS["tiny_one_stage"] = {**PRESETS["tiny"], "head": {**PRESETS["tiny"]["head"], "types": ["fcos", "retinanet"]}}
