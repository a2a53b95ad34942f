"""The COCO recipes in configs/ are run configs every command reads: a setting renamed or a value
the config refuses breaks them here, not on a user's 8-GPU job."""
from pathlib import Path

import pytest

from smnas.commands import retrain, search, train
from supernet.train_config import train_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
COMMANDS = {"coco_supernet.yaml": "train", "coco_search.yaml": "search", "coco_retrain.yaml": "retrain"}


def test_every_recipe_is_checked_here():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(COMMANDS)


def test_supernet_recipe():
    config, resume, overwrite = train.parse(["--config", str(CONFIGS / "coco_supernet.yaml"), "--data", "/datasets/coco"])
    assert (config.space, config.amp, config.sync_bn, config.epochs, config.data) == ("coco", "bf16", True, 36, "/datasets/coco")
    assert config.train_blocks == ("ir_k3_e6",) and not resume and not overwrite


def test_search_recipe():
    config, resume = search.parse(["--config", str(CONFIGS / "coco_search.yaml"), "--latency-budget", "8"])
    assert (config.supernet, config.population, config.generations, config.latency_budget) == ("runs/coco_supernet/last.pt", 50, 20, 8.0)


def test_retrain_recipe():
    job, args, resume = retrain.parse(["--config", str(CONFIGS / "coco_retrain.yaml"), "--arch", "baseline:mobilenetv2_fpn_fcos",
                                       "--data", "/datasets/coco"])
    config = train_config(args)
    assert job.init == "scratch" and (config.amp, config.epochs, config.sync_bn, config.space) == ("bf16", 36, True, "coco")


def test_a_flag_overrides_the_recipe():
    config, _, _ = train.parse(["--config", str(CONFIGS / "coco_supernet.yaml"), "--epochs", "2", "--amp", "fp16"])
    assert (config.epochs, config.amp) == (2, "fp16")


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_recipe_names_its_command_line(name):
    text = (CONFIGS / name).read_text()
    assert f"--config configs/{name}" in text
