"""The heads' batched post-processing gives what torchvision's detectors give image by image."""
from types import SimpleNamespace

import pytest
import torch
from torchvision.models.detection import FCOS, RetinaNet
from torchvision.models.detection.image_list import ImageList

from supernet import Arch, SearchSpace, Supernet
from supernet.heads.detections import padded_nms

SIZES = [(64, 64), (48, 64), (64, 40)]  # letterboxed images of a batch: each its own content size


def head_and_features(head_type: str, seed: int = 0):
    space = SearchSpace.preset("tiny")
    arch = space.smallest()
    arch = Arch.from_dict({**arch.to_dict(), "resolution": 64, "head": {"type": head_type, "width": 16, "num_convs": 1}})
    torch.manual_seed(seed)
    model = Supernet(space, num_classes=3).eval()
    head = model.head[head_type]
    with torch.no_grad():
        for p in head.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.1)  # spread scores: an untrained head's all sit at the prior, where ties decide
    feats = [torch.randn(len(SIZES), arch.neck.width, s, s) for s in (8, 4, 2)]
    images = ImageList(torch.zeros(len(SIZES), 3, 64, 64), SIZES)
    return head, feats, images, arch


def assert_same(ours: list[dict], reference: list[dict]) -> None:
    assert len(ours) == len(reference)
    for a, b in zip(ours, reference):
        assert len(a["boxes"]) == len(b["boxes"]) > 0
        order_a, order_b = a["scores"].argsort(descending=True), b["scores"].argsort(descending=True)
        torch.testing.assert_close(a["scores"][order_a], b["scores"][order_b])
        torch.testing.assert_close(a["boxes"][order_a], b["boxes"][order_b])
        assert torch.equal(a["labels"][order_a], b["labels"][order_b])


@pytest.mark.parametrize("head_type, reference", [("fcos", FCOS), ("retinanet", RetinaNet)])
def test_one_stage_heads_match_torchvisions_per_image_postprocessing(head_type, reference):
    head, feats, images, arch = head_and_features(head_type)
    with torch.no_grad():
        raw = head.raw_outputs(feats, images, arch.head)
        ours = head.postprocess(raw, images)
    post = head.post
    settings = SimpleNamespace(score_thresh=post.score_thresh, topk_candidates=post.topk_candidates, nms_thresh=post.nms_thresh,
                               detections_per_img=post.detections_per_img, box_coder=head.box_coder)
    n = raw["num_per_level"]
    anchors = [list(a.split(n)) for a in raw["anchors"]]
    expected = reference.postprocess_detections(settings, {k: v for k, v in raw["outputs"].items()}, anchors, SIZES)
    assert_same(ours, expected)
    assert any(len(d["boxes"]) > 20 for d in ours)


def test_two_stage_head_matches_torchvisions_rpn_and_roi_heads():
    head, feats, images, arch = head_and_features("two_stage", seed=1)
    with torch.no_grad():
        ours = head(feats, images, arch.head)
        # torchvision: filter_proposals, MultiScaleRoIAlign, postprocess_detections, image by image
        rpn, roi = head.rpn, head.roi
        objectness, deltas = rpn.head(feats)
        anchors = rpn.anchor_generator(images, feats)
        num_per_level = [o[0].numel() for o in objectness]
        from torchvision.models.detection.rpn import concat_box_prediction_layers

        objectness, deltas = concat_box_prediction_layers(objectness, deltas)
        proposals = rpn.box_coder.decode(deltas, anchors).view(len(anchors), -1, 4)
        proposals, _ = rpn.filter_proposals(proposals, objectness, images.image_sizes, num_per_level)
        maps = {str(i): f for i, f in enumerate(feats)}
        x = roi.box_roi_pool(maps, proposals, [(64, 64)] * len(SIZES))
        logits, regression = roi.box_predictor(roi.box_head(x, arch.head.width, arch.head.num_convs))
        boxes, scores, labels = roi.postprocess_detections(logits, regression, proposals, images.image_sizes)
    expected = [{"boxes": b, "scores": s, "labels": lab - 1} for b, s, lab in zip(boxes, scores, labels)]
    assert_same(ours, expected)


def test_padded_nms_keeps_images_apart_pads_and_caps_per_image():
    box = torch.tensor([0.0, 0.0, 10.0, 10.0])
    boxes = torch.stack([box, box + 1, box + 50, box]).expand(2, 4, 4).clone()  # 0 and 1 overlap, 2 apart, 3 = 0
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.6], [0.5, 0.95, 0.4, 0.3]])
    labels = torch.tensor([[0, 0, 0, 1], [0, 0, 0, 0]])
    valid = torch.tensor([[True, True, True, True], [True, True, False, True]])
    out = padded_nms(boxes, scores, labels, valid, 0.5, 3, 2)
    # image 0: 1 suppressed by 0, 3 survives as another label; image 1: 1 suppresses 0 and 3, 2 invalid
    assert out.counts.tolist() == [3, 1]
    assert out.scores.tolist() == [pytest.approx([0.9, 0.7, 0.6]), pytest.approx([0.95, 0.0, 0.0])]
    assert out.labels.tolist() == [[0, 0, 1], [0, -1, -1]]
    assert out.boxes[1, 1:].abs().sum() == 0
    assert [len(d["boxes"]) for d in out.unpad()] == [3, 1]
    capped = padded_nms(boxes, scores, labels, valid, 0.5, 2, 2)
    assert capped.counts.tolist() == [2, 1] and capped.scores.shape == (2, 2)
