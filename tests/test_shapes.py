import json
import os

import pytest
from pycocotools import mask as mask_utils

from supernet.data import CocoDetection, coco_paths
from supernet.shapes import SIDE_RANGE, generate_shapes, main

SIZE = 64


def tree(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return generate_shapes(tmp_path_factory.mktemp("shapes"), train=6, val=3, size=SIZE, seed=3)


def test_deterministic_for_a_seed(shapes, tmp_path):
    again = tree(generate_shapes(tmp_path / "a", train=6, val=3, size=SIZE, seed=3))
    assert again == tree(shapes)
    other = tree(generate_shapes(tmp_path / "b", train=6, val=3, size=SIZE, seed=4))
    assert other["train2017/000001.png"] != again["train2017/000001.png"]
    fewer = tree(generate_shapes(tmp_path / "c", train=2, val=1, size=SIZE, seed=3))
    assert fewer["train2017/000002.png"] == again["train2017/000002.png"]  # image i does not depend on the count


@pytest.mark.parametrize("split,count", [("train2017", 6), ("val2017", 3)])
def test_valid_coco_with_tight_boxes(shapes, split, count):
    ds = CocoDetection(coco_paths(shapes)[f"{split[:-4]}_images"], shapes / "annotations" / f"instances_{split}.json", max_size=SIZE)
    coco = ds.coco
    assert len(ds) == count and ds.cat_ids == [1, 2, 3] and ds.class_names == ["circle", "square", "triangle"]
    anns = coco.loadAnns(coco.getAnnIds())
    assert len(anns) >= count and {a["image_id"] for a in anns} == set(coco.getImgIds())
    for a in anns:
        x, y, w, h = a["bbox"]
        assert 0 <= x and 0 <= y and w > 0 and h > 0 and x + w <= SIZE and y + h <= SIZE
        assert a["iscrowd"] == 0 and a["area"] > 0
        rle = a["segmentation"]  # the shape's visible pixels
        assert list(mask_utils.toBbox(rle)) == a["bbox"] and mask_utils.area(rle) == a["area"]  # tight around them
        assert SIDE_RANGE[0] * SIZE - 1 <= max(w, h) <= SIDE_RANGE[1] * SIZE * 2**0.5 + 1
    image, target = ds[0]
    assert image.shape == (3, SIZE, SIZE) and target["labels"].max() < 3


def test_skips_when_complete_and_regenerates_on_change(shapes, tmp_path):
    out = generate_shapes(tmp_path / "s", train=3, val=2, size=SIZE, seed=0)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    assert generate_shapes(out, train=3, val=2, size=SIZE, seed=0) == out
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == stamps
    generate_shapes(out, train=2, val=2, size=SIZE, seed=0)  # other arguments: written anew
    assert sorted(os.listdir(out / "train2017")) == ["000001.png", "000002.png"]
    assert len(json.loads((out / "annotations" / "instances_train2017.json").read_text())["images"]) == 2


def test_never_overwrites_another_dataset(tmp_path):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_train2017.json").write_text("{}")
    with pytest.raises(ValueError, match="not written by supernet.shapes"):
        generate_shapes(tmp_path, train=1, val=1, size=SIZE)


def test_cli(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--train", "2", "--val", "1", "--size", "64"]) == 0
    assert "2 train + 1 val images" in capsys.readouterr().out
    assert main(["--out", str(tmp_path), "--train", "2", "--val", "1", "--size", "64"]) == 0
    assert "already complete" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(tmp_path / "x"), "--size", "16"])
    assert exit_info.value.code == 2 and "size: expected an integer >= 32" in capsys.readouterr().err
