"""Export a standalone detector's inference to TorchScript and ONNX (boxes, scores, labels out).

    python -m supernet.export runs/retrain/model.pt              # model.torchscript.pt, model.onnx beside it
    python -m supernet.export model.pt --formats onnx --out deploy/

The exported graph takes one letterboxed image, a float [1, 3, R, R] tensor in [0, 1] at the
arch's resolution R (`letterbox_image` makes it: longer side scaled to R, padded bottom/right with
the normalisation mean, which is what the detector itself pads with), and returns `boxes` [N, 4]
(x1, y1, x2, y2 in that R x R input), `scores` [N] and `labels` [N] (0..num_classes-1), N <= the
detections per image. Both are traced (the heads' top-k uses torchvision's trace-safe `_topk_min`,
and NMS and RoIAlign export as ONNX ops), then run on another input and compared with eager.
"""
from __future__ import annotations

import argparse
import importlib.util
import io
import json
import sys
import warnings
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import box_iou

from .cli import CommandParser, error_message
from .io import FolderBusy, RunLock, atomic_write_bytes
from .supernet import Detector
from .transform import IMAGENET_MEAN, IMAGENET_STD

FORMATS = ("torchscript", "onnx")
REQUIRES = {"onnx": ("onnx", "onnxruntime")}  # the exporter writes with onnx; the check runs the file in onnxruntime
FILENAMES = {"torchscript": "model.torchscript.pt", "onnx": "model.onnx"}
ONNX_OPSET = 17
OUTPUTS = ("boxes", "scores", "labels")
SCORE_TOL = 1e-4
MATCH_IOU = 0.5
BOX_TOL = 0.5  # pixels: matches zero-area boxes (clipped at the border), whose IoU is 0 even with themselves


class Inference(nn.Module):
    """A detector's eval forward on one letterboxed [1, 3, R, R] image, as a (boxes, scores,
    labels) tuple: the plain-tensor signature tracing and ONNX need."""

    def __init__(self, detector: Detector):
        super().__init__()
        self.detector = detector.eval()

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        out = self.detector(image)[0]
        return out["boxes"], out["scores"], out["labels"]


def letterbox_image(image: Tensor, resolution: int) -> tuple[Tensor, float]:
    """(input [1, 3, R, R] for the exported model, scale): divide its boxes by `scale` and clip
    them to the image's width and height to get back to `image`'s pixels. `image` is a float [3, H, W] in [0, 1]; resampled as the detector
    does it (bilinear, antialiased when shrinking)."""
    if image.dim() != 3 or image.shape[0] != 3 or not image.is_floating_point():
        raise ValueError(f"image: expected a float tensor [3, H, W] in [0, 1], got {tuple(image.shape)} {image.dtype}")
    h, w = image.shape[-2:]
    scale = resolution / max(h, w)
    if scale != 1.0:
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=scale < 1)[0]
    out = image.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1).expand(1, 3, resolution, resolution).clone()
    out[0, :, : image.shape[1], : image.shape[2]] = image
    return out, scale


def _example(detector: Detector, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    r = detector.arch.resolution
    return torch.rand(1, 3, r, r, generator=g).to(next(detector.parameters()).device)


def missing_packages(formats: Sequence[str] = FORMATS) -> list[str]:
    """The packages `formats` need that are not installed: checked before work whose end is an
    export (a retraining), not after it."""
    needed = dict.fromkeys(m for f in formats for m in REQUIRES.get(f, ()))
    return [m for m in needed if importlib.util.find_spec(m) is None]


def export(detector: Detector, out_dir: str | Path, formats: Sequence[str] = FORMATS, check: bool = True) -> dict[str, dict]:
    """Write `detector` in each of `formats` to `out_dir` (atomically); with `check`, run each
    export on an input other than the traced one and compare with eager. Returns, per format, the
    path and, if checked, the largest absolute difference of boxes and scores ("max_abs_diff")
    or why the outputs differ ("check_failed")."""
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ValueError(f"`formats`: unknown {unknown}; expected some of {list(FORMATS)}")
    out_dir = Path(out_dir)
    try:
        lock = RunLock(out_dir).acquire()  # also clears the temp files of an export that was killed
    except FolderBusy as e:
        raise ValueError(f"`out` {e}") from None
    try:
        return _export(detector, out_dir, formats, check)
    finally:
        lock.release()


def _export(detector: Detector, out_dir: Path, formats: Sequence[str], check: bool) -> dict[str, dict]:
    module = Inference(detector).eval()
    example, probe = _example(detector, 0), _example(detector, 1)
    results = {}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # python ints from shapes: constant for a fixed R
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript's deprecation: it still is what C++ and mobile load
        traced = torch.jit.trace(module, (example,), check_trace=False)
        for fmt in formats:
            path = out_dir / FILENAMES[fmt]
            # serialised in memory, then written by Python: a full disk is an OSError naming the
            # file, where the C++ writers abort the process and leave their partial file behind
            atomic_write_bytes(path, _serialise(fmt, traced, module, example))
            results[fmt] = {"path": str(path)}
            if check:
                eager = module(probe)
                try:
                    results[fmt]["max_abs_diff"] = compare(eager, run_exported(path, probe))
                except ValueError as e:
                    results[fmt]["check_failed"] = str(e) + (TIES_NOTE if _has_ties(eager[1]) else "")
    return results


TIES_NOTE = ("; many detections have nearly equal scores (an untrained or barely trained model), and NMS breaks such "
             "ties by arithmetic order, so the two may legitimately keep different boxes")


def _has_ties(scores: Tensor) -> bool:
    s = scores.detach().cpu().sort().values
    return bool(len(s) > 1 and ((s[1:] - s[:-1]) < SCORE_TOL).float().mean() > 0.1)


def _serialise(fmt: str, traced: torch.jit.ScriptModule, module: nn.Module, example: Tensor) -> bytes:
    buffer = io.BytesIO()
    about = metadata(module.detector)
    if fmt == "torchscript":
        torch.jit.save(traced, buffer, _extra_files={"smnas.json": json.dumps(about)})
        return buffer.getvalue()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation and tracer notes
        torch.onnx.export(module, (example,), buffer, dynamo=False, opset_version=ONNX_OPSET, input_names=["image"],
                          output_names=list(OUTPUTS), external_data=False)
    import onnx

    graph = onnx.load_from_string(buffer.getvalue())
    for key, value in about.items():
        graph.metadata_props.add(key=key, value=json.dumps(value))
    return graph.SerializeToString()


def metadata(detector: Detector) -> dict:
    """What a deployed file says about itself: which label is which class (`classes`, null for a
    detector saved without them), the arch and the input it expects."""
    return {"classes": detector.classes, "arch": detector.arch.to_dict(),
            "input": {"shape": [1, 3, detector.arch.resolution, detector.arch.resolution], "range": [0, 1], "letterbox_fill": list(IMAGENET_MEAN),
                      # normalised inside the graph: feed [0, 1] pixels, not (x - mean) / std
                      "normalization": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "in_graph": True}}}


def usage(exported: dict[str, dict], resolution: int) -> str:
    """How to run what `export` wrote: a few lines of Python per format, and the `trtexec` command
    that builds a TensorRT engine from the ONNX file (fp16; time it with the same command)."""
    lines = []
    if "onnx" in exported:
        path = exported["onnx"]["path"]
        engine = str(Path(path).with_suffix(".plan"))
        lines += ["# ONNX Runtime (pip install onnxruntime, or onnxruntime-gpu)",
                  "import onnxruntime, torch",
                  "from supernet.export import letterbox_image  # or: scale the longer side to R, pad bottom/right with letterbox_fill",
                  f"session = onnxruntime.InferenceSession({path!r})",
                  f"image, scale = letterbox_image(img, {resolution})  # img: float [3, H, W] in [0, 1] -> [1, 3, {resolution}, {resolution}]",
                  "boxes, scores, labels = session.run(None, {'image': image.numpy()})  # boxes / scale: the image's pixels",
                  "# TensorRT",
                  f"trtexec --onnx={path} --saveEngine={engine} --fp16"]
    if "torchscript" in exported:
        lines += ["# TorchScript (Python, or torch::jit::load in C++)",
                  f"model = torch.jit.load({exported['torchscript']['path']!r})",
                  "boxes, scores, labels = model(image)"]
    return "\n".join(lines)


def read_metadata(path: str | Path) -> dict:
    """`metadata` back from an exported file (.onnx: its metadata_props; TorchScript: smnas.json)."""
    path = Path(path)
    if path.suffix == ".onnx":
        import onnx

        return {p.key: json.loads(p.value) for p in onnx.load(str(path), load_external_data=False).metadata_props}
    files = {"smnas.json": ""}
    torch.jit.load(str(path), map_location="cpu", _extra_files=files)
    return json.loads(files["smnas.json"] or "{}")


def coco_results(outputs: Sequence[Tensor], scale: float, image_size: tuple[int, int], classes: Sequence[dict],
                 image_id: int) -> list[dict]:
    """An exported model's (boxes, scores, labels) on a `letterbox_image` input as COCO result
    entries for the original image: boxes divided by `scale`, clipped to `image_size` (H, W) and
    made xywh; each label mapped to its dataset category id through `classes` (the exports'
    metadata `read_metadata(path)["classes"]`, or `Detector.classes`)."""
    boxes, scores, labels = (torch.as_tensor(t).detach().cpu() for t in outputs[:3])
    h, w = image_size
    boxes = (boxes.float() / scale).clamp(min=0).minimum(torch.tensor([w, h, w, h], dtype=torch.float32))
    boxes[:, 2:] -= boxes[:, :2]
    ids = {c["label"]: c["id"] for c in classes}
    return [{"image_id": image_id, "category_id": ids[int(label)], "bbox": box, "score": float(score)}
            for box, score, label in zip(boxes.tolist(), scores.tolist(), labels.tolist())]


def run_exported(path: str | Path, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Outputs of an exported file on `image`: TorchScript through torch.jit, ONNX through
    onnxruntime (ImportError if it is not installed)."""
    path = Path(path)
    if path.suffix == ".onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        outs = session.run(list(OUTPUTS), {"image": image.detach().cpu().numpy()})
        return tuple(torch.from_numpy(o) for o in outs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(path), map_location=image.device)(image)


def compare(eager: Sequence[Tensor], exported: Sequence[Tensor]) -> float:
    """Largest |difference| of boxes and scores between matched detections of two (boxes,
    scores, labels) outputs. ValueError when they differ in number, or a detection has no
    counterpart: what a wrongly traced graph produces.

    Detections are matched, not compared in order: where scores are nearly equal (an untrained
    model's are), eager NMS and the traced graph may order them, keep one of two overlapping
    boxes, or cut at the last place differently, none of which is an export error. So the lowest
    scores (within SCORE_TOL of the last kept) are left out, and each eager detection is matched
    to an exported one of the same label with a score within SCORE_TOL and IoU >= MATCH_IOU (or
    coordinates within BOX_TOL)."""
    if len(eager[0]) != len(exported[0]):
        raise ValueError(f"export: {len(exported[0])} detections where eager gives {len(eager[0])}")
    a, b = _above_floor(eager, exported)
    if len(a[0]) != len(b[0]):
        raise ValueError(f"export: {len(b[0])} detections above the lowest kept score where eager gives {len(a[0])}")
    iou = box_iou(a[0], b[0]) if len(a[0]) else torch.zeros(0, 0)
    near = (a[0][:, None] - b[0][None]).abs().amax(-1) <= BOX_TOL if len(a[0]) else torch.zeros(0, 0, dtype=torch.bool)
    ok = (a[2][:, None] == b[2][None]) & ((a[1][:, None] - b[1][None]).abs() <= SCORE_TOL) & ((iou >= MATCH_IOU) | near)
    free = torch.ones(len(b[0]), dtype=torch.bool)
    diff = 0.0
    for i in range(len(a[0])):
        candidates = torch.where(ok[i] & free)[0]
        if not len(candidates):
            raise ValueError(f"export: eager detection {i} (label {int(a[2][i])}, score {float(a[1][i]):.4f}) has no exported counterpart")
        j = candidates[iou[i, candidates].argmax()]
        free[j] = False
        diff = max(diff, float((a[0][i] - b[0][j]).abs().max()), float((a[1][i] - b[1][j]).abs()))
    return diff


def _above_floor(*outs: Sequence[Tensor]) -> list[tuple[Tensor, Tensor, Tensor]]:
    outs = [tuple(t.detach().cpu() for t in o[:2]) + (o[2].detach().cpu().long(),) for o in outs]
    if not all(len(o[1]) for o in outs):
        return outs
    floor = max(float(o[1].min()) for o in outs) + SCORE_TOL
    return [tuple(t[o[1] > floor] for t in o) for o in outs]


def parse(argv: list[str] | None, prog: str = "python -m supernet.export") -> argparse.Namespace:
    p = CommandParser(prog=prog, description=__doc__)
    p.add_argument("model", help="a detector file written by Detector.save (retrain.py's model.pt)")
    p.add_argument("--out", help="folder to write to (default: the model's folder)")
    p.add_argument("--formats", nargs="+", default=list(FORMATS), help=f"some of {list(FORMATS)}")
    p.add_argument("--no-check", action="store_true", help="skip comparing the exports with eager outputs (exit 1 when they differ)")
    p.add_argument("--overwrite", action="store_true", help="replace exports already in the folder")
    return p.parse_args(argv)


def main(argv: list[str] | None = None, prog: str = "python -m supernet.export") -> int:
    args = parse(argv, prog)
    try:
        detector = Detector.load(args.model)
        out = Path(args.out or Path(args.model).parent)
        there = [str(out / FILENAMES[f]) for f in args.formats if f in FILENAMES and (out / FILENAMES[f]).exists()]
        if there and not args.overwrite:
            raise ValueError(f"`out` {out}: holds {', '.join(there)} already; pass `overwrite` to replace")
        result = export(detector, args.out or Path(args.model).parent, args.formats, check=not args.no_check)
    except (ValueError, ImportError, OSError) as e:
        print(error_message(e), file=sys.stderr)
        return 2
    failed = {fmt: r["check_failed"] for fmt, r in result.items() if "check_failed" in r}
    for fmt, why in failed.items():
        print(f"warning: {fmt} export differs from eager: {why}", file=sys.stderr)
    print(usage(result, detector.arch.resolution), file=sys.stderr)
    print(json.dumps(result))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
