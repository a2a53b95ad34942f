"""A user's own block and neck (with a knob of its own), defined here, through the whole library:
train, latency table, search, extract, save/load and export, without editing the library."""
import json

import pytest
import torch
import torch.nn as nn
from common import MICRO_SPACE, StepTimer
from torch import Tensor

from latency import Settings, arch_ops, build_table, space_ops
from search.nas import Search, SearchConfig
from supernet import Arch, Detector, SearchSpace, registry
from supernet.checkpoint import load_supernet
from supernet.data import build_datasets
from supernet.export import export, read_metadata
from supernet.layers import ConvBnAct
from supernet.registry import register_block, register_neck
from supernet.shapes import generate_shapes
from supernet.train_config import TrainConfig
from supernet.trainer import Trainer


class TwoConvBlock(nn.Module):
    """A plain two-conv block: stride on the first conv, elastic in both widths."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, act: str = "relu", drop_path: float = 0.0):
        super().__init__()
        self.conv1 = ConvBnAct(in_ch, out_ch, 3, stride, act=act)
        self.conv2 = ConvBnAct(out_ch, out_ch, 3, act=act)

    def forward(self, x: Tensor, out_channels: int) -> Tensor:
        return self.conv2(self.conv1(x, out_channels), out_channels)


class SmoothedFPN(nn.Module):
    """Laterals, a top-down sum, then `smooth` 3x3 convs per level: `smooth` is this neck's own knob."""

    knobs = ("smooth",)

    def __init__(self, in_channels: list[int], width: int, act: str = "relu", smooth: int = 1):
        super().__init__()
        self.lateral = nn.ModuleList(ConvBnAct(c, width, 1, act=None) for c in in_channels)
        self.smooth = nn.ModuleList(nn.ModuleList(ConvBnAct(width, width, 3, act=act) for _ in range(smooth)) for _ in in_channels)

    def forward(self, features: list[Tensor], width: int, smooth: int) -> list[Tensor]:
        x = [conv(f, width) for conv, f in zip(self.lateral, features)]
        for i in range(len(x) - 2, -1, -1):
            x[i] = x[i] + nn.functional.interpolate(x[i + 1], size=x[i].shape[-2:], mode="nearest")
        out = []
        for level, convs in zip(x, self.smooth):
            for conv in convs[:smooth]:
                level = conv(level, width)
            out.append(level)
        return out


SPACE = {
    **MICRO_SPACE,
    "backbone": {**MICRO_SPACE["backbone"], "stages": [{**s, "blocks": [*s["blocks"], "two_conv"]} for s in MICRO_SPACE["backbone"]["stages"]]},
    "neck": {**MICRO_SPACE["neck"], "types": ["fpn", "smoothed_fpn"], "options": {"smooth": [1, 2]}},
}


@pytest.fixture(scope="module")
def user_space():
    saved = {kind: dict(registry.components(kind)) for kind in registry.KINDS}
    register_block("two_conv", TwoConvBlock)
    register_neck("smoothed_fpn", SmoothedFPN)
    yield SearchSpace.from_dict(SPACE)
    registry._REGISTRIES.update(saved)


def ours(space: SearchSpace, seed: int) -> Arch:
    """An arch that runs the user's block somewhere and the user's neck at its largest knob."""
    arch = space.sample(seed).to_dict()
    arch["backbone"]["stages"][0]["blocks"][0] = "two_conv"
    arch["neck"] = {"type": "smoothed_fpn", "width": 16, "repeats": 1, "options": {"smooth": 2}}
    return space.validate(Arch.from_dict(arch))


def test_the_space_offers_the_users_knob_only_to_the_neck_that_declares_it(user_space):
    gene = user_space.knob_gene("neck", "smooth")
    assert gene.name == "neck.options.smooth" and gene.choices == (1, 2)
    assert user_space.choices(gene.key, {"neck.type": "smoothed_fpn"}) == (1, 2)
    assert user_space.choices(gene.key, {"neck.type": "fpn"}) == (None,)
    archs = [user_space.sample(i) for i in range(60)]
    assert {a.neck.knob("smooth") for a in archs if a.neck.type == "smoothed_fpn"} == {1, 2}
    assert all(a.neck.options == () for a in archs if a.neck.type == "fpn")
    arch = ours(user_space, 0)
    assert Arch.from_json(arch.to_json()) == arch and json.loads(arch.to_json())["neck"]["options"] == {"smooth": 2}
    with pytest.raises(ValueError, match="declares the knob"):
        SearchSpace.from_dict({**SPACE, "neck": {**SPACE["neck"], "options": {}}})


def test_train_table_search_extract_save_load_and_export(user_space, tmp_path):
    data = generate_shapes(tmp_path / "shapes", train=8, val=4, size=64, seed=0)
    space_file = tmp_path / "space.json"
    space_file.write_text(json.dumps(SPACE))
    cfg = TrainConfig(space=str(space_file), data=str(data), out=str(tmp_path / "run"), steps=3, batch_size=2, workers=0,
                      eval_images=2, eval_random_archs=0, calib_batches=1, device="cpu")
    Trainer(cfg, build_datasets(cfg, 96)).run()
    model, _ = load_supernet(str(tmp_path / "run" / "last.pt"), "cpu")
    assert any(".two_conv." in n for n in model.state_dict()) and any(n.startswith("neck.smoothed_fpn.smooth.0.1.") for n in model.state_dict())

    table = build_table(user_space, Settings(warmup=0, repeats=1), tmp_path / "lut.json", num_classes=3, passes=1, calib_archs=0,
                        timer=StepTimer(), progress=False)
    arch = ours(user_space, 1)
    assert {op.key for op in arch_ops(arch)} <= set(space_ops(user_space)) <= set(table.entries)
    assert any(op.kind == "neck" and op["smooth"] == 2 for op in arch_ops(arch))
    fastest, _ = table.extreme(fastest=True)
    assert table.predict(arch) > 0 and fastest.neck.knob("repeats") == 1

    budget = table.extreme(False)[1]
    summary = Search(SearchConfig(supernet=str(tmp_path / "run" / "last.pt"), lut=str(tmp_path / "lut.json"), latency_budget=budget,
                                  population=4, generations=2, topk=2, calib_batches=1, eval_images=2, batch_size=2, workers=0,
                                  device="cpu", out=str(tmp_path / "search"), finalists=2)).run()
    history = [json.loads(line) for line in (tmp_path / "search" / "history.jsonl").read_text().splitlines()]
    assert summary["best"] and all(user_space.validate(Arch.from_dict(r["arch"])) for r in history)

    model.eval()
    det = model.extract(arch)
    det.save(tmp_path / "model.pt")
    loaded = Detector.load(tmp_path / "model.pt").eval()
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        a, b, c = model(image, arch=arch)[0], det(image)[0], loaded(image)[0]
    assert torch.equal(b["boxes"], c["boxes"]) and torch.allclose(a["scores"], b["scores"], atol=1e-5)
    result = export(loaded, tmp_path / "export", ["torchscript"])
    assert "check_failed" not in result["torchscript"], result
    assert read_metadata(tmp_path / "export" / "model.torchscript.pt")["arch"] == arch.to_dict()
