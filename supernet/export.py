"""Export a standalone detector's inference to TorchScript and ONNX (boxes, scores, labels out).

    python -m supernet.export runs/retrain/model.pt              # model.torchscript.pt, model.onnx beside it
    python -m supernet.export model.pt --formats onnx --out deploy/

The exported graph takes a batch of letterboxed images, a float [B, 3, R, R] tensor in [0, 1] at
the arch's resolution R, B any batch size (`letterbox_image` makes one image's: longer side scaled
to R, padded bottom/right with the normalisation mean, which is what the detector itself pads
with), and returns detections padded to D (the detections per image) per image: `boxes`
[B, D, 4] (x1, y1, x2, y2 in that R x R input), `scores` [B, D], `labels` [B, D]
(0..num_classes-1) and `num_detections` [B]: image i's are its first num_detections[i] rows
(TensorRT's EfficientNMS layout). Both formats come from the detectors' batched post-processing
(`detect_padded`: no loop over images, no branch on a data-dependent size; NMS and RoIAlign
export as ONNX ops): ONNX through the torch.export-based exporter (the TorchScript-based one only
where that is not installed or fails, the reason recorded), TorchScript through the tracer; each
is then run on a batch of another size and compared with eager.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import io
import json
import sys
import warnings
from pathlib import Path
from typing import NamedTuple, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import box_iou

from .cli import CommandParser, error_message
from .io import FolderBusy, RunLock, atomic_write_bytes, error_line
from .supernet import Detector, detect_padded
from .transform import IMAGENET_MEAN, IMAGENET_STD, letterbox_image

FORMATS = ("torchscript", "onnx")
REQUIRES = {"onnx": ("onnx", "onnxruntime")}  # the exporter writes with onnx; the check runs the file in onnxruntime
FILENAMES = {"torchscript": "model.torchscript.pt", "onnx": "model.onnx"}
ONNX_OPSET = 17  # the TorchScript-based exporter's
DYNAMO_OPSET = 18  # the torch.export-based exporter's lowest
OUTPUTS = ("boxes", "scores", "labels", "num_detections")
SCORE_TOL = 1e-4
DTYPES = {"fp32": torch.float32, "fp16": torch.float16}  # of the weights and the network's compute; inputs and outputs stay float32


class Tolerance(NamedTuple):
    """How far an export may be from eager: scores within `score`, and at least `matched` of the
    detections (above the lowest kept score; of each image's best `top` only, if set) with a
    counterpart."""

    score: float = SCORE_TOL
    matched: float = 1.0
    top: int | None = None


# fp16 kernels of two runtimes round differently, and near-equal scores or IoUs near the NMS
# threshold then flip detections in the tail of near-equal low scores
TOLERANCES = {"fp32": Tolerance(), "fp16": Tolerance(5e-3, 0.9, 20)}
MATCH_IOU = 0.5
BOX_TOL = 0.5  # pixels: matches zero-area boxes (clipped at the border), whose IoU is 0 even with themselves


TRACE_BATCH, CHECK_BATCH = 2, 3  # traced at one batch size, checked at another: a batch size baked into the graph fails the check


class Inference(nn.Module):
    """A detector's eval forward on letterboxed [B, 3, R, R] images, as padded (boxes, scores,
    labels, num_detections): the plain-tensor signature tracing and ONNX need."""

    def __init__(self, detector: Detector):
        super().__init__()
        self.detector = detector.eval()

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return tuple(detect_padded(self.detector, image, self.detector.arch))


class LetterboxInference(Inference):
    """`Inference` on images as decoded: uint8 [B, H, W, 3] RGB, any H and W (one for the whole
    batch), letterboxed inside the graph (`letterbox_in_graph`); boxes come out in the input's
    pixels, clipped to it."""

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        x = image.permute(0, 3, 1, 2).float() / 255
        hw = height_width(x)
        scale = self.detector.arch.resolution / hw.max()
        boxes, scores, labels, counts = detect_padded(self.detector, letterbox_in_graph(x, scale, self.detector.arch.resolution),
                                                      self.detector.arch)
        return torch.minimum(boxes / scale, torch.stack([hw[1], hw[0], hw[1], hw[0]])), scores, labels, counts


def height_width(images: Tensor) -> Tensor:
    """[H, W] of images [B, C, H, W] as a float tensor computed from them: read when the graph
    runs, not a constant of the trace, in both exporters (a sum of ones over each axis)."""
    return torch.stack([torch.ones_like(images[0, 0, :, 0]).sum(), torch.ones_like(images[0, 0, 0, :]).sum()])


def letterbox_in_graph(images: Tensor, scale: Tensor, resolution: int) -> Tensor:
    """`letterbox_image` for a batch [B, 3, H, W] in [0, 1] as traceable ops: each output pixel
    samples the input at its centre / `scale` (bilinear, `grid_sample`), and past the image's
    end the padding is the normalisation mean. The output size is fixed, so H and W may change
    from run to run. Unlike `letterbox_image` it does not antialias when shrinking (as
    `cv2.resize` with INTER_LINEAR): ONNX's Resize before opset 18 cannot, nor can a filter whose
    size would follow the input's."""
    hw = height_width(images)
    centres = (torch.arange(resolution, device=images.device, dtype=torch.float32) + 0.5) / scale
    ys, xs = torch.meshgrid(2 * centres / hw[0] - 1, 2 * centres / hw[1] - 1, indexing="ij")  # align_corners=False coordinates
    grid = torch.stack([xs, ys], -1)[None].expand(images.shape[0], -1, -1, -1)
    mean = images.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    return F.grid_sample(images - mean, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + mean


INPUTS = ("float", "uint8")  # letterboxed float [B, 3, R, R] in [0, 1]; or decoded uint8 [B, H, W, 3], letterboxed in the graph


def _example(detector: Detector, seed: int, batch: int, image_input: str) -> Tensor:
    """A random input batch; uint8 images of a size that depends on `seed`, so that the check
    runs another height and width (one taller, one wider than R) than the traced ones."""
    g = torch.Generator().manual_seed(seed)
    r = detector.arch.resolution
    device = next(detector.parameters()).device
    if image_input == "uint8":
        h, w = (r + r // 2, r - r // 4) if seed == 0 else (r // 2 + 3, 2 * r + 5)
        return torch.randint(0, 256, (batch, h, w, 3), dtype=torch.uint8, generator=g).to(device)
    return torch.rand(batch, 3, r, r, generator=g).to(device)


def missing_packages(formats: Sequence[str] = FORMATS) -> list[str]:
    """The packages `formats` need that are not installed: checked before work whose end is an
    export (a retraining), not after it."""
    needed = dict.fromkeys(m for f in formats for m in REQUIRES.get(f, ()))
    return [m for m in needed if importlib.util.find_spec(m) is None]


def export(detector: Detector, out_dir: str | Path, formats: Sequence[str] = FORMATS, check: bool = True,
           image_input: str = "float", dtype: str = "fp32") -> dict[str, dict]:
    """Write `detector` in each of `formats` to `out_dir` (atomically); with `check`, run each
    export on an input other than the traced one and compare with eager. `image_input` "float":
    the graph takes letterboxed images (`Inference`); "uint8": decoded ones and letterboxes them
    itself (`LetterboxInference`). `dtype` "fp16": half the weights, the network computed in
    fp16 (post-processing, inputs and outputs stay float32). Returns, per format, the path, the input and, if checked, the
    largest absolute difference of boxes and scores ("max_abs_diff") or why the outputs differ
    ("check_failed")."""
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ValueError(f"`formats`: unknown {unknown}; expected some of {list(FORMATS)}")
    if image_input not in INPUTS:
        raise ValueError(f"`image_input`: expected one of {list(INPUTS)}, got {image_input!r}")
    if dtype not in DTYPES:
        raise ValueError(f"`dtype`: expected one of {list(DTYPES)}, got {dtype!r}")
    head = detector.arch.head.type
    if not callable(getattr(detector.head[head], "postprocess_padded", None)):
        raise ValueError(f"head {head!r} has no postprocess_padded: an export traces the batch's post-processing "
                         f"(see supernet.registry.register_head)")
    out_dir = Path(out_dir)
    try:
        lock = RunLock(out_dir).acquire()  # also clears the temp files of an export that was killed
    except FolderBusy as e:
        raise ValueError(f"`out` {e}") from None
    try:
        return _export(copy.deepcopy(detector).to(DTYPES[dtype]) if dtype != "fp32" else detector, out_dir, formats, check, image_input)
    finally:
        lock.release()


def _export(detector: Detector, out_dir: Path, formats: Sequence[str], check: bool, image_input: str) -> dict[str, dict]:
    module = (LetterboxInference if image_input == "uint8" else Inference)(detector).eval()
    example, probe = (_example(detector, seed, batch, image_input) for seed, batch in ((0, TRACE_BATCH), (1, CHECK_BATCH)))
    dtype = dtype_name(detector)
    results = {}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # python ints from per-image shapes: constant for a fixed R
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript's deprecation: it still is what C++ and mobile load
        traced = torch.jit.trace(module, (example,), check_trace=False)
        for fmt in formats:
            path = out_dir / FILENAMES[fmt]
            # serialised in memory, then written by Python: a full disk is an OSError naming the
            # file, where the C++ writers abort the process and leave their partial file behind
            data, exporter = _serialise(fmt, traced, module, example)
            atomic_write_bytes(path, data)
            results[fmt] = {"path": str(path), "input": image_input, "dtype": dtype, "exporter": exporter}
            if check:
                eager = module(probe)
                try:
                    results[fmt]["max_abs_diff"] = compare(eager, run_exported(path, probe), TOLERANCES[dtype])
                except ValueError as e:
                    results[fmt]["check_failed"] = str(e) + (TIES_NOTE if _has_ties(eager[1][eager[1] > 0]) else "")
    return results


TIES_NOTE = ("; many detections have nearly equal scores (an untrained or barely trained model), and NMS breaks such "
             "ties by arithmetic order, so the two may legitimately keep different boxes")


def _has_ties(scores: Tensor) -> bool:
    s = scores.detach().cpu().sort().values
    return bool(len(s) > 1 and ((s[1:] - s[:-1]) < SCORE_TOL).float().mean() > 0.1)


def _serialise(fmt: str, traced: torch.jit.ScriptModule, module: nn.Module, example: Tensor) -> tuple[bytes, str]:
    """(the file's bytes, the exporter that wrote them)."""
    buffer = io.BytesIO()
    uint8 = isinstance(module, LetterboxInference)
    about = metadata(module.detector, "uint8" if uint8 else "float")
    if fmt == "torchscript":
        torch.jit.save(traced, buffer, _extra_files={"smnas.json": json.dumps(about)})
        return buffer.getvalue(), "torch.jit.trace"
    graph, exporter = _onnx_graph(module, example, uint8)
    for key, value in about.items():
        graph.metadata_props.add(key=key, value=json.dumps(value))
    return graph.SerializeToString(), exporter


def _onnx_graph(module: nn.Module, example: Tensor, uint8: bool):
    """The ONNX graph of `module` with a dynamic batch (and, for uint8 input, height and width):
    from the torch.export-based exporter where it is installed (onnxscript, in smnas[export])
    and succeeds, else from the TorchScript-based one, the reason said in the exporter's name."""
    import onnx

    axes = {0: "batch", 1: "height", 2: "width"} if uint8 else {0: "batch"}
    if importlib.util.find_spec("onnxscript") is None:
        reason = "onnxscript is not installed (pip install 'smnas[export]')"
    else:
        try:
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():  # its progress lines would mix into a command's JSON
                warnings.simplefilter("ignore")
                program = torch.onnx.export(module, (example,), dynamo=True, opset_version=DYNAMO_OPSET, input_names=["image"],
                                            output_names=list(OUTPUTS), verbose=False,
                                            dynamic_shapes={"image": {i: torch.export.Dim(name, min=1) for i, name in axes.items()}})
            return program.model_proto, "torch.export"
        except Exception as e:  # noqa: BLE001 (any failure of the newer exporter falls back, saying why)
            reason = f"torch.export failed: {type(e).__name__}: {error_line(e)}"
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation and tracer notes
        torch.onnx.export(module, (example,), buffer, dynamo=False, opset_version=ONNX_OPSET, input_names=["image"],
                          output_names=list(OUTPUTS), dynamic_axes={"image": axes, **{name: {0: "batch"} for name in OUTPUTS}},
                          external_data=False)
    return onnx.load_from_string(buffer.getvalue()), f"torch.onnx TorchScript-based ({reason})"


def dtype_name(detector: Detector) -> str:
    dtype = next(detector.parameters()).dtype
    return next(name for name, d in DTYPES.items() if d == dtype)


def metadata(detector: Detector, image_input: str = "float") -> dict:
    """What a deployed file says about itself: which label is which class (`classes`, null for a
    detector saved without them), the arch, the input it expects and its outputs' layout."""
    r = detector.arch.resolution
    # normalised inside the graph: feed pixels, not (x - mean) / std
    normalization = {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "in_graph": True}
    if image_input == "uint8":
        spec = {"shape": ["batch", "height", "width", 3], "dtype": "uint8", "channels": "RGB", "range": [0, 255],
                "letterbox": {"in_graph": True, "resolution": r, "resampling": "bilinear, not antialiased"}, "normalization": normalization}
        boxes = "x1, y1, x2, y2 in the input image's pixels"
    else:
        spec = {"shape": ["batch", 3, r, r], "dtype": "float32", "range": [0, 1], "letterbox_fill": list(IMAGENET_MEAN),
                "normalization": normalization}
        boxes = f"x1, y1, x2, y2 in the {r} x {r} letterboxed input's pixels"
    return {"classes": detector.classes, "arch": detector.arch.to_dict(), "dtype": dtype_name(detector), "input": spec,
            "outputs": {"names": list(OUTPUTS), "detections_per_image": detector.post.detections_per_img, "boxes": boxes,
                        "layout": "image i's detections are the first num_detections[i] rows, best first; then padding (scores 0, labels -1)"}}


def usage(exported: dict[str, dict], resolution: int) -> str:
    """How to run what `export` wrote: a few lines of Python per format, and the `trtexec` command
    that builds a TensorRT engine from the ONNX file (fp16; time it with the same command)."""
    lines = []
    uint8 = any(r.get("input") == "uint8" for r in exported.values())
    if uint8:
        prepare = ["# img: uint8 [H, W, 3] RGB as decoded, e.g. numpy.asarray(PIL.Image.open(path).convert('RGB'))",
                   "image = torch.as_tensor(img)[None]  # [1, H, W, 3]; torch.stack images of one size for a batch"]
        select = "boxes, scores, labels = boxes[0, :n], scores[0, :n], labels[0, :n]  # image 0's, boxes in its pixels"
    else:
        prepare = [f"image, scale = letterbox_image(img, {resolution})  # img: float [3, H, W] in [0, 1] -> [1, 3, {resolution}, {resolution}]; torch.cat images for a batch"]
        select = "boxes, scores, labels = boxes[0, :n] / scale, scores[0, :n], labels[0, :n]  # image 0's, boxes in its pixels"
    if "onnx" in exported:
        path = exported["onnx"]["path"]
        engine = str(Path(path).with_suffix(".plan"))
        lines += ["# ONNX Runtime (pip install onnxruntime, or onnxruntime-gpu)",
                  "import onnxruntime, torch",
                  *([] if uint8 else ["from supernet.export import letterbox_image  # or: scale the longer side to R, pad bottom/right with letterbox_fill"]),
                  f"session = onnxruntime.InferenceSession({path!r})",
                  *prepare,
                  "boxes, scores, labels, num_detections = session.run(None, {'image': image.numpy()})  # padded: [B, D, 4], [B, D], [B, D], [B]",
                  "n = num_detections[0]",
                  select,
                  "# TensorRT",
                  f"trtexec --onnx={path} --saveEngine={engine} --fp16"]
    if "torchscript" in exported:
        lines += ["# TorchScript (Python, or torch::jit::load in C++)",
                  f"model = torch.jit.load({exported['torchscript']['path']!r})",
                  "boxes, scores, labels, num_detections = model(image)"]
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


def images_of(outputs: Sequence) -> list[tuple[Tensor, Tensor, Tensor]]:
    """Per image, its (boxes, scores, labels) from padded outputs: an export's (tensors or numpy
    arrays) or `Inference`'s."""
    boxes, scores, labels, counts = (torch.as_tensor(o).detach().cpu() for o in outputs[:4])
    return [(boxes[i, :n], scores[i, :n], labels[i, :n]) for i, n in enumerate(counts.tolist())]


def coco_results(outputs: Sequence[Tensor], scale: float, image_size: tuple[int, int], classes: Sequence[dict],
                 image_id: int) -> list[dict]:
    """One image's (boxes, scores, labels) from an export on its `letterbox_image` input
    (`images_of(outputs)[i]`) as COCO result entries for the original image: boxes divided by
    `scale`, clipped to `image_size` (H, W) and
    made xywh; each label mapped to its dataset category id through `classes` (the exports'
    metadata `read_metadata(path)["classes"]`, or `Detector.classes`)."""
    boxes, scores, labels = (torch.as_tensor(t).detach().cpu() for t in outputs[:3])
    h, w = image_size
    boxes = (boxes.float() / scale).clamp(min=0).minimum(torch.tensor([w, h, w, h], dtype=torch.float32))
    boxes[:, 2:] -= boxes[:, :2]
    ids = {c["label"]: c["id"] for c in classes}
    return [{"image_id": image_id, "category_id": ids[int(label)], "bbox": box, "score": float(score)}
            for box, score, label in zip(boxes.tolist(), scores.tolist(), labels.tolist())]


def run_exported(path: str | Path, image: Tensor) -> tuple[Tensor, ...]:
    """Outputs of an exported file on `image` [B, 3, R, R] (padded, as `OUTPUTS`): TorchScript through torch.jit, ONNX through
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


def compare(eager: Sequence, exported: Sequence, tol: Tolerance = Tolerance()) -> float:
    """Largest |difference| of boxes and scores between matched detections of two padded
    outputs (boxes, scores, labels, num_detections), image by image. ValueError when they differ
    in batch size or number of detections, or a detection has no counterpart: what a wrongly
    traced graph produces."""
    a, b = images_of(eager), images_of(exported)
    if len(a) != len(b):
        raise ValueError(f"export: {len(b)} images where eager gives {len(a)}")
    diff = 0.0
    for i, (one, other) in enumerate(zip(a, b)):
        try:
            diff = max(diff, compare_image(one, other, tol))
        except ValueError as e:
            raise ValueError(f"image {i}: {e}") from None
    return diff


def compare_image(eager: Sequence[Tensor], exported: Sequence[Tensor], tol: Tolerance = Tolerance()) -> float:
    """`compare` for one image's (boxes, scores, labels).

    Detections are matched, not compared in order: where scores are nearly equal (an untrained
    model's are), eager NMS and the traced graph may order them, keep one of two overlapping
    boxes, or cut at the last place differently, none of which is an export error. So the lowest
    scores (within `tol.score` of the last kept) are left out, and each eager detection is matched
    to an exported one of the same label with a score within `tol.score` and IoU >= MATCH_IOU (or
    coordinates within BOX_TOL). With `tol.matched` < 1, that share of the detections must match."""
    exact = tol.matched >= 1.0
    if exact and len(eager[0]) != len(exported[0]):
        raise ValueError(f"{len(exported[0])} detections where eager gives {len(eager[0])}")
    if tol.top is not None:
        eager, exported = (_best(out, tol.top) for out in (eager, exported))
    a, b = _above_floor(tol.score, eager, exported)
    if exact and len(a[0]) != len(b[0]):
        raise ValueError(f"{len(b[0])} detections above the lowest kept score where eager gives {len(a[0])}")
    iou = box_iou(a[0], b[0]) if len(a[0]) else torch.zeros(0, 0)
    near = (a[0][:, None] - b[0][None]).abs().amax(-1) <= BOX_TOL if len(a[0]) else torch.zeros(0, 0, dtype=torch.bool)
    ok = (a[2][:, None] == b[2][None]) & ((a[1][:, None] - b[1][None]).abs() <= tol.score) & ((iou >= MATCH_IOU) | near)
    free = torch.ones(len(b[0]), dtype=torch.bool)
    diff, matched = 0.0, 0
    for i in range(len(a[0])):
        candidates = torch.where(ok[i] & free)[0]
        if not len(candidates):
            if exact:
                raise ValueError(f"eager detection {i} (label {int(a[2][i])}, score {float(a[1][i]):.4f}) has no exported counterpart")
            continue
        j = candidates[iou[i, candidates].argmax()]
        free[j] = False
        matched += 1
        diff = max(diff, float((a[0][i] - b[0][j]).abs().max()), float((a[1][i] - b[1][j]).abs()))
    if matched < tol.matched * max(len(a[0]), len(b[0])):
        raise ValueError(f"{matched} detections match of {len(a[0])} in eager and {len(b[0])} exported (at least {tol.matched:.0%} must)")
    return diff


def _best(out: Sequence, top: int) -> tuple[Tensor, Tensor, Tensor]:
    boxes, scores, labels = (torch.as_tensor(t).detach().cpu() for t in out[:3])
    order = scores.argsort(descending=True)[:top]
    return boxes[order], scores[order], labels[order]


def _above_floor(score_tol: float, *outs: Sequence[Tensor]) -> list[tuple[Tensor, Tensor, Tensor]]:
    outs = [tuple(torch.as_tensor(t).detach().cpu() for t in o[:2]) + (torch.as_tensor(o[2]).detach().cpu().long(),) for o in outs]
    if not all(len(o[1]) for o in outs):
        return outs
    floor = max(float(o[1].min()) for o in outs) + score_tol
    return [tuple(t[o[1] > floor] for t in o) for o in outs]


def parse(argv: list[str] | None, prog: str = "python -m supernet.export") -> argparse.Namespace:
    p = CommandParser(prog=prog, description=__doc__)
    p.add_argument("model", help="a detector file written by Detector.save (retrain.py's model.pt)")
    p.add_argument("--out", help="folder to write to (default: the model's folder)")
    p.add_argument("--formats", nargs="+", default=list(FORMATS), help=f"some of {list(FORMATS)}")
    p.add_argument("--input", choices=INPUTS, default="float", dest="image_input",
                   help="float: the graph takes letterboxed [B, 3, R, R] images in [0, 1]; uint8: decoded [B, H, W, 3] RGB images "
                        "of any size, letterboxed in the graph, boxes out in their pixels")
    p.add_argument("--dtype", choices=list(DTYPES), default="fp32",
                   help="fp16: half the weights and compute the network in fp16 (inputs, outputs and post-processing stay float32)")
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
        result = export(detector, args.out or Path(args.model).parent, args.formats, check=not args.no_check, image_input=args.image_input,
                        dtype=args.dtype)
    except (ValueError, ImportError, OSError) as e:
        print(error_message(e), file=sys.stderr)
        return 2
    failed = {fmt: r["check_failed"] for fmt, r in result.items() if "check_failed" in r}
    for fmt, why in failed.items():
        print(f"warning: {fmt} export differs from eager: {why}", file=sys.stderr)
    if "onnx" in result and result["onnx"]["exporter"] != "torch.export":
        print(f"note: the ONNX file was written by {result['onnx']['exporter']}", file=sys.stderr)
    print(usage(result, detector.arch.resolution), file=sys.stderr)
    print(json.dumps(result))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
