"""Shared by several test files: a micro search space and a deterministic timer."""
import json
from pathlib import Path

import pytest

MICRO_SPACE = {
    "resolutions": [64, 96],
    "backbone": {
        "stem_widths": [8],
        "stages": [
            {"depths": [1, 2], "widths": [8], "blocks": ["basic", "ir_k3_e6"]},
            {"depths": [1], "widths": [8, 16], "blocks": ["bottleneck", "ir_k3_e6"]},
            {"depths": [1, 2], "widths": [16], "blocks": ["ir_k5_e6", "ir_k3_e6"]},
            {"depths": [1], "widths": [16, 24], "blocks": ["basic"]},
        ],
    },
    "neck": {"types": ["fpn", "pan"], "widths": [8, 16], "repeats": [1, 2]},
    "head": {"types": ["fcos", "retinanet"], "widths": [8], "num_convs": [1, 2]},
}


def write_space(path, space: dict = MICRO_SPACE) -> str:
    path.write_text(json.dumps(space))
    return str(path)


class StepTimer:
    """A deterministic stand-in for timing: the n-th measurement takes 1 + (n mod 13) / 10 ms."""

    def __init__(self):
        self.n = 0

    def __call__(self, fn):
        self.n += 1
        return 1.0 + (self.n % 13) / 10


REPO = Path(__file__).resolve().parents[1]
COCO128 = next((p for p in (REPO.parent / "shared/data/coco128", Path("/work/shared/data/coco128")) if p.is_dir()), None)
needs_coco128 = pytest.mark.skipif(COCO128 is None, reason="shared/data/coco128 not found next to the repository")


def read_board(folder):
    """(tag -> steps of its scalars, the hparams' settings) of a TensorBoard log folder."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = EventAccumulator(str(folder))
    acc.Reload()
    scalars = {tag: [e.step for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    try:
        start = acc.PluginTagToContent("hparams").get("_hparams_/session_start_info")
    except KeyError:  # no hparams written
        start = None
    info = plugin_data_pb2.HParamsPluginData.FromString(start).session_start_info.hparams if start else {}
    hparams = {k: v.number_value if v.HasField("number_value") else v.string_value for k, v in info.items()}
    return scalars, hparams
