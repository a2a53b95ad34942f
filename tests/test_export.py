import json

import pytest
import torch
from common import COCO128, needs_coco128
from torchvision.io import ImageReadMode, decode_image

from supernet import Arch, Detector, SearchSpace
from supernet.export import (Inference, coco_results, compare, compare_image, export, images_of, letterbox_image, main,
                             read_metadata, run_exported)

HEADS = ("fcos", "retinanet", "two_stage")


def detector(head: str, seed: int = 0) -> Detector:
    """A tiny detector whose head weights are spread out, so that its scores are distinct (an
    untrained model's all sit at the prior, where NMS tie-breaking decides what is kept)."""
    space = SearchSpace.preset("tiny")
    arch = space.smallest()
    arch = Arch.from_dict({**arch.to_dict(), "resolution": 64, "head": {"type": head, "width": 16, "num_convs": 1}})
    torch.manual_seed(seed)
    det = Detector(arch, 3, space.activation, space.head.anchor_scale).eval()
    with torch.no_grad():
        for name, p in det.named_parameters():
            if name.startswith("head") and p.dim() > 1:
                p.normal_(0, 0.1)
    return det


@pytest.mark.parametrize("head", HEADS)
def test_torchscript_and_onnx_match_eager(head, tmp_path):
    det = detector(head)
    result = export(det, tmp_path)
    assert result["onnx"]["exporter"] == "torch.export"  # the torch.export-based exporter, no fallback
    for fmt in ("torchscript", "onnx"):
        assert "check_failed" not in result[fmt], result[fmt]
        assert result[fmt]["max_abs_diff"] < 1e-3
    # batches of other sizes than the traced one (the batch axis is dynamic), each image as the
    # eager detector finds it alone
    for batch in (1, 4, 8):
        images = torch.rand(batch, 3, 64, 64, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            alone = [det(image)[0] for image in images]
        eager = padded(alone, det.post.detections_per_img)
        assert min(len(d["boxes"]) for d in alone) > 5
        for path in (tmp_path / "model.torchscript.pt", tmp_path / "model.onnx"):
            assert compare(eager, run_exported(path, images)) < 1e-3, (path, batch)


def padded(detections: list[dict], per_image: int) -> tuple[torch.Tensor, ...]:
    out = (torch.zeros(len(detections), per_image, 4), torch.zeros(len(detections), per_image), torch.full((len(detections), per_image), -1))
    for i, d in enumerate(detections):
        for t, key in zip(out, ("boxes", "scores", "labels")):
            t[i, : len(d[key])] = d[key]
    return (*out, torch.tensor([len(d["boxes"]) for d in detections]))


@needs_coco128
def test_letterboxed_real_image_matches_the_eager_detector_on_the_original(tmp_path):
    """A 640x480 COCO photo: `letterbox_image` then the export, with boxes scaled back, gives the
    eager detector's detections on the original image."""
    det = detector("retinanet", seed=1)
    image = decode_image(str(COCO128 / "images" / "000000000009.jpg"), mode=ImageReadMode.RGB).float() / 255
    assert image.shape[1] != image.shape[2]
    export(det, tmp_path, ["onnx"], check=False)
    x, scale = letterbox_image(image, det.arch.resolution)
    assert x.shape == (1, 3, 64, 64)
    boxes, scores, labels = images_of(run_exported(tmp_path / "model.onnx", x))[0]
    with torch.no_grad():
        out = det([image])[0]
    assert len(out["boxes"]) > 5
    h, w = image.shape[1:]
    boxes = (boxes / scale).clamp(min=0).minimum(torch.tensor([w, h, w, h]))  # what a user does: back to the image, clipped
    # the eager path maps back per axis from rounded sizes; the pixel difference that leaves is small
    assert compare_image((out["boxes"], out["scores"], out["labels"]), (boxes, scores, labels)) < 0.02 * max(h, w)
    classes = [{"label": i, "id": [1, 18, 44][i], "name": n} for i, n in enumerate(["person", "dog", "bottle"])]
    results = coco_results(images_of(run_exported(tmp_path / "model.onnx", x))[0], scale, (h, w), classes, image_id=9)
    assert len(results) == len(boxes) and {r["category_id"] for r in results} <= {1, 18, 44}
    xywh = torch.tensor([r["bbox"] for r in results])
    assert torch.allclose(xywh[:, :2], boxes[:, :2], atol=1e-3) and torch.allclose(xywh[:, 2:], boxes[:, 2:] - boxes[:, :2], atol=1e-3)
    assert all(r["image_id"] == 9 and 0 <= r["score"] <= 1 for r in results)


def test_class_map_travels_with_the_detector_and_its_exports(tmp_path):
    det = detector("fcos")
    assert det.classes is None and "classes" not in det.config()  # a detector saved before class maps: still loads
    classes = [{"label": i, "id": 10 + i, "name": n} for i, n in enumerate(["cat", "dog", "bird"])]
    det.classes = classes
    det.save(tmp_path / "model.pt")
    assert Detector.load(tmp_path / "model.pt").classes == classes
    export(det, tmp_path, check=False)
    for name in ("model.onnx", "model.torchscript.pt"):
        about = read_metadata(tmp_path / name)
        assert about["classes"] == classes and Arch.from_dict(about["arch"]) == det.arch and about["input"]["shape"] == ["batch", 3, 64, 64]
        assert about["input"]["normalization"] == {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "in_graph": True}
    with pytest.raises(ValueError, match=r"classes: expected 3 entries"):
        Detector(det.arch, 3, classes=classes[:2])
    with pytest.raises(ValueError, match=r"classes\[1\]: expected \{'label': 1"):
        Detector(det.arch, 3, classes=[classes[0], {**classes[1], "label": 5}, classes[2]])


def test_compare_catches_what_a_wrong_trace_produces():
    boxes = torch.tensor([[0.0, 0, 10, 10], [20, 20, 40, 40], [50, 0, 60, 30]])
    scores, labels = torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0, 1, 2])
    assert compare_image((boxes, scores, labels), (boxes.flip(0), scores.flip(0), labels.flip(0))) == 0.0  # order is free
    with pytest.raises(ValueError, match="2 detections where eager gives 3"):
        compare_image((boxes, scores, labels), (boxes[:2], scores[:2], labels[:2]))
    with pytest.raises(ValueError, match="has no exported counterpart"):
        compare_image((boxes, scores, labels), (boxes, scores, torch.tensor([0, 2, 2])))
    with pytest.raises(ValueError, match="has no exported counterpart"):
        compare_image((boxes, scores, labels), (boxes + 15, scores, labels))
    # padded batches: image by image, and the batch sizes must agree
    one = (boxes[None], scores[None], labels[None], torch.tensor([3]))
    two = tuple(torch.cat([t, t]) for t in one)
    assert compare(two, two) == 0.0
    with pytest.raises(ValueError, match="1 images where eager gives 2"):
        compare(two, one)
    with pytest.raises(ValueError, match="image 1: 2 detections where eager gives 3"):
        compare(two, (*two[:3], torch.tensor([3, 2])))


def test_cli_exports_beside_the_model_and_errors_in_one_line(tmp_path, capsys):
    det = detector("fcos")
    det.save(tmp_path / "model.pt")
    assert main([str(tmp_path / "model.pt")]) == 0
    printed = capsys.readouterr()
    result = json.loads(printed.out)
    assert set(result) == {"torchscript", "onnx"} and (tmp_path / "model.onnx").is_file() and (tmp_path / "model.torchscript.pt").is_file()
    # the usage it prints runs as written, and the TensorRT line names the file
    assert f"trtexec --onnx={tmp_path / 'model.onnx'} --saveEngine={tmp_path / 'model.plan'} --fp16" in printed.err
    blocks = {}  # the lines under each "# <runtime>" header
    for line in printed.err.splitlines():
        if line.startswith("# "):
            header = blocks.setdefault(line[2:].split(" (")[0], [])
        elif blocks:
            header.append(line)
    scope = {"img": torch.rand(3, 50, 70)}
    exec("\n".join(blocks["ONNX Runtime"]), scope)
    boxes, scores, labels = images_of(run_exported(tmp_path / "model.onnx", scope["image"]))[0]
    assert len(boxes) and compare_image((boxes / scope["scale"], scores, labels), (scope["boxes"], scope["scores"], scope["labels"])) < 1e-3
    exec("\n".join(blocks["TorchScript"]), scope)
    assert compare(run_exported(tmp_path / "model.onnx", scope["image"]), (scope["boxes"], scope["scores"], scope["labels"], scope["num_detections"])) < 1e-3
    # a uint8 fp16 export: its snippet takes the decoded image as it is, and gives its pixels' boxes
    assert main([str(tmp_path / "model.pt"), "--out", str(tmp_path / "u8"), "--input", "uint8", "--dtype", "fp16", "--formats", "onnx"]) == 0
    printed = capsys.readouterr()
    about = read_metadata(tmp_path / "u8" / "model.onnx")
    assert about["dtype"] == "fp16" and about["input"]["dtype"] == "uint8"
    code = "\n".join(line for line in printed.err.splitlines() if not line.startswith(("#", "trtexec")))
    scope = {"img": torch.randint(0, 256, (50, 70, 3), dtype=torch.uint8).numpy()}
    exec(code, scope)
    assert len(scope["boxes"]) and scope["boxes"][:, 2].max() <= 70 and scope["boxes"][:, 3].max() <= 50
    assert main([str(tmp_path / "missing.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert "missing.pt: detector file not found" in err and "\n" not in err
    assert main([str(tmp_path / "model.pt"), "--formats", "tflite"]) == 2
    assert "--formats: unknown ['tflite']" in capsys.readouterr().err


def test_uint8_export_letterboxes_in_the_graph_at_any_size_and_batch(tmp_path):
    det = detector("fcos")
    result = export(det, tmp_path, image_input="uint8")  # traced on 96 x 48, checked on 35 x 133, batch 3
    assert result["onnx"]["exporter"] == "torch.export"
    for fmt in ("torchscript", "onnx"):
        assert "check_failed" not in result[fmt], result[fmt]
    about = read_metadata(tmp_path / "model.onnx")
    assert about["input"]["shape"] == ["batch", "height", "width", 3] and about["input"]["dtype"] == "uint8"
    g = torch.Generator().manual_seed(3)
    for batch, (h, w) in ((1, (64, 64)), (4, (200, 120)), (2, (30, 50))):
        images = torch.randint(0, 256, (batch, h, w, 3), dtype=torch.uint8, generator=g)
        with torch.no_grad():
            alone = [det(image.permute(2, 0, 1).float() / 255)[0] for image in images]
        for path in (tmp_path / "model.torchscript.pt", tmp_path / "model.onnx"):
            out = run_exported(path, images)
            for (boxes, scores, labels), eager in zip(images_of(out), alone):
                # boxes in the input's pixels; the same objects as the eager detector on the image,
                # up to resampling (bilinear here, antialiased there when shrinking)
                assert len(boxes) > 5 and float(boxes[:, 2].max()) <= w and float(boxes[:, 3].max()) <= h
                if (h, w) == (64, 64):  # no resampling: the very same detections
                    assert compare_image((eager["boxes"], eager["scores"], eager["labels"]), (boxes, scores, labels)) < 1e-3


def test_letterbox_in_graph_matches_letterbox_image_where_neither_shrinks():
    from supernet.export import letterbox_in_graph

    image = torch.rand(3, 40, 25, generator=torch.Generator().manual_seed(0))
    expected, scale = letterbox_image(image, 64)
    got = letterbox_in_graph(image[None], torch.tensor(scale), 64)
    assert got.shape == (1, 3, 64, 64)
    # the padding is the mean colour; inside, both sample bilinearly at the same centres
    torch.testing.assert_close(got[..., 41:], expected[..., 41:])  # 25 px wide -> 40, then padding
    inside = (slice(None), slice(None), slice(1, 63), slice(1, 39))
    assert (got[inside] - expected[inside]).abs().max() < 1e-4


@pytest.mark.parametrize("head", HEADS)
def test_fp16_export_keeps_float32_io_and_matches_eager_fp16(head, tmp_path):
    import onnx

    det = detector(head)
    result = export(det, tmp_path, dtype="fp16")
    assert result["onnx"]["exporter"] == "torch.export"
    assert next(det.parameters()).dtype == torch.float32  # the caller's detector is not halved
    for fmt in ("torchscript", "onnx"):
        assert "check_failed" not in result[fmt], result[fmt]
        assert result[fmt]["dtype"] == "fp16" and read_metadata(result[fmt]["path"])["dtype"] == "fp16"
    graph = onnx.load(str(tmp_path / "model.onnx")).graph
    weights = [t for t in graph.initializer if len(t.dims) == 4]  # conv kernels
    assert weights and all(t.data_type == onnx.TensorProto.FLOAT16 for t in weights)
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    boxes, scores, labels, counts = run_exported(tmp_path / "model.onnx", torch.rand(2, 3, 64, 64))
    assert boxes.dtype == scores.dtype == torch.float32 and counts.shape == (2,)
    with pytest.raises(ValueError, match=r"`dtype`: expected one of \['fp32', 'fp16'\], got 'int8'"):
        export(det, tmp_path / "other", dtype="int8")


def test_onnx_falls_back_to_the_torchscript_based_exporter_saying_why(tmp_path, monkeypatch):
    real = torch.onnx.export

    def failing(*args, dynamo=True, **kwargs):
        if dynamo:
            raise RuntimeError("Could not guard on data-dependent expression")
        return real(*args, dynamo=dynamo, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", failing)
    result = export(detector("fcos"), tmp_path, ["onnx"])
    assert result["onnx"]["exporter"] == ("torch.onnx TorchScript-based (torch.export failed: RuntimeError: "
                                          "Could not guard on data-dependent expression)")
    assert "check_failed" not in result["onnx"]
    images = torch.rand(4, 3, 64, 64)
    with torch.no_grad():
        assert compare(Inference(detector("fcos"))(images), run_exported(tmp_path / "model.onnx", images)) < 1e-3


def test_a_head_without_batched_postprocessing_is_refused_in_one_line(tmp_path):
    from supernet.heads.fcos import FCOSHead

    class PerImageOnly(FCOSHead):
        postprocess_padded = None

    det = detector("fcos")
    det.head["fcos"].__class__ = PerImageOnly
    with pytest.raises(ValueError, match="head 'fcos' has no postprocess_padded: an export traces"):
        export(det, tmp_path)
    assert not any(tmp_path.iterdir())  # checked before anything is written
