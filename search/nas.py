"""Detector search on a trained supernet: subnets scored by COCO mAP with inherited weights (after
BN recalibration) under a latency budget from the device's lookup table, structural level first,
then modular (SM-NAS).

Outputs in the search folder, each written atomically: `config.yaml` (the settings: checked on
`--resume`, and `--config` re-runs them), `history.jsonl` (one line per evaluated subnet, appended as each finishes),
`pareto.json`, `finalists.json` and `pareto.png` (rewritten after every generation). A resumed
search replays the same seeded generations and takes every result already in `history.jsonl`
from there, so nothing is evaluated twice and the run continues as if never stopped.
"""
from __future__ import annotations

import logging
import json
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
import torch.distributed as dist
import yaml
from tqdm import tqdm

from latency.cost import flops, params
from latency.measure import Settings
from latency.table import LatencyTable, TableError, device_name
from supernet.bn import recalibrate_bn
from supernet.checkpoint import load_supernet, trained_space
from supernet.cli import check_choices, check_number, option, write_config
from supernet.data import build_datasets, build_loader
from supernet.distributed import init_distributed
from supernet.evaluate import Batches, METRICS, coco_map, detect
from supernet.io import FolderBusy, RunLock, atomic_json, atomic_save_figure, figure
from supernet.space import Arch, SearchSpace
from supernet.tensorboard import Board
from supernet.train_config import RESTRICTIONS, TrainConfig, recorded_config
from supernet.trainer import Trainer

from .evolution import Evolution, Individual, Objective, SearchError
from .pareto import pareto_front
from .records import TIMINGS, SubnetRecord, map_flops
from .surrogate import smooth_scores

STAGES = ("structural", "modular")
RANDOM = "random"  # the control: as many subnets drawn uniformly under the budget, scored the same way
STRUCTURAL_BLOCK = "ir_k3_e6"  # the block every position gets while the structure is searched (MobileNetV2's)
DEFAULT_LUT_DIR = Path("luts")

logger = logging.getLogger(__name__)

@dataclass
class SearchConfig:
    supernet: str = option("runs/supernet/last.pt", "supernet checkpoint (smnas train's OUT/last.pt)")
    latency_budget: Optional[float] = option(None, "milliseconds, as the latency table predicts them (required)")
    lut: Optional[str] = option(None, "latency table JSON; none: one in luts/ built on this device for this space")
    flops_budget: Optional[float] = option(None, "GFLOPs (true FLOPs: a multiply-add counts 2); none: no limit")
    params_budget: Optional[float] = option(None, "millions of parameters; none: no limit")
    objective: str = option("map", "map: the best mAP under the budget; pareto: NSGA-II on (mAP, latency) under the budget",
                            choices=("map", "pareto"))
    population: int = option(20, "subnets a generation")
    generations: int = option(10, "generations a stage")
    topk: int = option(5, "parents: the best this many so far")
    mutation_prob: float = option(0.1, "probability that a gene mutates")
    crossover_prob: float = option(0.5, "share of the children made by crossover")
    aging: int = option(0, "regularized evolution: parents only from the last N evaluated; 0: from all (SPOS)", metavar="N")
    smooth: bool = option(False, "rank subnets by their inherited mAP smoothed over all the stage evaluated (a ridge fit on "
                                 "their choices, search.surrogate)")
    flops_prior: float = option(0.0, "rank subnets by inherited mAP x GFLOPs^ALPHA, a prior for subnets that compute more "
                                     "under the budget (GFLOPs alone rank near-budget subnets about as well as shared weights "
                                     "do; the README has what it did to the search); 0: mAP alone", metavar="ALPHA")
    calib_batches: int = option(8, "BN recalibration batches before scoring a subnet")
    eval_images: int = option(200, "validation images a subnet is scored on (a fixed subset)")
    batch_size: int = option(16, "images a batch, for recalibration and scoring")
    stage: str = option("both", "structural, modular (needs --base-arch), both (structural then modular, SM-NAS), or random "
                                "(the control: as many subnets drawn uniformly under the budget, no evolution)",
                        choices=(*STAGES, "both", RANDOM))
    structural_block: str = option(STRUCTURAL_BLOCK, "the block every position gets in the structural stage")
    base_arch: Optional[str] = option(None, "Arch JSON whose structure --stage modular keeps (required there)")
    finetune_steps: int = option(0, "--stage both: fine-tune the supernet this many steps on the structure found before the "
                                    "modular stage (SM-NAS); 0: none")
    per_resolution: bool = option(False, "structural stage: one evolution per input resolution, each with --population and "
                                         "--generations divided among them (the first get the remainder; at least 1 each), so that every "
                                         "resolution's best is evolved, not only that of the resolution the scores favour")
    resolution: Optional[int] = option(None, "search only this input resolution (one a screening picked: the pipeline's "
                                              "--resolution-first); none: every resolution of the space")
    finalists: int = option(5, "subnets kept in finalists.json")
    seed: int = option(0, "seeds the evolution and the data subset")
    out: str = option("runs/search", "search folder: history.jsonl, pareto.json, finalists.json, config.yaml")
    device: str = option("auto", "where subnets are evaluated: auto, cpu, cuda or cuda:N")
    workers: int = option(2, "data loader processes")
    force: bool = option(False, "use a latency table built on another device or for another class count")
    data: Optional[str] = option(None, "COCO 2017 layout root; none: the data the supernet was trained on")
    train_ann: Optional[str] = option(None, "training annotations JSON (recalibration batches; overrides --data)")
    train_images: Optional[str] = option(None, "training images folder (overrides --data)")
    val_ann: Optional[str] = option(None, "validation annotations JSON (overrides --data)")
    val_images: Optional[str] = option(None, "validation images folder (overrides --data)")

    # settings that change no result: may differ on --resume
    RUNTIME = ("device", "workers")

    def __post_init__(self) -> None:
        """Every setting checked once, here, naming its flag (those that need the supernet, the
        table or the data are checked by `Search`)."""
        for name in ("latency_budget", "flops_budget", "params_budget"):  # ms, GFLOPs, millions
            check_number(SearchError, name, getattr(self, name), 0, low_open=True, optional=True)
        for name in ("population", "generations", "topk", "calib_batches", "eval_images", "batch_size", "finalists"):
            check_number(SearchError, name, getattr(self, name), 1, integer=True)
        check_number(SearchError, "resolution", self.resolution, 1, integer=True, optional=True)
        for name in ("finetune_steps", "workers", "aging"):
            check_number(SearchError, name, getattr(self, name), 0, integer=True)
        if 0 < self.aging < self.topk:
            raise SearchError(f"`aging`: {self.aging} is smaller than `topk` {self.topk} (the window parents are chosen from); 0 turns it off")
        check_number(SearchError, "flops_prior", self.flops_prior, 0)
        if self.flops_prior and self.smooth:
            raise SearchError("`flops_prior`: not with `smooth` (each ranks by its own score); pick one")
        check_number(SearchError, "mutation_prob", self.mutation_prob, 0, 1, low_open=True)
        check_number(SearchError, "crossover_prob", self.crossover_prob, 0, 1)
        check_choices(SearchError, self)
        if self.finetune_steps and self.stage != "both":
            raise SearchError(f"`finetune_steps`: fine-tunes between the two stages, so needs `stage` both (got `stage` {self.stage})")


def stage_genes(space: SearchSpace, stage: str, base: Optional[Arch] = None, block: str = STRUCTURAL_BLOCK) -> list[tuple[str, tuple]]:
    """The genes one stage evolves; fixed genes keep a single choice.

    structural: resolution, depths and widths, neck and head; every block is `block` (or the
    stage's first choice where `block` is not one). modular: the structure of `base`
    (resolution, neck and head types, stage depths) is fixed; blocks, widths, neck repeats and
    head convs evolve."""
    pairs = lambda genes: [(g.name, g.choices) for g in genes]
    if stage == "structural":
        return pairs(space.restrict(blocks=(block,)).genes())
    if stage == RANDOM:
        return pairs(space.genes())
    if stage == "modular":
        if base is None:
            raise SearchError("modular stage: needs the structure to keep (a base arch)")
        values = space.encode(base)
        return [(g.name, (values[g.name],)) if g.structure else (g.name, g.choices) for g in space.genes()]
    raise SearchError(f"`stage`: expected structural, modular, both or random, got {stage!r}")


def resolution_niches(genes: list[tuple[str, tuple]]) -> list[list[tuple[str, tuple]]]:
    """`genes` once per input resolution, each with the resolution fixed to one of its choices."""
    return [at_resolution(genes, r) for r in dict(genes)["resolution"]]


def at_resolution(genes: list[tuple[str, tuple]], resolution: Optional[int]) -> list[tuple[str, tuple]]:
    """`genes` with the input resolution fixed to `resolution` (None: as they are)."""
    return genes if resolution is None else [(name, (resolution,)) if name == "resolution" else (name, values) for name, values in genes]


def search_started(out: Path) -> bool:
    """Whether `out` holds a search's settings (one that `--resume` can continue)."""
    return (out / "config.yaml").is_file() or (out / "config.json").is_file()


def _recorded_settings(out: Path) -> dict:
    """The settings a search in `out` was started with (config.yaml; an older version's config.json
    under its old names: val_images was the image count, val_images_dir the folder)."""
    try:
        if (out / "config.yaml").is_file():
            return yaml.safe_load((out / "config.yaml").read_text())
        before = json.loads((out / "config.json").read_text())
    except (OSError, ValueError, yaml.YAMLError):
        raise SearchError(f"`resume`: no search to resume in {out} (config.yaml missing or unreadable)") from None
    if "val_images_dir" in before:
        before["eval_images"], before["val_images"] = before.pop("val_images"), before.pop("val_images_dir")
    return before


def finetune_config(trained: dict, search: "SearchConfig", out: Path) -> TrainConfig:
    """The supernet's own training settings, restarted for `search.finetune_steps` steps from its
    weights on the structure saved in `out`/structure.json, every block type sampled."""
    steps = search.finetune_steps
    config = recorded_config(trained)
    return replace(config, out=str(out), steps=steps, epochs=1, warmup=min(config.warmup, steps // 10), start_from=search.supernet,
                   structure=str(out / "structure.json"), **dict.fromkeys(RESTRICTIONS), device=search.device, workers=search.workers,
                   eval_images=min(config.eval_images or search.eval_images, search.eval_images), eval_every=0)


class SubnetEvaluator:
    """Fitness of a subnet with inherited weights: its path's BN statistics re-estimated on fixed
    training batches, then COCO mAP on a fixed validation subset, both decoded once.

    `infer(arch)` recalibrates and runs inference at once; `score(inferred)` leaves COCOeval (CPU
    only) to a background thread, so scoring one subnet overlaps the next one's recalibration and
    inference (on a GPU entirely). Nothing else runs in that thread: it touches no RNG and no
    model."""

    def __init__(self, model: torch.nn.Module, train_set, val_set, device: torch.device, calib_batches: int,
                 eval_images: int, batch_size: int, workers: int, seed: int):
        self.model, self.device, self.calib_batches = model, device, calib_batches
        loader = build_loader(train_set, batch_size, shuffle=True, workers=workers, seed=seed)
        self.calib = Batches.first(loader, calib_batches * batch_size)
        self.val = Batches.first(build_loader(val_set, batch_size, shuffle=False, workers=workers, seed=seed), eval_images)
        self.eval_images = sum(len(images) for images, _ in self.val)
        self.scorer = ThreadPoolExecutor(1, thread_name_prefix="cocoeval")

    def infer(self, arch: Arch) -> dict:
        """Recalibrated detections of `arch` on the validation subset, with their timings."""
        start = time.perf_counter()
        recalibrate_bn(self.model, arch, self.calib, self.calib_batches, self.device)
        recalibrated = time.perf_counter()
        detections, image_ids = detect(self.model, arch, self.val, self.device, self.eval_images)
        return {"detections": detections, "image_ids": image_ids, "recalibration_s": recalibrated - start,
                "inference_s": time.perf_counter() - recalibrated}

    def score(self, inferred: dict) -> Future:
        """A future of {METRICS..., "recalibration_s", "inference_s", "cocoeval_s", "seconds"}."""

        def run() -> dict:
            t = time.perf_counter()
            metrics = coco_map(self.val.dataset.coco, inferred["detections"], inferred["image_ids"])
            cocoeval = time.perf_counter() - t
            timings = {k: inferred[k] for k in ("recalibration_s", "inference_s")}
            return {**metrics, **timings, "cocoeval_s": cocoeval, "seconds": sum(timings.values()) + cocoeval}

        return self.scorer.submit(run)

    def __call__(self, arch: Arch) -> dict:
        return self.score(self.infer(arch)).result()


def find_lut(device: str, space: SearchSpace, folder: Path = DEFAULT_LUT_DIR) -> Path:
    """The first table in `folder` built on this machine's device for `space`, or a SearchError
    saying how to build one."""
    here = device_name(device)
    for path in sorted(folder.glob("*.json")):
        try:
            meta = json.loads(path.read_text()).get("meta", {})
        except (OSError, json.JSONDecodeError, AttributeError):
            continue
        if meta.get("environment", {}).get("device_name") == here and meta.get("space") == space.to_dict():
            return path
    raise SearchError(f"`lut`: no latency table for this device ({here}) and this space in {folder}/; build one with "
                      f"python -m latency build --space SPACE --device {device} --num-classes N --out {folder}/NAME.json, "
                      f"or pass `lut`")


class Search:
    """One search run in `config.out` (see the module docstring)."""

    def __init__(self, config: SearchConfig, resume: bool = False):
        self.config = config
        c = config
        if c.latency_budget is None:
            raise SearchError("`latency_budget`: required (milliseconds, as the latency table predicts them)")
        self.dist, self.device = init_distributed(c.device)
        self.out = Path(c.out)
        self.model, blob = load_supernet(c.supernet, self.device)
        self.blob = blob
        self.space: SearchSpace = self.model.space
        self.num_classes = self.model.num_classes
        try:
            self.space.restrict(blocks=(c.structural_block,))
        except ValueError as e:
            raise SearchError(f"`structural_block` {c.structural_block}: {e}") from None
        self.table = self._table()
        fastest, fastest_ms = self.table.extreme(fastest=True)
        if c.latency_budget < fastest_ms:
            raise SearchError(f"`latency_budget` {c.latency_budget:g} ms: below the fastest subnet of this space on "
                              f"{self.table.meta.device_name}, {fastest_ms:.3f} ms (arch {fastest.hash()})")
        if c.resolution is not None and c.resolution not in self.space.resolutions:
            raise SearchError(f"`resolution` {c.resolution}: expected one of the space's input resolutions {list(self.space.resolutions)}")
        if c.resolution is not None and c.per_resolution:
            raise SearchError("`resolution` and `per_resolution`: one fixes the input resolution, the other evolves each one; pass one")
        self.base_arch = self._base_arch()
        self.train_set, self.val_set = self._datasets(blob)
        if c.eval_images > len(self.val_set):  # else scored on fewer than config.yaml would record
            raise SearchError(f"`eval_images` {c.eval_images}: the validation set has {len(self.val_set)} images")
        self.cache = self._prepare_out(resume)
        self.resumed = resume
        self.evaluator = SubnetEvaluator(self.model, self.train_set, self.val_set, self.device, c.calib_batches,
                                         c.eval_images, c.batch_size, c.workers, c.seed)
        self.history: list[SubnetRecord] = []  # this run's records, in order
        self.finetuned = False  # the weights changed between the stages (--finetune-steps)
        self.smoothed: dict[str, float] = {}  # hash -> smoothed mAP (--smooth), over the subnets of its stage

    # ---- set-up -------------------------------------------------------------------------------
    def _table(self) -> LatencyTable:
        c = self.config
        path = Path(c.lut) if c.lut else find_lut(str(self.device), self.space)
        table = LatencyTable.load(path)
        # the table's dtype, batch size and memory format are the deployment's: only the device is this run's
        table.check(Settings(str(self.device), table.settings.dtype, table.settings.batch_size, table.settings.channels_last), c.force)
        if not c.force and table.context.num_classes != self.num_classes:
            raise TableError(f"{path}: built for {table.context.num_classes} classes, the supernet predicts {self.num_classes}; "
                             f"rebuild with `num_classes` {self.num_classes}, or pass `force`")
        if self.space.to_dict() != table.space.to_dict():  # another space: usable if it covers this one's ops
            table.raw(self.space.largest())  # a missing op fails here, naming it
            table.raw(self.space.smallest())
        return table

    def _base_arch(self) -> Optional[Arch]:
        c = self.config
        if c.stage != "modular":
            return None
        if not c.base_arch:
            raise SearchError("`stage` modular: needs `base_arch`, the Arch JSON whose structure it keeps (e.g. the structural "
                              "stage's best in OUT/finetune/structure.json or finalists.json), or run `stage` both")
        path = Path(c.base_arch)
        try:
            return self.space.validate(Arch.from_json(path.read_text()))
        except OSError:
            raise SearchError(f"`base_arch`: {path} not found") from None
        except ValueError as e:
            raise SearchError(f"`base_arch`: {path}: {e}") from None

    def _prepare_out(self, resume: bool) -> dict[str, SubnetRecord]:
        """Check the folder and return the results already there (hash -> record) when resuming."""
        history = self.out / "history.jsonl"
        saved = {k: v for k, v in asdict(self.config).items() if k not in SearchConfig.RUNTIME}
        cache: dict[str, SubnetRecord] = {}
        self.recorded: set[tuple[str, str, int]] = set()  # (hash, stage, generation) already in history.jsonl
        self.lock = RunLock(self.out)
        if self.dist.main:
            try:
                self.lock.acquire()
            except (FolderBusy, OSError) as e:
                raise SearchError(f"`out` {e}") from None
        if resume:
            before = _recorded_settings(self.out)
            defaults = asdict(SearchConfig())  # a setting added since the folder was searched had its default there
            changed = sorted(k for k in saved if before.get(k, defaults[k]) != saved[k])
            if changed:
                raise SearchError(f"`resume`: {self.out} was searched with other settings ({', '.join(f'`{k}`' for k in changed)}); "
                                  f"use the same settings, or another `out`")
            if history.is_file():
                for line in history.read_text().splitlines():
                    try:
                        record = SubnetRecord.from_dict(json.loads(line))
                    except json.JSONDecodeError:
                        continue  # a line cut by the kill: evaluated again
                    cache.setdefault(record.hash, record)
                    self.recorded.add((record.hash, record.stage, record.generation))
        elif history.is_file() and history.stat().st_size:
            raise SearchError(f"`out`: {self.out} already holds a search; pass `resume` to continue it, or choose another `out`")
        if self.dist.main:
            self.out.mkdir(parents=True, exist_ok=True)
            write_config(asdict(self.config), self.out / "config.yaml")
            (self.out / "config.json").unlink(missing_ok=True)  # an older version's copy of the settings
            if resume and history.is_file():  # drop a cut last line so appends start on a fresh line
                lines = [ln for ln in history.read_text().splitlines() if _is_json(ln)]
                history.write_text("".join(ln + "\n" for ln in lines))
            elif not resume:
                history.write_text("")
        return cache

    def _datasets(self, blob: dict) -> tuple:
        c = self.config
        trained = blob.get("config", {})
        overrides = {"train_ann": c.train_ann, "train_images": c.train_images, "val_ann": c.val_ann, "val_images": c.val_images}
        if c.data or any(overrides.values()):
            data = TrainConfig(data=c.data, **overrides)
        else:  # the data the supernet was trained on
            data = TrainConfig(**{k: trained.get(k) for k in ("data", "train_ann", "train_images", "val_ann", "val_images")})
        train_set, val_set = build_datasets(data, max(self.space.resolutions))
        if train_set.num_classes != self.num_classes:
            raise SearchError(f"`data`: {train_set.num_classes} classes, the supernet was trained on {self.num_classes}")
        return train_set, val_set

    # ---- running ------------------------------------------------------------------------------
    def constraints(self) -> list[Callable[[Arch], bool]]:
        c = self.config
        checks = [lambda a: self.table.predict(a) <= c.latency_budget]
        if c.flops_budget:
            checks.append(lambda a: flops(a, self.num_classes) <= c.flops_budget * 1e9)
        if c.params_budget:
            checks.append(lambda a: params(a, self.num_classes) <= c.params_budget * 1e6)
        return checks

    def run(self) -> dict:
        """Search every stage (or draw the random control); the folder stays locked meanwhile."""
        self.started, self.evaluated_now = time.perf_counter(), 0
        # a resumed search replays its generations from history.jsonl: its curves are written anew
        self.board = Board(self.out / "tensorboard", purge_step=0 if self.resumed else None) if self.dist.main else None
        try:
            return self._run()
        finally:
            if self.board is not None:
                self.board.close()
            self.lock.release()

    def _run(self) -> dict:
        c = self.config
        stages = STAGES if c.stage == "both" else () if c.stage == RANDOM else (c.stage,)
        if c.stage == RANDOM:
            self._random_control()
        score = self.score_key
        objectives = [Objective(score)] if c.objective == "map" else [Objective(score), Objective("latency_ms", maximize=False)]
        base = self.base_arch
        for index, stage in enumerate(stages):
            genes = at_resolution(stage_genes(self.space, stage, base, c.structural_block), c.resolution)
            seeds = [self.space.encode(base)] if stage == "modular" else []  # the modular stage starts from the structure's arch
            niches = resolution_niches(genes) if c.per_resolution and stage == "structural" else [genes]
            ranked = []
            for niche, niche_genes in enumerate(niches):
                generations = max(1, c.generations // len(niches) + (niche < c.generations % len(niches)))
                evolution = Evolution(niche_genes, self.space.decode, lambda a: a.hash(), objectives, self.constraints(), c.population,
                                      c.topk, c.mutation_prob, c.crossover_prob, c.aging, seed=c.seed + index + 1000 * niche, seeds=seeds)
                ranked += evolution.run(generations, lambda generation: self._evaluate(generation, stage),
                                        on_generation=lambda _, evolution=evolution: self._after_generation(evolution))
            base = max(ranked, key=lambda ind: ind.scores[score]).item  # the modular stage keeps this structure
            if stage == "structural" and len(stages) > 1 and c.finetune_steps:
                self._finetune(base)
        summary = self._write_outputs()
        if self.dist.world > 1:
            dist.barrier()
        return summary

    def _random_control(self) -> None:
        """One generation of population x generations uniform draws under the budgets: no selection
        at all. Drawn from the sub-space the supernet trained (`--train-blocks`): the strict
        control, on the same weights; draws with blocks it never trained would score near zero
        and leave a control that only looks weak."""
        c = self.config
        evolution = Evolution(at_resolution(stage_genes(trained_space(self.model, self.blob), RANDOM), c.resolution), self.space.decode, lambda a: a.hash(),
                              [Objective("map")], self.constraints(), c.population * c.generations, seed=c.seed)
        evolution.run(1, lambda generation: self._evaluate(generation, RANDOM), on_generation=lambda _: self._after_generation(evolution))

    @property
    def score_key(self) -> str:
        """What subnets are ranked by: their inherited mAP, with --smooth its smoothed value, with
        --flops-prior its product with GFLOPs^ALPHA."""
        return "map_smoothed" if self.config.smooth else "map_flops" if self.config.flops_prior else "map"

    def _after_generation(self, evolution: Evolution) -> None:
        """With --smooth, every subnet of the stage gets its score smoothed over all of them
        (refitted as the stage grows); then the outputs are rewritten."""
        if self.config.smooth:
            done = evolution.history
            for individual, value in zip(done, smooth_scores([i.item for i in done], [i.scores["map"] for i in done])):
                individual.scores["map_smoothed"] = value
                self.smoothed[individual.key] = round(value, 6)
        summary = self._write_outputs()
        if self.board is not None:
            stage, minutes = self.history[-1].stage, (time.perf_counter() - self.started) / 60
            self.board.scalars({f"search/{stage}/best_{self.score_key}": max(i.scores[self.score_key] for i in evolution.history),
                                "search/pareto_size": summary["pareto_size"],
                                "search/evaluations_per_min": self.evaluated_now / minutes}, len(self.history))

    def _finetune(self, structure: Arch) -> None:
        """Stage-matched training (SM-NAS): fine-tune the supernet on paths of the structure the
        structural stage found, all blocks free, so that the modular stage ranks weights trained
        for its own choices. In OUT/finetune; resumed, or skipped when done, like training."""
        c, folder = self.config, self.out / "finetune"
        done = folder / "result.json"
        if not done.is_file():
            if self.dist.main:
                folder.mkdir(parents=True, exist_ok=True)
                atomic_json(structure.to_dict(), folder / "structure.json")
            if self.dist.world > 1:
                dist.barrier()
            config = finetune_config(self.blob["config"], c, folder)
            logger.info(f"fine-tuning the supernet on the found structure ({structure.hash()}) for {c.finetune_steps} steps in {folder}")
            trainer = Trainer(config, (self.train_set, self.val_set), resume=(folder / "last.pt").is_file())
            result = trainer.run()
            if self.dist.main:
                atomic_json(result, done)
            if self.dist.world > 1:
                dist.barrier()
        self.model, self.blob = load_supernet(folder / "last.pt", self.device)
        self.evaluator.model = self.model
        # scores of the supernet before fine-tuning do not compare: only the modular stage's own are kept
        lines = (self.out / "history.jsonl").read_text().splitlines()
        records = [SubnetRecord.from_dict(json.loads(line)) for line in lines if _is_json(line)]
        self.cache = {r.hash: r for r in records if r.stage == "modular" and not r.cached}
        self.finetuned = True

    def _evaluate(self, individuals: list[Individual[Arch]], stage: str) -> list[dict]:
        """Results of one generation: from the cache (a resumed run), else evaluated, split across
        ranks under torchrun; every record is appended to history.jsonl as rank 0 gets it."""
        archs, generation = [i.item for i in individuals], individuals[0].generation
        todo = [a for a in archs if a.hash() not in self.cache]
        mine = todo[self.dist.rank::self.dist.world]
        best = max((r.map for r in self.history), default=0.0)
        desc = f"{stage} gen {generation + 1}/{self.config.generations}" if stage != RANDOM else RANDOM
        with tqdm(total=len(archs), desc=desc, disable=not self.dist.main, dynamic_ncols=True, leave=False) as bar:
            bar.update(len(archs) - len(todo))
            results: dict[str, SubnetRecord] = {}
            pending: Optional[tuple[Arch, Future]] = None  # the subnet being scored: at most one, records in order

            def finish() -> None:
                nonlocal best, pending
                arch, future = pending
                pending = None
                record = results[arch.hash()] = self._record(arch, future.result(), stage, generation)
                self.evaluated_now += self.dist.world
                if self.dist.world == 1:
                    self._append(record)
                best = max(best, record.map)
                bar.set_postfix(best_map=f"{best:.4f}")
                bar.update(self.dist.world)

            # Only inference overlaps a COCOeval: COCOeval holds the GIL for much of its time, and
            # the Python-bound rest (FLOPs tracing, file appends) would wait on it.
            for arch in mine:
                inferred = self.evaluator.infer(arch)  # while the previous subnet's COCOeval runs
                if pending:
                    finish()
                self._costs(arch)  # FLOPs and params counted (and cached)
                pending = (arch, self.evaluator.score(inferred))
            if pending:
                finish()
        if self.dist.world > 1:
            gathered: list[dict[str, SubnetRecord]] = [{}] * self.dist.world
            dist.all_gather_object(gathered, results)
            for arch in todo:  # in generation order, whoever evaluated it
                record = next(g[arch.hash()] for g in gathered if arch.hash() in g)
                self._append(record)
                results[arch.hash()] = record
        out = []
        for arch in archs:
            record = results.get(arch.hash())
            if record is None:  # from the cache; recorded under this stage and generation unless it already is
                record = replace(self.cache[arch.hash()], stage=stage, generation=generation)
                if (arch.hash(), stage, generation) in self.recorded:
                    self.history.append(record)
                else:
                    self._append(replace(record, timings={**record.timings, "seconds": 0.0}, cached=True))
            out.append(record)
        key = self.score_key
        return [{"map": r.map, "latency_ms": r.latency_ms, key: r.map if key == "map_smoothed" else r.score(key)} for r in out]  # smoothed after the generation

    def _costs(self, arch: Arch) -> dict:
        return {"latency_ms": round(self.table.predict(arch), 5), "flops": flops(arch, self.num_classes), "params": params(arch, self.num_classes)}

    def _record(self, arch: Arch, result: dict, stage: str, generation: int) -> SubnetRecord:
        costs = self._costs(arch)
        prior = self.config.flops_prior
        return SubnetRecord(arch.hash(), arch, {k: result[k] for k in METRICS}, **costs, stage=stage, generation=generation,
                            timings={k: round(result[k], 4) for k in TIMINGS},
                            map_flops=map_flops(result["map"], costs["flops"], prior) if prior else None)

    def _append(self, record: SubnetRecord) -> None:
        self.history.append(record)
        self.cache.setdefault(record.hash, record)
        self.recorded.add((record.hash, record.stage, record.generation))
        if self.dist.main:
            with open(self.out / "history.jsonl", "a") as f:
                f.write(json.dumps(record.to_dict()) + "\n")

    # ---- outputs --------------------------------------------------------------------------------
    def records(self) -> list[SubnetRecord]:
        """Every distinct subnet evaluated so far, one record each (with `map_smoothed` under `smooth`)."""
        records = list({r.hash: r for r in self.history}.values())
        if self.config.smooth:
            records = [replace(r, map_smoothed=self.smoothed.get(r.hash, r.map)) for r in records]
        return records

    def ranked(self) -> list[SubnetRecord]:
        """The records whose scores rank finalists (by `score_key`): after a fine-tune, only the
        modular stage's, the only ones measured on the final weights."""
        records = self.records()
        return [r for r in records if r.stage == "modular"] if self.finetuned else records

    def neighbours(self, arch: Arch, count: int, exclude: Sequence[str] = ()) -> list[Arch]:
        """Up to `count` distinct subnets a mutation away from `arch` (each choice changed with
        `mutation_prob`, at least one), keeping its input resolution and head type, from the
        sub-space the supernet trained, under the budgets, none hashed in `exclude`. Chosen at
        random, not by inherited score: what the pipeline's screening searches around once short
        trainings found `arch` best. Seeded by `seed` and `arch`."""
        c = self.config
        space = trained_space(self.model, self.blob)
        kept = {"resolution": arch.resolution, "head.type": arch.head.type}
        genes = [(name, (kept[name],) if name in kept else choices) for name, choices in stage_genes(space, RANDOM)]
        evolution = Evolution(genes, self.space.decode, lambda a: a.hash(), constraints=self.constraints(), population=count, topk=1,
                              mutation_prob=c.mutation_prob, seed=c.seed + int(arch.hash(), 16))
        return [i.item for i in evolution.mutants(space.encode(arch), count, exclude)]

    def inherited(self, archs: Sequence[Arch]) -> list[SubnetRecord]:
        """Records of `archs` scored with inherited weights as the search scores its own (from its
        records where it met them), kept out of its history: for subnets chosen by other means
        (`neighbours`), whose inherited scores are only reported."""
        known = {r.hash: r for r in self.records()}
        return [known.get(a.hash()) or self._record(a, self.evaluator(a), "screening", 0) for a in archs]

    def _write_outputs(self) -> dict:
        """pareto.json, finalists.json and pareto.png from every record so far; returns a summary."""
        records = self.records()
        c = self.config
        front = [records[i] for i in pareto_front([[r.map, r.latency_ms] for r in records], [True, False])]
        front.sort(key=lambda r: r.latency_ms)
        ranked = self.ranked()
        finalists = sorted(ranked, key=lambda r: (-r.score(self.score_key), r.latency_ms))[: c.finalists]
        summary = {
            "best": finalists[0].to_dict(timings=False) if finalists else None,
            "evaluated": len(records), "pareto_size": len(front), "latency_budget_ms": c.latency_budget, "device": self.table.meta.device_name,
            "out": str(self.out),
        }
        if self.dist.main and records:
            atomic_json([r.to_dict(timings=False) for r in front], self.out / "pareto.json")
            atomic_json([r.to_dict(timings=False) for r in finalists], self.out / "finalists.json")
            self._plot(records, front)
        return summary

    def _plot(self, records: list[SubnetRecord], front: list[SubnetRecord]) -> None:
        fig = figure(figsize=(6.5, 4.5), dpi=120)
        ax = fig.subplots()
        for stage, marker in zip((*STAGES, RANDOM), "osx"):
            pts = [r for r in records if r.stage == stage]
            if pts:
                ax.scatter([r.latency_ms for r in pts], [r.map for r in pts], s=14, alpha=0.6, marker=marker, label=f"{stage} ({len(pts)})")
        ax.plot([r.latency_ms for r in front], [r.map for r in front], "r-o", ms=4, lw=1.2, label="Pareto front")
        ax.axvline(self.config.latency_budget, color="k", ls="--", lw=1, label=f"budget {self.config.latency_budget:g} ms")
        ax.set(xlabel=f"predicted latency (ms), {self.table.meta.device_name}", ylabel="COCO mAP (inherited weights)",
               title="evaluated subnets")
        ax.xaxis.label.set_fontsize(8)
        ax.legend(fontsize=8)
        fig.tight_layout()
        atomic_save_figure(fig, self.out / "pareto.png")


def _is_json(line: str) -> bool:
    try:
        json.loads(line)
        return True
    except json.JSONDecodeError:
        return False

