import importlib.util
from pathlib import Path

from supernet import SearchSpace

spec = importlib.util.spec_from_file_location("weight_sharing", Path(__file__).parents[1] / "benchmarks" / "weight_sharing.py")
weight_sharing = importlib.util.module_from_spec(spec)
spec.loader.exec_module(weight_sharing)


def test_each_row_frees_exactly_its_kind_of_choice():
    space = SearchSpace.preset("tiny")
    arch = space.restrict(blocks=("ir_k3_e6",)).smallest()
    widths = weight_sharing.sub_space(space, "widths")
    assert widths.validate(arch) and widths.resolutions == (arch.resolution,) and widths.head.types == (arch.head.type,)
    assert widths.neck.widths == space.neck.widths and all(s.blocks == ("ir_k3_e6",) for s in widths.backbone.stages)
    head = weight_sharing.sub_space(space, "head")
    assert head.head == space.head and head.neck.types == (arch.neck.type,) and head == weight_sharing.sub_space(space, "head_paths")
    assert weight_sharing.sub_space(space, "resolution").resolutions == space.resolutions
    assert weight_sharing.sub_space(space, "neck").neck == space.neck
    blocks = weight_sharing.sub_space(space, "blocks")
    assert blocks.backbone.stages[0].blocks == space.backbone.stages[0].blocks and blocks.head.types == (arch.head.type,)
    assert weight_sharing.sub_space(space, "all") == space


def test_structural_rows_free_all_but_the_block_and_one_stage_drops_the_two_stage_head():
    space = SearchSpace.preset("tiny")
    structural = weight_sharing.sub_space(space, "structural")
    assert structural == space.restrict(blocks=("ir_k3_e6",)) and structural.head.types == space.head.types
    one_stage = weight_sharing.sub_space(space, "structural_one_stage")
    assert one_stage.head.types == ("fcos", "retinanet") and one_stage.neck == space.neck
