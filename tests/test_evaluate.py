import copy
import random

import pytest
import torch
from common import COCO128, needs_coco128
from torch import nn

from supernet import PostProcess, SearchSpace, Supernet
from supernet.data import CocoDetection, build_loader, coco_paths
from supernet.evaluate import METRICS, coco_map, evaluate
from supernet.shapes import generate_shapes


@pytest.fixture(scope="module")
def coco128():
    if COCO128 is None:
        pytest.skip("shared/data/coco128 not found next to the repository")
    return CocoDetection(COCO128 / "images", COCO128 / "instances.json", max_size=128)


def ground_truth_as_detections(coco, shift: float = 0.0) -> list[dict]:
    dets = []
    for a in coco.loadAnns(coco.getAnnIds(iscrowd=False)):
        x, y, w, h = a["bbox"]
        dets.append({"image_id": a["image_id"], "category_id": a["category_id"], "bbox": [x + shift * w, y + shift * h, w, h], "score": 1.0})
    return dets


@needs_coco128
@pytest.mark.parametrize("backend", ["pycocotools", "faster"])
def test_coco_map_of_ground_truth_is_one_and_drops_when_perturbed(coco128, backend):
    ids = coco128.coco.getImgIds()
    perfect = coco_map(coco128.coco, ground_truth_as_detections(coco128.coco), ids, backend)
    assert set(perfect) == set(METRICS)
    assert all(v == pytest.approx(1.0) for v in perfect.values())
    shifted = coco_map(coco128.coco, ground_truth_as_detections(coco128.coco, shift=0.15), ids, backend)
    assert shifted["map"] < 0.3 and shifted["ap50"] > 0.9 and shifted["ap75"] < 0.1  # IoU 0.57 per box
    assert coco_map(coco128.coco, [], ids, backend) == dict.fromkeys(METRICS, 0.0)


@needs_coco128
def test_faster_backend_gives_pycocotools_numbers_on_real_data(coco128):
    """Jittered boxes, wrong classes, false positives and random scores on 128 COCO images with
    crowd regions: faster-coco-eval must reproduce the reference to the last digit."""
    rng = random.Random(0)
    coco = coco128.coco
    dets = []
    for d in ground_truth_as_detections(coco):
        x, y, w, h = d["bbox"]
        for _ in range(3):
            j = [x + rng.gauss(0, 0.1) * w, y + rng.gauss(0, 0.1) * h, w * rng.uniform(0.7, 1.3), h * rng.uniform(0.7, 1.3)]
            cat = d["category_id"] if rng.random() < 0.8 else rng.choice(coco.getCatIds())
            dets.append({**d, "bbox": j, "category_id": cat, "score": rng.random()})
    ids = coco.getImgIds()[:100]
    dets_before, gt_before = copy.deepcopy(dets), copy.deepcopy(coco.dataset)
    reference = coco_map(coco, dets, ids, "pycocotools")
    assert 0.05 < reference["map"] < 0.9
    assert coco_map(coco, dets, ids, "faster") == pytest.approx(reference, abs=1e-12)
    assert coco_map(coco, dets, ids, "faster") == pytest.approx(reference, abs=1e-12)  # its cached index is intact
    assert dets == dets_before and coco.dataset == gt_before  # neither backend annotates the caller's data
    with pytest.raises(ValueError, match="backend: expected one of"):
        coco_map(coco, dets, ids, "mmdet")


class Echo(nn.Module):
    """Returns the loader's own targets as detections, in order: tests the coordinate mapping."""

    def __init__(self, targets):
        super().__init__()
        self.targets = list(targets)

    def forward(self, images, arch=None):
        out = []
        for image in images:
            t = self.targets.pop(0)
            assert image.dtype == torch.float32 and image.max() <= 1.0
            out.append({"boxes": t["boxes"], "labels": t["labels"], "scores": torch.ones(len(t["labels"]))})
        return out


@needs_coco128
def test_evaluate_maps_back_to_original_pixels_and_category_ids(coco128):
    loader = build_loader(coco128, batch_size=8, shuffle=False, workers=0, seed=0)
    n = 24
    model = Echo(coco128[i][1] for i in range(n)).train()
    result = evaluate(model, None, loader, "cpu", max_images=n)
    assert result["map"] > 0.97 and result["ap50"] == pytest.approx(1.0)  # only clipping to the image moves a box
    assert model.training and len(model.targets) == 0  # mode restored, exactly n images run


@pytest.fixture(scope="module")
def shapes_val(tmp_path_factory):
    root = generate_shapes(tmp_path_factory.mktemp("shapes"), train=1, val=3, size=64, seed=0)
    return CocoDetection(coco_paths(root)["val_images"], coco_paths(root)["val_ann"], max_size=64)


def test_evaluate_runs_a_supernet_and_its_extracted_detector(shapes_val):
    space = SearchSpace.preset("tiny")
    torch.manual_seed(0)
    model = Supernet(space, shapes_val.num_classes, PostProcess(score_thresh=0.0)).train()
    loader = build_loader(shapes_val, batch_size=2, shuffle=False, workers=0, seed=0)
    arch = space.sample(random.Random(1))
    result = evaluate(model, arch, loader, "cpu")
    assert set(result) == set(METRICS) and all(isinstance(v, float) and -1.0 <= v <= 1.0 for v in result.values())
    assert model.training
    assert evaluate(model.extract(arch), None, loader, "cpu") == pytest.approx(result, abs=1e-6)


def test_evaluate_without_detections_gives_zeros(shapes_val):
    model = Supernet(SearchSpace.preset("tiny"), shapes_val.num_classes, PostProcess(score_thresh=1.1))
    loader = build_loader(shapes_val, batch_size=3, shuffle=False, workers=0, seed=0)
    assert evaluate(model, model.space.smallest(), loader, "cpu") == dict.fromkeys(METRICS, 0.0)


def test_evaluate_rejects_a_wrong_class_count(shapes_val):
    model = Supernet(SearchSpace.preset("tiny"), 5)
    loader = build_loader(shapes_val, batch_size=3, shuffle=False, workers=0, seed=0)
    with pytest.raises(ValueError, match="predicts 5 classes"):
        evaluate(model, model.space.smallest(), loader, "cpu")
