"""The search space and an architecture, as plain validated data.

A `SearchSpace` lists every choice; an `Arch` is one value for each of them. Both are frozen
dataclasses that round-trip through JSON/YAML, so spaces and results can be written by hand,
diffed and stored next to checkpoints. Block, neck and head names are those of
`supernet.registry` (built-in or registered by the user); importing this module imports no torch.

Conventions:
- The backbone is a stride-2 stem followed by stages that each start with a stride-2 block; the
  last three stages (strides 8, 16, 32) feed the neck, so every resolution is a multiple of 32.
- Elastic depth: a stage with depth d runs its first d block positions; an `Arch` names the block
  type of exactly those d positions (positions past the depth have no choice to make).
- A knob (`neck.repeats`, `head.num_convs`) applies to the types whose class declares it (their
  `knobs`); FPN is a single top-down pass and declares no repeats, so its arch holds repeats 1.
- Categorical choices (block types, neck and head types) are listed from cheapest to most
  expensive: `smallest()`/`largest()` take the first/last of them, and the minimum/maximum of every
  numeric choice.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

from .registry import components, knobs

NUM_STAGES = 4  # after a stride-2 stem, each starting with a stride-2 block: strides 4, 8, 16, 32
BACKBONE_STRIDE = 2 ** (NUM_STAGES + 1)
NUM_NECK_LEVELS = 3
WIDTH_SAMPLING = ("uniform", "wide")  # how SearchSpace.sample draws widths
NORMS = ("bn", "gn")  # BatchNorm, or GroupNorm over groups of GROUP_CHANNELS channels
GROUP_CHANNELS = 8
DEPTH_SAMPLING = ("uniform", "deep")  # and stage depths


def _check_choices(where: str, values: Sequence[Any], kind: type, component: str | None = None) -> tuple:
    """The choices as a tuple, each a positive int (or str), distinct, and for a `component`
    kind ("block", "neck", "head") a registered name."""
    values = tuple(values) if isinstance(values, (list, tuple)) else (values,)
    if not values:
        raise ValueError(f"{where}: needs at least one choice")
    for v in values:
        if kind is int and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
            raise ValueError(f"{where}: {v!r} is not a positive integer")
        if kind is str and not isinstance(v, str):
            raise ValueError(f"{where}: {v!r} is not a string")
        if component is not None and v not in components(component):
            raise ValueError(f"{where}: {v!r} is not one of {list(components(component))} (register_{component} adds one)")
    if len(set(values)) != len(values):
        raise ValueError(f"{where}: duplicate choices in {list(values)}")
    return values


def _subset(where: str, values: Sequence[Any], offered: tuple) -> tuple:
    """The choices of `offered` that are in `values`, in the space's order; every one of `values`
    must be offered."""
    values = tuple(values)
    missing = [v for v in values if v not in offered]
    if not values:
        raise ValueError(f"{where}: needs at least one of this space's choices {list(offered)}")
    if missing:
        raise ValueError(f"{where}: {missing} not among this space's choices {list(offered)}")
    return tuple(v for v in offered if v in values)


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
        object.__setattr__(self, "blocks", _check_choices("blocks", self.blocks, str, "block"))


@dataclass(frozen=True)
class BackboneSpace:
    stem_widths: tuple[int, ...]
    stages: tuple[StageSpace, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "stem_widths", _check_choices("stem_widths", self.stem_widths, int))
        object.__setattr__(self, "stages", tuple(self.stages))
        if len(self.stages) != NUM_STAGES:  # the last NUM_NECK_LEVELS feed the neck
            raise ValueError(f"stages: exactly {NUM_STAGES} stages are supported (strides {[2 ** (i + 2) for i in range(NUM_STAGES)]})")


Options = tuple  # ((name, value), ...) sorted by name: a knob of a user's component, hashable; JSON: {name: value}


def _check_options(where: str, options: Any, kind: str, fixed: tuple[str, ...]) -> Options:
    """`options` ({knob: choices}) of a neck or head space as sorted (name, choices) pairs: knobs
    that user components declare besides the built-in fields `fixed`; every type's declared
    knobs must be given."""
    items = options.items() if isinstance(options, dict) else options
    try:
        pairs = tuple(sorted((str(k), v) for k, v in items))
    except (TypeError, ValueError):
        raise ValueError(f"{where}: expected a mapping {{knob: [choices]}}, got {options!r}") from None
    out = []
    for name, choices in pairs:
        if not name.isidentifier() or name in fixed:
            raise ValueError(f"{where}.{name}: not a knob name (an identifier other than {list(fixed)})")
        out.append((name, _check_choices(f"{where}.{name}", choices, int)))
    return tuple(out)


def _check_declared(where: str, kind: str, types: tuple[str, ...], given: Iterable[str]) -> None:
    given = set(given)
    for t in types:
        missing = [k for k in knobs(kind, t) if k not in given]
        if missing:
            raise ValueError(f"{where}: {kind} {t!r} declares the knob(s) {missing}; give their choices as {kind}.options")


@dataclass(frozen=True)
class NeckSpace:
    types: tuple[str, ...]
    widths: tuple[int, ...]
    repeats: tuple[int, ...]
    options: Options = ()  # {knob: choices} of user necks' own knobs

    def __post_init__(self) -> None:
        object.__setattr__(self, "types", _check_choices("types", self.types, str, "neck"))
        object.__setattr__(self, "widths", _check_choices("widths", self.widths, int))
        object.__setattr__(self, "repeats", _check_choices("repeats", self.repeats, int))
        object.__setattr__(self, "options", _check_options("options", self.options, "neck", ("repeats",)))
        _check_declared("types", "neck", self.types, ["repeats", *dict(self.options)])


@dataclass(frozen=True)
class HeadSpace:
    types: tuple[str, ...]
    widths: tuple[int, ...]
    num_convs: tuple[int, ...]
    anchor_scale: float = 4.0  # anchor size = anchor_scale x stride (RetinaNet, RPN); fixed, not searched
    options: Options = ()  # {knob: choices} of user heads' own knobs

    def __post_init__(self) -> None:
        object.__setattr__(self, "types", _check_choices("types", self.types, str, "head"))
        object.__setattr__(self, "widths", _check_choices("widths", self.widths, int))
        object.__setattr__(self, "num_convs", _check_choices("num_convs", self.num_convs, int))
        object.__setattr__(self, "options", _check_options("options", self.options, "head", ("num_convs",)))
        _check_declared("types", "head", self.types, ["num_convs", *dict(self.options)])
        if not isinstance(self.anchor_scale, (int, float)) or self.anchor_scale <= 0:
            raise ValueError(f"anchor_scale: {self.anchor_scale!r} is not a positive number")


@dataclass(frozen=True)
class SearchSpace:
    resolutions: tuple[int, ...]
    backbone: BackboneSpace
    neck: NeckSpace
    head: HeadSpace
    activation: str = "relu"  # timm activation name used by every layer; fixed, not searched
    norm: str = "bn"  # every layer's normalisation (NORMS); fixed, not searched

    def __post_init__(self) -> None:
        res = _check_choices("resolutions", self.resolutions, int)
        for r in res:
            if r % BACKBONE_STRIDE:
                raise ValueError(f"resolutions: {r} is not a multiple of {BACKBONE_STRIDE} (the backbone's total stride)")
        object.__setattr__(self, "resolutions", res)
        if self.norm not in NORMS:
            raise ValueError(f"norm: expected one of {list(NORMS)}, got {self.norm!r}")
        if self.norm == "gn":
            widths = {w for g in self.genes() if g.elastic == "width" for w in g.choices}
            if odd := sorted(w for w in widths if w % GROUP_CHANNELS):
                raise ValueError(f"norm: gn normalises groups of {GROUP_CHANNELS} channels; widths {odd} are not multiples of {GROUP_CHANNELS}")

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
                **{k: data[k] for k in ("activation", "norm") if k in data},
            )
        except ValueError as e:
            msg = str(e)
            raise ValueError(msg if msg.startswith(source) else f"{source}.{msg}") from None

    def to_dict(self) -> dict:
        """Plain data; `norm` only when not BatchNorm, so spaces (and the tables and checkpoints
        that record them) written before GroupNorm existed stay equal to today's."""
        data = _plain_options(_plain(asdict(self)))
        if data["norm"] == "bn":
            del data["norm"]
        return data

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
        raise ValueError(f"`space`: {spec!r} is neither a preset {sorted(PRESETS)} nor a .yaml/.json file")

    @classmethod
    def containing(cls, arch: "Arch", activation: str = "relu", anchor_scale: float = 4.0, norm: str = "bn") -> "SearchSpace":
        """The smallest space that contains `arch`: one choice per gene, except that each stage
        offers at every position the block types `arch` uses in it (so it holds several archs
        when a stage mixes types). A standalone detector is built on it, with its path."""
        return cls(
            resolutions=(arch.resolution,),
            backbone=BackboneSpace(
                stem_widths=(arch.backbone.stem_width,),
                stages=tuple(StageSpace((s.depth,), (s.width,), tuple(dict.fromkeys(s.blocks))) for s in arch.backbone.stages),
            ),
            neck=NeckSpace((arch.neck.type,), (arch.neck.width,), (arch.neck.repeats,), tuple((k, (v,)) for k, v in arch.neck.options)),
            head=HeadSpace((arch.head.type,), (arch.head.width,), (arch.head.num_convs,), anchor_scale,
                           tuple((k, (v,)) for k, v in arch.head.options)),
            activation=activation,
            norm=norm,
        )

    def restrict(self, blocks: Sequence[str] | None = None, structure: "Arch | None" = None,
                 resolutions: Sequence[int] | None = None, heads: Sequence[str] | None = None) -> "SearchSpace":
        """The sub-space a training stage samples from (SM-NAS's stage-matched training).

        `blocks`: every stage keeps only these block types, or its first choice where it offers
        none of them (the structural stage runs one block everywhere). `structure`: the
        resolution, neck and head types and stage depths of this arch are fixed (the modular
        stage's fine-tune); widths, blocks, repeats and convs stay free. `resolutions`, `heads`:
        only these input resolutions and head types (a region of the space, as few-shot NAS
        splits a supernet); everything else stays free. Raises ValueError naming what does not
        fit this space."""
        space = self
        if blocks is not None:
            blocks = tuple(blocks)
            offered = {b for s in self.backbone.stages for b in s.blocks}
            if not blocks or not offered & set(blocks):
                raise ValueError(f"blocks: none of {list(blocks)} is a block choice of this space ({sorted(offered)})")
            stages = tuple(StageSpace(s.depths, s.widths, tuple(b for b in s.blocks if b in blocks) or s.blocks[:1])
                           for s in self.backbone.stages)
            space = replace(space, backbone=replace(space.backbone, stages=stages))
        if resolutions is not None:
            space = replace(space, resolutions=_subset("resolutions", resolutions, space.resolutions))
        if heads is not None:
            space = replace(space, head=replace(space.head, types=_subset("heads", heads, space.head.types)))
        if structure is not None:
            self.validate(structure)
            stages = tuple(replace(s, depths=(a.depth,)) for s, a in zip(space.backbone.stages, structure.backbone.stages))
            space = replace(space, resolutions=(structure.resolution,), backbone=replace(space.backbone, stages=stages),
                            neck=replace(space.neck, types=(structure.neck.type,)), head=replace(space.head, types=(structure.head.type,)))
        return space

    # ---- architectures: everything below walks `genes()`, the one description of the choices --
    def genes(self) -> tuple["Gene", ...]:
        """Every choice of this space, in a fixed order (a gene's condition refers to an earlier
        gene): what validation, sampling, extremes, size, encode/decode, samplers and the search
        stages work on.

        Some genes are inactive for some archs (blocks past a stage's depth, neck repeats of FPN);
        `decode` ignores them, so archs, not gene vectors, are the unit to deduplicate."""
        cached = self.__dict__.get("_genes")
        if cached is None:  # built once per space: samplers and the search call this every draw
            cached = self._build_genes()
            object.__setattr__(self, "_genes", cached)
        return cached

    def _build_genes(self) -> tuple["Gene", ...]:
        bb, neck, head = self.backbone, self.neck, self.head
        genes = [Gene(("resolution",), self.resolutions, structure=True), Gene(("backbone", "stem_width"), bb.stem_widths, elastic="width")]
        for i, s in enumerate(bb.stages):
            stage = ("backbone", "stages", i)
            genes += [Gene((*stage, "depth"), s.depths, structure=True, elastic="depth"), Gene((*stage, "width"), s.widths, elastic="width")]
            genes += [Gene((*stage, "blocks", j), s.blocks, ordered=False, when=((*stage, "depth"), frozenset(d for d in s.depths if d > j)))
                      for j in range(max(s.depths))]
        genes += [
            Gene(("neck", "type"), neck.types, ordered=False, structure=True),
            Gene(("neck", "width"), neck.widths, elastic="width"),
            Gene(("neck", "repeats"), neck.repeats, when=(("neck", "type"), declaring("neck", neck.types, "repeats")), inactive=1),
            Gene(("head", "type"), head.types, ordered=False, structure=True),
            Gene(("head", "width"), head.widths, elastic="width"),
            Gene(("head", "num_convs"), head.num_convs, when=(("head", "type"), declaring("head", head.types, "num_convs")), inactive=1),
        ]
        for part, sub in (("neck", neck), ("head", head)):  # user components' own knobs, after the part's type: ordered numbers
            at = next(i for i, g in enumerate(genes) if g.key == (part, "type")) + 1
            while at < len(genes) and genes[at].key[0] == part:
                at += 1
            genes[at:at] = [Gene((part, "options", k), choices, when=((part, "type"), declaring(part, sub.types, k))) for k, choices in sub.options]
        return tuple(genes)

    def gene(self, key: GeneKey) -> "Gene":
        """The gene at `key`, e.g. ("neck", "repeats")."""
        by_key = self.__dict__.get("_by_key")
        if by_key is None:
            by_key = {g.key: g for g in self.genes()}
            object.__setattr__(self, "_by_key", by_key)
        if key not in by_key:
            raise ValueError(f"gene {gene_name(key)}: not a choice of this space")
        return by_key[key]

    def choices(self, key: GeneKey, values: dict[str, Any]) -> tuple:
        """What the gene at `key` may take given the values (by name) of the genes it depends on:
        its choices while active, else only its inactive value (FPN's repeats: (1,))."""
        g = self.gene(key)
        return g.choices if self.is_active(g, values) else (g.inactive,)

    def knob_gene(self, part: str, name: str) -> "Gene":
        """The gene of knob `name` of the neck or head (`part`): a field's, or a user option's."""
        return self.gene((part, name)) if name in ("repeats", "num_convs") else self.gene((part, "options", name))

    def variants(self, part: str, type_: str) -> list:
        """Every neck (part "neck") or head ("head") of type `type_` this space offers, as
        `NeckArch`/`HeadArch`: its width and knobs in every combination (what the latency
        table enumerates and the extremes choose from)."""
        genes = [g for g in self.genes() if g.key[0] == part and g.key != (part, "type")]
        out = []
        for combo in itertools.product(*(self.choices(g.key, {f"{part}.type": type_}) for g in genes)):
            values = {g.key[1:]: v for g, v in zip(genes, combo)}
            options = tuple((key[1], v) for key, v in values.items() if key[0] == "options" and v is not None)
            if part == "neck":
                out.append(NeckArch(type_, values[("width",)], values[("repeats",)], options))
            else:
                out.append(HeadArch(type_, values[("width",)], values[("num_convs",)], options))
        return out

    @staticmethod
    def is_active(gene: "Gene", values: dict[str, Any]) -> bool:
        """Whether `decode` reads `gene`, given the values (by name) of the genes before it."""
        return gene.when is None or values[gene.when_name] in gene.when[1]

    def active_genes(self, values: dict[str, Any]) -> list[str]:
        """Names of the genes that `decode(values)` reads."""
        return [g.name for g in self.genes() if self.is_active(g, values)]

    def _assign(self, pick: Callable[["Gene"], Any]) -> "Arch":
        """The arch whose active genes take `pick(gene)`, drawn in gene order."""
        values: dict[str, Any] = {}
        for g in self.genes():
            values[g.name] = pick(g) if self.is_active(g, values) else g.choices[0]
        return self.decode(values)

    def validate(self, arch: "Arch") -> "Arch":
        """Raise ValueError naming the first field of `arch` outside this space; return `arch`."""
        if not isinstance(arch, Arch):
            raise ValueError(f"arch: expected an Arch, got {type(arch).__name__}")
        if len(arch.backbone.stages) != len(self.backbone.stages):
            raise ValueError(f"arch.backbone.stages: has {len(arch.backbone.stages)} stages; the space has {len(self.backbone.stages)}")
        values: dict[str, Any] = {}
        for g in self.genes():
            value, active = _lookup(arch, g.key), self.is_active(g, values)
            allowed = g.choices if active else (g.inactive,)
            if active and value is _ABSENT:
                raise ValueError(f"arch.{g.name}: missing; allowed values: {list(allowed)}")
            if value is not _ABSENT and value not in allowed:
                raise ValueError(f"arch.{g.name}: {value!r} is not allowed; allowed values: {list(allowed)}")
            values[g.name] = value if active else g.choices[0]
        return arch

    def sample(self, rng: random.Random | int, widths: str = "uniform", depths: str = "uniform") -> "Arch":
        """Draw every active choice independently (SPOS), in gene order: a stage's depth before
        its blocks, the neck type before its repeats.

        widths="uniform" draws every choice uniformly. widths="wide" draws each width (stem,
        stages, neck, head) with weight 1..n by its rank, narrowest first: a narrow path trains
        only the leading channels, so under uniform draws the trailing channels of a layer, which
        only the wider paths use, get the fewest updates, and wide paths rank too low.
        depths="deep" does the same for stage depths, deepest most often: a stage's last block
        positions run only in the deeper paths."""
        ranked = ranked_kinds(widths, depths)
        rng = rng if isinstance(rng, random.Random) else random.Random(rng)

        def draw(g: Gene) -> Any:
            if g.elastic in ranked:
                return rng.choices(g.choices, weights=rank_weights(g.choices))[0]
            return rng.choice(g.choices)

        return self._assign(draw)

    def smallest(self, rng: random.Random | None = None) -> "Arch":
        """Every ordered choice at its least; the types (blocks, neck, head) the first listed, or
        drawn from `rng`: types have no order, and the presets' first are merely the cheapest."""
        return self._assign(lambda g: min(g.choices) if g.ordered else rng.choice(g.choices) if rng else g.choices[0])

    def largest(self, rng: random.Random | None = None) -> "Arch":
        """Every ordered choice at its most; the types the last listed, or drawn from `rng`."""
        return self._assign(lambda g: max(g.choices) if g.ordered else rng.choice(g.choices) if rng else g.choices[-1])

    def narrowest(self, arch: "Arch") -> "Arch":
        """`arch` with every width (stem, stages, neck, head) at its least, all else kept: the
        path that runs only the leading channels `arch`'s own layers share."""
        values = self.encode(arch)
        return self.decode({**values, **{g.name: min(g.choices) for g in self.genes() if g.elastic == "width"}})

    def size(self) -> int:
        """Number of distinct architectures (inactive genes are not choices)."""
        genes = self.genes()
        dependents: dict[str, list[Gene]] = {}
        for g in genes:
            if g.when is not None:
                dependents.setdefault(g.when_name, []).append(g)
        n = 1
        for g in genes:
            if g.when is None:
                deps = dependents.get(g.name, [])
                n *= sum(math.prod(len(d.choices) for d in deps if v in d.when[1]) for v in g.choices)
        return n

    def decode(self, values: dict[str, Any]) -> "Arch":
        """The arch of a full gene assignment (name -> value); inactive genes are ignored."""
        tree: dict = {}
        for g in self.genes():
            if self.is_active(g, values):
                _put(tree, g.key, values[g.name])
            elif g.inactive is not None:
                _put(tree, g.key, g.inactive)
        return self.validate(Arch.from_dict(tree, "genes"))

    def encode(self, arch: "Arch") -> dict[str, Any]:
        """Gene values of `arch`; inactive genes take their first choice."""
        self.validate(arch)
        values: dict[str, Any] = {}
        for g in self.genes():
            values[g.name] = _lookup(arch, g.key) if self.is_active(g, values) else g.choices[0]
        return values


GeneKey = tuple  # the path of a value in `Arch.to_dict()`: ("backbone", "stages", 0, "blocks", 1)


@dataclass(frozen=True)
class Gene:
    """One choice of a space, as data: where its value sits in an arch, what it may take, how
    samplers and the search treat it, and when it counts at all."""

    key: GeneKey
    choices: tuple
    ordered: bool = True  # numbers: smallest()/largest() take min/max; types have no order
    elastic: Optional[str] = None  # "width" (a channel count) or "depth" (of a stage): drawn by rank under wide / deep sampling
    structure: bool = False  # part of the structure (SM-NAS) that the modular stage keeps fixed
    when: Optional[tuple[GeneKey, frozenset]] = None  # active only while that earlier gene's value is in the set
    inactive: Any = None  # the arch's value while inactive (None: the arch has no such field then)
    name: str = field(init=False)  # its id in values dicts, search state and messages
    when_name: Optional[str] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", gene_name(self.key))
        object.__setattr__(self, "when_name", None if self.when is None else gene_name(self.when[0]))


def gene_name(key: GeneKey) -> str:
    """A gene's name: "backbone.stages[0].blocks[1]" (made from the key, never parsed back)."""
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" if i else p for i, p in enumerate(key))


def declaring(kind: str, types: Iterable[str], knob: str) -> frozenset[str]:
    """The `types` of a component kind whose class declares `knob`."""
    return frozenset(t for t in types if knob in knobs(kind, t))


def ranked_kinds(widths: str, depths: str) -> frozenset[str]:
    """The elastic kinds drawn with `rank_weights` under these width and depth samplings."""
    if widths not in WIDTH_SAMPLING:
        raise ValueError(f"widths: {widths!r} is not one of {list(WIDTH_SAMPLING)}")
    if depths not in DEPTH_SAMPLING:
        raise ValueError(f"depths: {depths!r} is not one of {list(DEPTH_SAMPLING)}")
    return frozenset({"width"} if widths == "wide" else ()) | frozenset({"depth"} if depths == "deep" else ())


def rank_weights(choices: Sequence[int]) -> list[int]:
    """Weights 1..n by rank, least first: wide / deep sampling draws in these proportions."""
    rank = sorted(choices)
    return [rank.index(c) + 1 for c in choices]


_ABSENT = object()


def _lookup(arch: "Arch", key: GeneKey) -> Any:
    """The value at `key` in an `Arch` (its attributes mirror `to_dict()`), or _ABSENT."""
    node: Any = arch
    for part in key:
        if isinstance(part, int):
            if part >= len(node):
                return _ABSENT
            node = node[part]
        elif isinstance(node, tuple):  # an arch part's options: (name, value) pairs
            node = dict(node).get(part, _ABSENT)
        else:
            node = getattr(node, part, _ABSENT)
        if node is _ABSENT:
            return _ABSENT
    return node


def _put(tree: dict, key: GeneKey, value: Any) -> None:
    """Set `value` at `key`, creating the dicts and lists on the way (list items in order)."""
    node: Any = tree
    for part, child in zip(key, [*key[1:], None]):
        new = value if child is None else [] if isinstance(child, int) else {}
        if isinstance(node, list):
            if part == len(node):
                node.append(new)
            elif child is None:
                node[part] = value
        elif child is None or part not in node:
            node[part] = new
        if child is not None:
            node = node[part]


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


class _Knobs:
    """What a neck's or head's arch shares: its knobs by name, built-in field or user option."""

    options: Options

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", tuple(sorted(dict(self.options).items())))

    def knob(self, name: str) -> int:
        """The value of knob `name`: a field (repeats, num_convs) or one of the `options`."""
        return getattr(self, name) if name in self.__dataclass_fields__ and name != "options" else dict(self.options)[name]


@dataclass(frozen=True)
class NeckArch(_Knobs):
    type: str
    width: int
    repeats: int = 1
    options: Options = ()  # user necks' own knobs: ((name, value), ...); JSON {name: value}, left out when empty


@dataclass(frozen=True)
class HeadArch(_Knobs):
    type: str
    width: int
    num_convs: int
    options: Options = ()


@dataclass(frozen=True)
class Arch:
    resolution: int
    backbone: BackboneArch
    neck: NeckArch
    head: HeadArch

    def to_dict(self) -> dict:
        d = _plain_options(_plain(asdict(self)))
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

        def options(part: dict, where: str) -> Options:
            given = part.get("options", {})
            if not isinstance(given, dict) or not all(isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in given.items()):
                raise ValueError(f"{where}.options: expected a mapping {{knob: integer}}, got {given!r}")
            return tuple(sorted(given.items()))

        return cls(
            resolution=get(data, "resolution", source, int),
            backbone=BackboneArch(stem_width=get(bb, "stem_width", f"{source}.backbone", int), stages=tuple(stages)),
            neck=NeckArch(
                type=get(neck, "type", f"{source}.neck", str),
                width=get(neck, "width", f"{source}.neck", int),
                repeats=get(neck, "repeats", f"{source}.neck", int) if "repeats" in neck else 1,
                options=options(neck, f"{source}.neck"),
            ),
            head=HeadArch(
                type=get(head, "type", f"{source}.head", str),
                width=get(head, "width", f"{source}.head", int),
                num_convs=get(head, "num_convs", f"{source}.head", int),
                options=options(head, f"{source}.head"),
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
        canonical = json.dumps(_plain_options(_plain(asdict(self))), sort_keys=True, separators=(",", ":"))
        return hashlib.sha1(canonical.encode()).hexdigest()[:12]


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _plain_options(d: dict) -> dict:
    """The plain form of a space or arch with its neck's and head's options as a mapping, left
    out where empty (so archs and spaces without user knobs keep their JSON and hashes)."""
    for part in ("neck", "head"):
        options = d[part].pop("options")
        if options:
            d[part]["options"] = {k: v for k, v in options}
    return d


def _atomic_write_text(path: Path, text: str) -> None:
    from .io import atomic_write_bytes

    atomic_write_bytes(path, text.encode())


_ALL_IR = [f"ir_k{k}_e{e}{se}" for k in (3, 5, 7) for e in (3, 6) for se in ("", "_se")]
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
