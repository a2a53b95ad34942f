import itertools
import json
import random
from dataclasses import replace

import pytest

from supernet import Arch, SearchSpace, registry
from supernet.registry import components, knobs, register_block, register_neck
from supernet.space import NeckArch, PRESETS


@pytest.fixture(scope="module")
def tiny():
    return SearchSpace.preset("tiny")


def micro_space() -> SearchSpace:
    return SearchSpace.from_dict(
        {
            "resolutions": [64, 96],
            "backbone": {
                "stem_widths": [8],
                "stages": [
                    {"depths": [1], "widths": [8], "blocks": ["basic"]},
                    {"depths": [1, 2], "widths": [8, 16], "blocks": ["basic", "ir_k3_e3"]},
                    {"depths": [1], "widths": [16], "blocks": ["bottleneck"]},
                    {"depths": [1], "widths": [16], "blocks": ["basic"]},
                ],
            },
            "neck": {"types": ["fpn", "pan"], "widths": [8], "repeats": [1, 2]},
            "head": {"types": ["fcos"], "widths": [8, 16], "num_convs": [1]},
        }
    )


def test_registries_hold_the_built_in_components_and_their_knobs():
    assert len(components("block")) == 14  # ir k3/5/7 x e3/6 x se on/off, basic, bottleneck
    assert set(components("neck")) == {"fpn", "pan", "bifpn"} and set(components("head")) == {"fcos", "retinanet", "two_stage"}
    assert knobs("neck", "fpn") == () and knobs("neck", "pan") == knobs("neck", "bifpn") == ("repeats",)
    assert all(knobs("head", h) == ("num_convs",) for h in components("head"))


@pytest.fixture
def own_registries(monkeypatch):
    """Registrations made by the test are gone after it."""
    monkeypatch.setattr(registry, "_REGISTRIES", {kind: dict(components(kind)) for kind in registry.KINDS})


def test_a_registered_component_is_a_choice_and_bad_registrations_are_refused(own_registries):
    class Repeating:
        knobs = ("repeats",)

    register_neck("test_repeating_neck", Repeating)
    register_block("test_block", components("block")["basic"])
    space = SearchSpace.from_dict({**micro_space().to_dict(), "neck": {"types": ["fpn", "test_repeating_neck"], "widths": [8], "repeats": [1, 2]}})
    assert space.choices(("neck", "repeats"), {"neck.type": "test_repeating_neck"}) == (1, 2)
    assert space.choices(("neck", "repeats"), {"neck.type": "fpn"}) == (1,)
    stages = [{**st, "blocks": ["test_block"]} for st in micro_space().to_dict()["backbone"]["stages"]]
    SearchSpace.from_dict({**micro_space().to_dict(), "backbone": {"stem_widths": [8], "stages": stages}})
    with pytest.raises(ValueError, match=r"space.neck.types: 'nope' is not one of .*register_neck adds one"):
        SearchSpace.from_dict({**micro_space().to_dict(), "neck": {"types": ["nope"], "widths": [8], "repeats": [1]}})
    with pytest.raises(ValueError, match="already registered"):
        register_neck("fpn", Repeating)
    with pytest.raises(ValueError, match="knobs"):
        register_neck("test_bad_knobs", type("Bad", (), {"knobs": "repeats"}))
    with pytest.raises(ValueError, match="identifier"):
        register_block("has space", Repeating)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_round_trip_json_and_yaml(name, tmp_path):
    space = SearchSpace.preset(name)
    assert SearchSpace.from_json(space.to_json()) == space
    for suffix in (".json", ".yaml"):
        path = tmp_path / f"space{suffix}"
        space.save(path)
        assert SearchSpace.load(path) == space
        assert SearchSpace.resolve(str(path)) == space


def test_presets_cover_every_choice():
    for name in PRESETS:
        space = SearchSpace.preset(name)
        assert set(space.neck.types) == {"fpn", "pan", "bifpn"}
        assert set(space.head.types) == ({"fcos", "retinanet"} if name == "tiny_one_stage" else {"fcos", "retinanet", "two_stage"})
        for stage in space.backbone.stages:
            assert set(stage.blocks) == set(components("block"))
    tiny = SearchSpace.preset("tiny")
    assert replace(tiny, head=replace(tiny.head, types=("fcos", "retinanet"))) == SearchSpace.preset("tiny_one_stage")
    assert min(tiny.resolutions) == 64 and max(tiny.resolutions) == 128
    coco = SearchSpace.preset("coco")
    assert min(coco.resolutions) >= 320 and max(coco.resolutions) >= 512


def test_arch_round_trip_and_hash(tiny):
    rng = random.Random(0)
    for _ in range(50):
        arch = tiny.sample(rng)
        back = Arch.from_json(arch.to_json())
        assert back == arch and back.hash() == arch.hash()
        assert json.loads(arch.to_json())["backbone"]["stages"][0]["depth"] == arch.backbone.stages[0].depth
    a, b = tiny.smallest(), tiny.largest()
    assert a.hash() != b.hash() and len(a.hash()) == 12


def test_hash_is_pinned():
    """The hash names runs and history entries: it must not change between versions or machines."""
    arch = Arch.from_json(
        '{"resolution": 96, "backbone": {"stem_width": 8, "stages": [{"width": 8, "blocks": ["basic"]}, '
        '{"width": 16, "blocks": ["ir_k3_e6_se", "bottleneck"]}, {"width": 24, "blocks": ["ir_k5_e3"]}, '
        '{"width": 32, "blocks": ["ir_k7_e6"]}]}, "neck": {"type": "bifpn", "width": 16, "repeats": 2}, '
        '"head": {"type": "two_stage", "width": 24, "num_convs": 2}}'
    )
    assert arch.hash() == "14ffad1d33c8"
    SearchSpace.preset("tiny").validate(arch)


def test_sampling_is_reproducible_and_covers_every_value(tiny):
    a = [tiny.sample(random.Random(7)) for _ in range(3)]
    assert a[0] == a[1] == a[2]
    rng = random.Random(1)
    archs = [tiny.sample(rng) for _ in range(3000)]
    assert len({x.hash() for x in archs}) > 2900
    for x in archs:
        tiny.validate(x)
    seen = lambda f: {f(x) for x in archs}  # noqa: E731
    assert seen(lambda x: x.resolution) == set(tiny.resolutions)
    assert seen(lambda x: x.backbone.stem_width) == set(tiny.backbone.stem_widths)
    for i, stage in enumerate(tiny.backbone.stages):
        assert {x.backbone.stages[i].depth for x in archs} == set(stage.depths)
        assert {x.backbone.stages[i].width for x in archs} == set(stage.widths)
        for j in range(max(stage.depths)):
            got = {x.backbone.stages[i].blocks[j] for x in archs if x.backbone.stages[i].depth > j}
            assert got == set(stage.blocks), (i, j)
    assert seen(lambda x: x.neck.type) == set(tiny.neck.types)
    assert seen(lambda x: x.neck.width) == set(tiny.neck.widths)
    for t in tiny.neck.types:
        assert {x.neck.repeats for x in archs if x.neck.type == t} == set(tiny.choices(("neck", "repeats"), {"neck.type": t}))
    assert seen(lambda x: x.head.type) == set(tiny.head.types)
    assert seen(lambda x: x.head.width) == set(tiny.head.widths)
    assert seen(lambda x: x.head.num_convs) == set(tiny.head.num_convs)


def test_size_counts_distinct_archs():
    space = micro_space()
    # enumerate by hand: resolution 2 x stage1 (widths 2 x (2 + 4 blocks lists)) x neck (fpn 1 + pan 2) x head widths 2
    assert space.size() == 2 * (2 * (2 + 4)) * (1 + 2) * 2
    rng = random.Random(0)
    distinct = {space.sample(rng).hash() for _ in range(5000)}
    assert len(distinct) == space.size()


def test_smallest_and_largest(tiny):
    small, large = tiny.smallest(), tiny.largest()
    tiny.validate(small), tiny.validate(large)
    assert small.resolution == 64 and large.resolution == 128
    assert all(s.depth == min(ss.depths) for s, ss in zip(small.backbone.stages, tiny.backbone.stages))
    assert all(s.depth == max(ss.depths) for s, ss in zip(large.backbone.stages, tiny.backbone.stages))
    assert large.neck.repeats == max(tiny.neck.repeats) and "repeats" in knobs("neck", large.neck.type)


def test_validate_names_field_and_allowed_values(tiny):
    arch = tiny.smallest().to_dict()
    arch["backbone"]["stages"][2]["width"] = 999
    with pytest.raises(ValueError, match=r"arch\.backbone\.stages\[2\]\.width: 999 .*allowed values: \[24, 32\]"):
        tiny.validate(Arch.from_dict(arch))
    arch = tiny.smallest().to_dict()
    arch["backbone"]["stages"][0]["blocks"] = ["ir_k9_e3"]
    with pytest.raises(ValueError, match=r"stages\[0\]\.blocks\[0\]: 'ir_k9_e3'"):
        tiny.validate(Arch.from_dict(arch))
    arch = tiny.smallest().to_dict()
    arch["neck"] = {"type": "fpn", "width": 16, "repeats": 2}
    with pytest.raises(ValueError, match=r"arch\.neck\.repeats: 2 .*allowed values: \[1\]"):
        tiny.validate(Arch.from_dict(arch))
    arch = tiny.smallest().to_dict()
    arch["head"]["type"] = "yolo"
    with pytest.raises(ValueError, match=r"arch\.head\.type: 'yolo'.*'fcos'"):
        tiny.validate(Arch.from_dict(arch))


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.pop("resolution"), r"arch: missing key 'resolution'"),
        (lambda d: d["head"].update(width="wide"), r"arch\.head\.width: expected int"),
        (lambda d: d["backbone"]["stages"][1].update(depth=5), r"stages\[1\]\.depth: 5 does not match"),
    ],
)
def test_arch_from_dict_errors(tiny, mutate, message):
    d = tiny.smallest().to_dict()
    mutate(d)
    with pytest.raises(ValueError, match=message):
        Arch.from_dict(d)
    with pytest.raises(ValueError, match="not valid JSON"):
        Arch.from_json("{oops")


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.update(resolutions=[64, 100]), r"resolutions: 100 is not a multiple of 32"),
        (lambda d: d["backbone"]["stages"][1].update(blocks=["basic", "resnext"]), r"backbone\.stages\[1\]\.blocks: 'resnext' is not one of"),
        (lambda d: d["neck"].update(types=["fpn", "nasfpn"]), r"neck\.types: 'nasfpn'"),
        (lambda d: d["head"].update(widths=[]), r"head\.widths: needs at least one choice"),
        (lambda d: d["head"].update(num_convs=[1, 0]), r"head\.num_convs: 0 is not a positive integer"),
        (lambda d: d["neck"].update(colour="red"), r"neck: unknown key\(s\) \['colour'\]"),
        (lambda d: d["backbone"]["stages"].pop(), r"backbone.*exactly 4 stages"),
        (lambda d: d.pop("head"), r"missing key 'head'"),
    ],
)
def test_space_errors_name_the_field(mutate, message):
    d = json.loads(SearchSpace.preset("tiny").to_json())
    mutate(d)
    with pytest.raises(ValueError, match=message):
        SearchSpace.from_dict(d)


def test_space_file_errors(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        SearchSpace.load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match=r"bad\.json: not valid JSON"):
        SearchSpace.load(bad)
    with pytest.raises(ValueError, match="unknown search space preset"):
        SearchSpace.preset("huge")
    with pytest.raises(ValueError, match="`space`"):
        SearchSpace.resolve("huge")


def test_blocks_past_depth_are_not_choices():
    space = micro_space()
    archs = list(itertools.islice((space.sample(random.Random(s)) for s in range(200)), 200))
    for a in archs:
        assert len(a.backbone.stages[1].blocks) == a.backbone.stages[1].depth


def test_genes_encode_decode_round_trip(tiny):
    names = [g.name for g in tiny.genes()]
    assert len(names) == len(set(names))
    assert sum(len(g.choices) for g in tiny.genes()) > 0
    rng = random.Random(4)
    for _ in range(200):
        arch = tiny.sample(rng)
        values = tiny.encode(arch)
        assert set(values) == set(names)
        assert tiny.decode(values) == arch
        active = tiny.active_genes(values)
        assert len(active) == 2 + sum(2 + s.depth for s in arch.backbone.stages) + (3 if arch.neck.type != "fpn" else 2) + 3
    values = tiny.encode(tiny.smallest())
    values["neck.type"] = "fpn"
    values["neck.repeats"] = 2  # inactive for FPN: ignored
    assert tiny.decode(values).neck.repeats == 1


def test_restrict_to_blocks_and_structure(tiny):
    structural = tiny.restrict(blocks=["ir_k3_e6"])
    assert all(s.blocks == ("ir_k3_e6",) for s in structural.backbone.stages)
    assert structural.neck == tiny.neck and structural.resolutions == tiny.resolutions
    micro = micro_space()  # stages 0, 2, 3 offer no ir_k3_e3: their first choice is kept
    assert [s.blocks for s in micro.restrict(blocks=["ir_k3_e3"]).backbone.stages] == [("basic",), ("ir_k3_e3",), ("bottleneck",), ("basic",)]
    with pytest.raises(ValueError, match=r"blocks: none of \['bogus'\]"):
        tiny.restrict(blocks=["bogus"])
    base = tiny.sample(5)
    sub = tiny.restrict(structure=base)
    assert sub.resolutions == (base.resolution,) and sub.neck.types == (base.neck.type,) and sub.head.types == (base.head.type,)
    assert [s.depths for s in sub.backbone.stages] == [(s.depth,) for s in base.backbone.stages]
    assert sub.neck.widths == tiny.neck.widths and sub.backbone.stages[0].blocks == tiny.backbone.stages[0].blocks
    rng = random.Random(0)
    for _ in range(50):  # every arch of the sub-space is one of the space with the structure kept
        a = tiny.validate(sub.sample(rng))
        assert (a.resolution, a.neck.type, a.head.type) == (base.resolution, base.neck.type, base.head.type)
    with pytest.raises(ValueError, match=r"^arch\.[\w.\[\]]+: \S+ is not allowed"):  # an arch of another space, the field named
        micro.restrict(structure=base)


def test_restrict_to_a_region(tiny):
    """Resolutions and head types kept, in the space's order; depths, widths, necks stay free."""
    region = tiny.restrict(blocks=["ir_k3_e6"], resolutions=[tiny.resolutions[-1], tiny.resolutions[0]], heads=[tiny.head.types[0]])
    assert region.resolutions == (tiny.resolutions[0], tiny.resolutions[-1]) and region.head.types == tiny.head.types[:1]
    assert region.neck == tiny.neck and [s.depths for s in region.backbone.stages] == [s.depths for s in tiny.backbone.stages]
    rng = random.Random(0)
    drawn = [tiny.validate(region.sample(rng)) for _ in range(60)]
    assert {a.resolution for a in drawn} == set(region.resolutions) and {a.head.type for a in drawn} == set(region.head.types)
    assert len({a.neck.type for a in drawn}) == len(tiny.neck.types) > 1
    with pytest.raises(ValueError, match=r"^resolutions: \[100\] not among this space's choices \[64, 96, 128\]$"):
        tiny.restrict(resolutions=[100, 128])
    with pytest.raises(ValueError, match=r"^heads: needs at least one of this space's choices"):
        tiny.restrict(heads=[])


def test_genes_are_the_one_description_of_the_choices(tiny):
    """Keys are structured (no string to parse), names are made from them, conditions point at
    an earlier gene, and validation reads the same genes: an inactive field must hold its value."""
    genes = tiny.genes()
    assert tiny.genes() is genes  # built once per space
    by_name = {g.name: g for g in genes}
    block = by_name["backbone.stages[2].blocks[1]"]
    assert block.key == ("backbone", "stages", 2, "blocks", 1) and not block.ordered
    assert block.when == (("backbone", "stages", 2, "depth"), frozenset({2, 3}))
    seen = set()
    for g in genes:
        assert g.when is None or g.when_name in seen, g.name
        seen.add(g.name)
    assert {g.name for g in genes if g.elastic == "depth"} == {f"backbone.stages[{i}].depth" for i in range(4)}
    assert {g.name for g in genes if g.elastic == "width"} == {"backbone.stem_width", "neck.width", "head.width",
                                                  *(f"backbone.stages[{i}].width" for i in range(4))}
    fpn = replace(tiny.smallest(), neck=NeckArch("fpn", 16, 2))
    with pytest.raises(ValueError, match=r"arch\.neck\.repeats: 2 is not allowed; allowed values: \[1\]"):
        tiny.validate(fpn)
    assert SearchSpace.containing(tiny.largest()).genes()[0].choices == (tiny.largest().resolution,)
