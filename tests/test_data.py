import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from common import COCO128, needs_coco128
from PIL import Image

from supernet.data import CocoDetection, build_loader, coco_paths, collate
from supernet.data.coco import decode, default_decoder


def write_tiny_coco(root: Path) -> tuple[Path, Path]:
    """Four images: RGB with a crowd box, grayscale with degenerate/outside/clipped boxes, an RGBA
    png without annotations, a palette image; category ids 7, 3, 42 (not contiguous, not sorted)."""
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(images / "rgb.jpg")
    Image.fromarray(rng.integers(0, 256, (50, 20), dtype=np.uint8), "L").save(images / "gray.png")
    Image.fromarray(rng.integers(0, 256, (30, 30, 4), dtype=np.uint8), "RGBA").save(images / "rgba.png")
    Image.fromarray(rng.integers(0, 256, (16, 32), dtype=np.uint8), "L").convert("P").save(images / "palette.png")
    ann = {
        "images": [
            {"id": 11, "file_name": "rgb.jpg", "width": 40, "height": 30},
            {"id": 12, "file_name": "gray.png", "width": 20, "height": 50},
            {"id": 13, "file_name": "rgba.png", "width": 30, "height": 30},
            {"id": 14, "file_name": "palette.png", "width": 32, "height": 16},
        ],
        "annotations": [
            {"id": 1, "image_id": 11, "category_id": 42, "bbox": [4, 6, 10, 12], "area": 120, "iscrowd": 0},
            {"id": 2, "image_id": 11, "category_id": 7, "bbox": [0, 0, 40, 30], "area": 1200, "iscrowd": 1},
            {"id": 3, "image_id": 12, "category_id": 3, "bbox": [2, 5, 10, 20], "area": 200, "iscrowd": 0},
            {"id": 4, "image_id": 12, "category_id": 7, "bbox": [5, 5, 0, 10], "area": 0, "iscrowd": 0},  # zero width
            {"id": 5, "image_id": 12, "category_id": 7, "bbox": [25, 5, 10, 10], "area": 100, "iscrowd": 0},  # outside
            {"id": 6, "image_id": 12, "category_id": 42, "bbox": [15, 40, 10, 20], "area": 200, "iscrowd": 0},  # clipped
            {"id": 7, "image_id": 14, "category_id": 7, "bbox": [1, 2, 3, 4], "area": 12, "iscrowd": 0},
        ],
        "categories": [{"id": 7, "name": "seven"}, {"id": 3, "name": "three"}, {"id": 42, "name": "answer"}],
    }
    ann_file = root / "instances.json"
    ann_file.write_text(json.dumps(ann))
    return images, ann_file


@pytest.fixture
def tiny(tmp_path):
    return write_tiny_coco(tmp_path)


def build(images, ann_file, max_size=64, **kwargs) -> CocoDetection:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CocoDetection(images, ann_file, max_size, **kwargs)


def test_targets_labels_and_image_modes(tiny):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = CocoDetection(*tiny, max_size=64)
    assert [str(w.message) for w in caught] == [f"{tiny[1]}: dropped 2 degenerate box(es) (zero or negative size, or outside the image)"]
    assert ds.cat_ids == [3, 7, 42] and ds.num_classes == 3 and ds.class_names == ["three", "seven", "answer"]
    assert len(ds) == 4  # the image without annotations is kept

    image, t = ds[0]  # rgb.jpg 40x30 -> 64x48; the crowd box is left out
    assert image.dtype == torch.uint8 and image.shape == (3, 48, 64)
    assert t["image_id"] == 11 and t["orig_size"] == (30, 40) and t["scale"] == pytest.approx(1.6)
    assert torch.allclose(t["boxes"], torch.tensor([[4.0, 6.0, 14.0, 18.0]]) * 1.6)
    assert t["boxes"].dtype == torch.float32 and t["labels"].tolist() == [2]

    image, t = ds[1]  # gray.png 20x50 -> 26x64 (rounded): boxes scale per axis
    assert image.shape == (3, 64, 26) and torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])
    sx, sy = 26 / 20, 64 / 50
    expected = torch.tensor([[2.0, 5.0, 12.0, 25.0], [15.0, 40.0, 20.0, 50.0]]) * torch.tensor([sx, sy, sx, sy])
    assert torch.allclose(t["boxes"], expected) and t["labels"].tolist() == [0, 2]

    image, t = ds[2]  # RGBA, no annotations
    assert image.shape == (3, 64, 64)
    assert t["boxes"].shape == (0, 4) and t["boxes"].dtype == torch.float32 and t["labels"].dtype == torch.int64
    image, t = ds[3]  # palette
    assert image.shape == (3, 32, 64) and t["labels"].tolist() == [1]


def test_records_are_flat_arrays_and_the_coco_index_is_built_on_demand(tiny):
    ds = build(*tiny)
    arrays = [getattr(ds.records, f) for f in ("names", "name_ends", "image_ids", "sizes", "boxes", "labels", "box_ends")]
    assert all(isinstance(a, np.ndarray) and a.dtype != object for a in arrays)  # no Python object per image for workers to copy
    assert ds.records.nbytes == sum(a.nbytes for a in arrays) and len(ds.records.boxes) == 4  # crowd and degenerate boxes left out
    assert [ds.path(i).name for i in range(len(ds))] == ["rgb.jpg", "gray.png", "rgba.png", "palette.png"]
    assert "coco" not in vars(ds)  # a training set never builds the index
    assert sorted(ds.coco.getImgIds()) == [11, 12, 13, 14] and len(ds.coco.getAnnIds()) == 7  # crowd and degenerate included
    picked = ds.records.select([3, 0])
    assert [picked.name(i) for i in range(2)] == ["palette.png", "rgb.jpg"] and picked.image_ids.tolist() == [14, 11]
    for i, j in ((0, 3), (1, 0)):
        assert picked.size(i) == ds.records.size(j)
        assert all(np.array_equal(a, b) for a, b in zip(picked.targets(i), ds.records.targets(j)))
    empty = ds.records.select([])
    assert len(empty) == 0 and empty.boxes.shape == (0, 4)


@pytest.mark.skipif(default_decoder() != "torchcodec", reason="torchcodec (smnas[decode]) not installed")
def test_torchcodec_decodes_as_pillow_does_and_never_rotates(tiny, tmp_path):
    images, ann_file = tiny
    fast, slow = build(images, ann_file, decoder="torchcodec"), build(images, ann_file, decoder="pil")
    for i in range(len(fast)):  # jpg, grayscale, RGBA and palette png
        assert torch.equal(decode(fast.path(i), "torchcodec"), decode(fast.path(i), "pil"))
        assert torch.equal(fast[i][0], slow[i][0])
    pixels = np.random.default_rng(1).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees to display": the boxes still refer to the stored pixels
    Image.fromarray(pixels).save(tmp_path / "rotated.jpg", exif=exif.tobytes())
    Image.fromarray(pixels).save(tmp_path / "plain.bmp")  # a format torchcodec does not read
    for name in ("rotated.jpg", "plain.bmp"):
        assert decode(tmp_path / name, "torchcodec").shape == (3, 30, 40)
        assert torch.equal(decode(tmp_path / name, "torchcodec"), decode(tmp_path / name, "pil"))
    (tmp_path / "broken.jpg").write_bytes((images / "rgb.jpg").read_bytes()[:100])
    with pytest.raises(OSError):
        decode(tmp_path / "broken.jpg", "torchcodec")
    with pytest.raises(ValueError, match="decoder: expected one of torchcodec, pil"):
        build(images, ann_file, decoder="cv2")


def test_upscales_small_images(tiny):
    image, t = build(*tiny, max_size=96)[0]
    assert image.shape == (3, 72, 96) and t["scale"] == pytest.approx(2.4)


def test_loader_is_seeded_and_keeps_box_counts(tiny):
    ds = build(*tiny)

    def run(workers):
        loader = build_loader(ds, batch_size=3, shuffle=True, workers=workers, seed=5)
        return [(t["image_id"], im.sum().item(), t["boxes"].shape[0]) for _ in range(2) for ims, ts in loader for im, t in zip(ims, ts)]

    a, b = run(2), run(2)
    assert a == b and len(a) == 8 and sorted(x[0] for x in a[:4]) == [11, 12, 13, 14]
    assert {x[0]: x[2] for x in a} == {11: 1, 12: 2, 13: 0, 14: 1}
    images, targets = collate([ds[0], ds[2]])
    assert isinstance(images, list) and [t["boxes"].shape[0] for t in targets] == [1, 0]


def test_distributed_loader_shards(tiny, tmp_path):
    if dist.is_initialized():
        pytest.skip("a process group is already initialised in this process")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        loader = build_loader(build(*tiny), batch_size=2, shuffle=True, workers=0, seed=1, distributed=True)
        assert isinstance(loader.sampler, torch.utils.data.DistributedSampler)
        loader.sampler.set_epoch(0)
        assert sorted(t["image_id"] for _, ts in loader for t in ts) == [11, 12, 13, 14]
    finally:
        dist.destroy_process_group()


def test_bad_inputs(tiny, tmp_path):
    images, ann_file = tiny
    with pytest.raises(ValueError, match="nope: images folder not found"):
        CocoDetection(tmp_path / "nope", ann_file, 64)
    with pytest.raises(ValueError, match="missing.json: annotation file not found"):
        CocoDetection(images, tmp_path / "missing.json", 64)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        CocoDetection(images, bad, 64)
    bad.write_text(json.dumps({"images": [], "categories": []}))
    with pytest.raises(ValueError, match=r"bad.json: missing key\(s\) \['annotations'\]"):
        CocoDetection(images, bad, 64)
    data = json.loads(ann_file.read_text())
    data["annotations"][0]["category_id"] = 5
    bad.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"annotations\[0\].category_id 5 is not in 'categories'"):
        CocoDetection(images, bad, 64)
    (images / "gray.png").unlink()
    (images / "rgba.png").unlink()
    with pytest.raises(ValueError, match=r"gray.png: listed in .*instances.json but not found \(2 of 4 images missing\)"):
        CocoDetection(images, ann_file, 64)


def test_coco_paths(tmp_path):
    with pytest.raises(ValueError, match="data folder not found"):
        coco_paths(tmp_path / "none")
    (tmp_path / "train2017").mkdir()
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_train2017.json").write_text("{}")
    with pytest.raises(ValueError, match="missing val2017, annotations/instances_val2017.json"):
        coco_paths(tmp_path)
    (tmp_path / "val2017").mkdir()
    (tmp_path / "annotations" / "instances_val2017.json").write_text("{}")
    assert coco_paths(tmp_path)["val_ann"] == tmp_path / "annotations" / "instances_val2017.json"


@needs_coco128
def test_coco128_loader_and_category_round_trip():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # coco128 has no degenerate boxes: no warning
        ds = CocoDetection(COCO128 / "images", COCO128 / "instances.json", max_size=128)
    assert len(ds) == 128 and ds.num_classes == 80 and ds.cat_ids == sorted(ds.coco.getCatIds()) and ds.cat_ids[-1] == 90
    assert ds.class_names[0] == "person"
    loader = build_loader(ds, batch_size=16, shuffle=False, workers=0, seed=0)
    total, empty = 0, 0
    for images, targets in loader:
        for image, t in zip(images, targets):
            assert image.shape[0] == 3 and max(image.shape[1:]) == 128
            anns = [a for a in ds.coco.loadAnns(ds.coco.getAnnIds(imgIds=t["image_id"])) if not a["iscrowd"]]
            assert [ds.cat_ids[label] for label in t["labels"].tolist()] == [a["category_id"] for a in anns]
            (h, w), (oh, ow) = image.shape[1:], t["orig_size"]
            xyxy = [[x, y, x + bw, y + bh] for x, y, bw, bh in (a["bbox"] for a in anns)]
            back = t["boxes"] / torch.tensor([w / ow, h / oh, w / ow, h / oh])
            assert torch.allclose(back, torch.tensor(xyxy, dtype=torch.float32).reshape(-1, 4).clamp(min=0), atol=1e-2)
            total += len(t["labels"])
            empty += len(t["labels"]) == 0
    assert total == 939 - 10 and empty == 2  # crowd boxes excluded, empty images kept
