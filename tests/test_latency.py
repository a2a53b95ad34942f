import itertools
import json
import random

import pytest
import torch

from latency import Correction, LatencyTable, OpContext, Settings, TableError, arch_ops, build_table, space_ops
from latency.__main__ import main
from latency.cost import count_flops, flops, params
from latency.ops import Op, detector, detector_runner, op_runner, reference_runner
from latency.validate import validate_table
from supernet import Arch, SearchSpace
from supernet.supernet import Detector


def micro_space() -> SearchSpace:
    return SearchSpace.from_dict({
        "resolutions": [64, 96],
        "backbone": {
            "stem_widths": [8, 16],
            "stages": [
                {"depths": [1, 2], "widths": [8], "blocks": ["basic", "ir_k3_e3_se"]},
                {"depths": [1], "widths": [8, 16], "blocks": ["bottleneck"]},
                {"depths": [1, 2], "widths": [16], "blocks": ["ir_k5_e6"]},
                {"depths": [1], "widths": [16, 24], "blocks": ["basic"]},
            ],
        },
        "neck": {"types": ["fpn", "bifpn"], "widths": [8, 16], "repeats": [1, 2]},
        "head": {"types": ["fcos", "retinanet", "two_stage"], "widths": [8], "num_convs": [1, 2]},
    })


def all_archs(space):
    names, choices = zip(*((g.name, g.choices) for g in space.genes()))
    archs = {}
    for values in itertools.product(*choices):
        arch = space.decode(dict(zip(names, values)))
        archs[arch.hash()] = arch
    return list(archs.values())


class CountingTimer:
    """No timing: each measurement returns the next number of a fixed sequence, and is counted."""

    def __init__(self, fail_after=None):
        self.calls, self.fail_after = 0, fail_after

    def __call__(self, fn):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt
        return 1.0 + (self.calls * 7919 % 101) / 100


FAST = Settings(warmup=0, repeats=1)


@pytest.fixture(scope="module")
def micro_table(tmp_path_factory):
    out = tmp_path_factory.mktemp("lut") / "micro.json"
    return build_table(micro_space(), FAST, out, num_classes=3, passes=2, calib_archs=6, timer=CountingTimer(), progress=False)


def test_space_ops_are_exactly_the_ops_archs_use():
    space = micro_space()
    used = {op.key for arch in all_archs(space) for op in arch_ops(arch)}
    assert used == set(space_ops(space))


@pytest.mark.parametrize("name", ["tiny", "coco"])
def test_every_sampled_arch_decomposes_into_table_ops(name):
    space = SearchSpace.preset(name)
    ops = space_ops(space)
    rng = random.Random(0)
    for _ in range(300):
        arch = space.sample(rng)
        assert all(op.key in ops for op in arch_ops(arch))
    assert len(ops) == len({op.key for op in ops.values()})


def test_ops_see_the_shapes_the_detector_runs():
    """Forward hooks on a real detector: each block, the stem, the neck and the head get the
    inputs the ops say (so the table times what the detector runs)."""
    space = SearchSpace.preset("tiny")
    for arch in (space.sample(random.Random(i)) for i in range(4)):
        det = detector(arch, OpContext(num_classes=3)).eval()
        seen = []
        det.backbone.stem.register_forward_hook(lambda m, i, o: seen.append(("stem", tuple(i[0].shape))))
        for stage in det.backbone.stages:
            for position in stage:
                for block in position.values():
                    block.register_forward_hook(lambda m, i, o: seen.append(("block", tuple(i[0].shape))))
        for neck in det.neck.values():
            neck.register_forward_hook(lambda m, i, o: seen.append(("neck", tuple(tuple(f.shape) for f in i[0]))))
        with torch.no_grad():
            det(torch.rand(1, 3, arch.resolution, arch.resolution))
        ops = [op for op in arch_ops(arch) if op.kind in ("stem", "block", "neck")]
        expected = []
        for op in ops:
            if op.kind == "stem":
                expected.append(("stem", (1, 3, op["res"], op["res"])))
            elif op.kind == "block":
                expected.append(("block", (1, op["cin"], op["size"], op["size"])))
        got_neck = seen.pop()
        assert seen == expected
        neck_op = ops[-1]
        assert [s[1] for s in got_neck[1]] == list(neck_op["cin"])


def test_library_flops_and_params_are_those_of_the_extracted_detector():
    """The library sums cached per-op counts; counting the whole extracted standalone model
    gives the same: the ops cover the whole network, nothing twice."""
    from supernet import Supernet

    space = SearchSpace.preset("tiny")
    supernet = Supernet(space, 3, post=OpContext().post).eval()
    rng = random.Random(1)
    archs = [a for a in (space.sample(rng) for _ in range(40)) if a.head.type != "two_stage"][:4]
    archs.append(space.smallest())
    for arch in archs:  # (two-stage FLOPs depend on how many proposals survive NMS, so only one-stage ones)
        det = supernet.extract(arch)
        x = torch.rand(1, 3, arch.resolution, arch.resolution)
        assert count_flops(det, x) == flops(arch, num_classes=3) > 0
        assert params(arch, 3) == sum(p.numel() for p in det.parameters())
    two_stage = space.largest()
    assert params(two_stage, 3) == sum(p.numel() for p in detector(two_stage, OpContext(num_classes=3)).parameters())
    assert flops(two_stage, 3) > flops(space.smallest(), 3)


def test_prediction_is_the_sum_of_entries_plus_the_correction(micro_table):
    table = micro_table
    assert table.correction is not None
    for arch in all_archs(micro_space())[::7]:
        ops = arch_ops(arch)
        raw = sum(table.entries[op.key] for op in ops)
        assert table.raw(arch) == pytest.approx(raw)
        assert table.predict(arch) == pytest.approx(table.correction(raw, len(ops)))
        assert sum(table.breakdown(arch).values()) == pytest.approx(raw)
    assert set(table.entries) == set(space_ops(micro_space()))


def test_table_round_trips_and_refuses_other_settings(micro_table, tmp_path):
    path = tmp_path / "t.json"
    micro_table.save(path)
    table = LatencyTable.load(path, FAST)
    arch = micro_space().sample(0)
    assert table.predict(arch) == pytest.approx(micro_table.predict(arch))
    assert table.meta.settings.batch_size == 1 and table.meta.context.num_classes == 3
    for other, word in ((Settings(batch_size=8), "`batch_size` 1"), (Settings(dtype="bf16"), "`dtype` fp32"), (Settings(channels_last=True), "`channels_last`")):
        with pytest.raises(TableError, match=word):
            LatencyTable.load(path, other)
        LatencyTable.load(path, other, force=True)
    data = json.loads(path.read_text())
    assert data["meta"]["settings"]["statistic"] == "p10"
    del data["meta"]["settings"]["statistic"]  # a table from before the statistic was recorded: the median's
    path.write_text(json.dumps(data))
    assert LatencyTable.load(path).settings.statistic == "median"
    data["meta"]["environment"]["device_name"] = "NVIDIA H100 80GB HBM3"
    path.write_text(json.dumps(data))
    with pytest.raises(TableError, match="built on cpu .NVIDIA H100"):
        LatencyTable.load(path, FAST)


def test_missing_op_and_bad_files_are_clear_errors(micro_table, tmp_path):
    space = SearchSpace.preset("tiny")
    with pytest.raises(TableError, match=r"no entry for op io\(res=128\); the table was built for another search space"):
        micro_table.predict(space.largest())
    with pytest.raises(TableError, match="not found"):
        LatencyTable.load(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(TableError, match="bad.json: not a latency table"):
        LatencyTable.load(bad)


def test_interrupted_build_resumes_without_remeasuring(tmp_path, monkeypatch):
    import latency.table as table_module

    monkeypatch.setattr(table_module, "CHECKPOINT_SECONDS", 0.0)  # checkpoint after every measurement
    # (fixed passes: this timer's values depend on the call count, so extra passes would differ
    # between an uninterrupted and a resumed build; test_measure covers resuming those)
    space, out = micro_space(), tmp_path / "lut.json"
    full = CountingTimer()
    reference = build_table(space, FAST, tmp_path / "ref.json", 3, passes=2, calib_archs=4, timer=full, progress=False, extra_passes=0)
    with pytest.raises(KeyboardInterrupt):
        build_table(space, FAST, out, 3, passes=2, calib_archs=4, timer=CountingTimer(fail_after=150), progress=False,
                    extra_passes=0)
    assert not out.exists() and (tmp_path / "lut.json.partial").exists()
    rest = CountingTimer()
    table = build_table(space, FAST, out, 3, passes=2, calib_archs=4, timer=rest, progress=False, extra_passes=0)
    assert rest.calls == full.calls - 150  # nothing measured twice (the noise check, 5 calls, ran before the stop)
    assert set(table.entries) == set(reference.entries) and not (tmp_path / "lut.json.partial").exists()


@pytest.mark.parametrize("per_op_loo, chosen", [(9.5, "affine"), (8.5, "per_op"), (30.0, "affine")])
def test_the_per_op_model_must_win_by_a_margin(monkeypatch, per_op_loo, chosen):
    """Against the affine model's 10 % leave-one-out error, 9.5 % is not enough for a third
    term (chance, on 20 noisy timings); 8.5 % is."""
    models = {"affine": Correction(1.1, 0.5, 20.0, 10.0, True), "per_op": Correction(1.0, 0.2, 20.0, per_op_loo, per_op_loo < 20, -0.01)}
    monkeypatch.setattr(Correction, "models", classmethod(lambda cls, *a, **k: models))
    assert Correction.fit([1.0] * 5, [1.0] * 5, [1, 2, 3, 4, 5]) is models[chosen]


def test_calibration_subnets_are_timed_among_the_ops(tmp_path):
    """In the same shuffled passes, not after them: a slow spell of the machine then hits op
    entries and calibration subnets alike instead of skewing the correction."""
    kinds = []

    def timer(fn):
        kinds.append(isinstance(fn.module, Detector))
        return 1.0

    table = build_table(micro_space(), FAST, tmp_path / "t.json", 3, passes=1, calib_archs=6, timer=timer, progress=False, extra_passes=0)
    subnets = [i for i, is_detector in enumerate(kinds[5:]) if is_detector]  # (the first 5: the noise check)
    assert len(subnets) == 6 and len(kinds) == 5 + len(table.entries) + 6
    assert max(subnets) - min(subnets) > len(table.entries) // 3  # spread over the pass, not one block at its end


def test_correction_is_kept_only_when_it_helps():
    rng = random.Random(0)
    raw = [rng.uniform(5, 50) for _ in range(20)]
    affine = [1.3 * x + 2.0 for x in raw]
    fitted = Correction.fit(raw, affine)
    assert fitted.kept and fitted.slope == pytest.approx(1.3) and fitted.intercept == pytest.approx(2.0)
    assert fitted.loo_mape < 1e-6 < fitted.loo_mape_raw
    noisy = [x * rng.uniform(0.9, 1.1) for x in raw]  # unbiased noise: nothing to correct
    assert not Correction.fit(raw, noisy).kept and Correction.fit(raw, noisy)(10.0) == 10.0


def test_per_op_term_is_fitted_when_op_counts_explain_the_error():
    """Launch-bound timings: each op timed alone pays a fixed 0.05 ms a whole forward does not.
    The affine model cannot follow that (op counts vary independently of the sum); the per-op
    model recovers it, and is chosen because its leave-one-out error is lower."""
    rng = random.Random(1)
    raw = [rng.uniform(2, 6) for _ in range(20)]
    num_ops = [rng.randint(20, 60) for _ in raw]
    measured = [1.1 * x - 0.05 * n + 0.4 for x, n in zip(raw, num_ops)]
    affine_only = Correction.fit(raw, measured)
    fitted = Correction.fit(raw, measured, num_ops)
    assert fitted.kept and fitted.per_op == pytest.approx(-0.05) and fitted.slope == pytest.approx(1.1)
    assert fitted.loo_mape < 1e-6 < affine_only.loo_mape and affine_only.per_op == 0.0
    assert fitted(4.0, 30) == pytest.approx(1.1 * 4.0 - 1.5 + 0.4)
    assert fitted.op_ms(1.0) == pytest.approx(1.05) and fitted.op_ms(0.0) == pytest.approx(-0.05)
    affine = [1.3 * x + 2.0 for x in raw]  # per-op term not needed: fitted to ~0 whichever model wins
    assert Correction.fit(raw, affine, num_ops).per_op == pytest.approx(0.0, abs=1e-9)


def test_every_pass_times_the_same_model_on_the_same_input():
    """Weights and inputs are fixed by the op's key (a post op's work depends on the values it
    decodes and suppresses), and building a runner leaves the caller's RNG where it was."""
    ops = space_ops(micro_space())
    post = next(op for key, op in ops.items() if key.startswith("post("))
    block = next(op for key, op in ops.items() if key.startswith("block("))
    ctx = OpContext(num_classes=3)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    with torch.no_grad():
        for op in (post, block):
            a, b = op_runner(op, ctx, FAST), op_runner(op, ctx, FAST)
            assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
            out_a, out_b = a(), b()
            if op is post:
                assert torch.equal(out_a[0]["boxes"], out_b[0]["boxes"]) and len(out_a[0]["boxes"]) > 0
            else:
                assert torch.equal(out_a, out_b)
    assert torch.equal(torch.get_rng_state(), state)


def test_bf16_tables_build_and_detectors_decode_in_float32(tmp_path):
    """torchvision's NMS (CPU) and RoIAlign (CPU and CUDA) have no bf16 kernels: post-processing
    decodes and suppresses in float32 and the two-stage head pools bf16 features in float32, so a
    bf16 table builds with every head type (warm-up 1: each op really runs once)."""
    bf16 = Settings(dtype="bf16", warmup=1, repeats=1)
    table = build_table(micro_space(), bf16, tmp_path / "bf16.json", 3, passes=1, calib_archs=3, timer=CountingTimer(),
                        progress=False, extra_passes=0)
    assert set(table.entries) == set(space_ops(micro_space())) and table.settings.dtype == "bf16"
    for head in ("fcos", "retinanet", "two_stage"):
        arch = next(a for a in all_archs(micro_space()) if a.head.type == head)
        with torch.no_grad():
            out = detector_runner(arch, OpContext(num_classes=3), bf16)()
        assert out[0]["boxes"].dtype == torch.float32 and len(out[0]["boxes"]) > 0 and torch.isfinite(out[0]["boxes"]).all()


class ConstTimer:
    def __init__(self, ms):
        self.ms = ms

    def __call__(self, fn):
        return self.ms


def test_validation_times_the_builds_reference_again_and_reports_the_machines_drift(tmp_path):
    """The table stores its reference arch, and with the same seed the same weights and input
    are drawn; timings 30 % slower than at build time show as 1.3x before and after, next to the
    errors they cause. A table without the stored arch is not compared (its seed may have drawn
    another arch when it was built)."""
    space, ctx = micro_space(), OpContext(num_classes=3)
    a, b = (reference_runner(space.sample(5), ctx, FAST, 5) for _ in range(2))
    with torch.no_grad():
        out_a, out_b = a(), b()
    assert all(torch.equal(x["boxes"], y["boxes"]) and torch.equal(x["scores"], y["scores"]) for x, y in zip(out_a, out_b))
    table = build_table(space, FAST, tmp_path / "t.json", 3, passes=1, calib_archs=0, timer=ConstTimer(1.0), progress=False, extra_passes=0)
    assert Arch.from_dict(table.meta.noise["arch"]) == space.sample(table.meta.seed)
    result = validate_table(table, samples=3, passes=1, timer=ConstTimer(1.3), progress=False, extra_passes=0)
    assert result["reference_time_vs_build"] == {"before": 1.3, "after": 1.3}
    del table.meta.noise["arch"]
    assert validate_table(table, samples=3, passes=1, timer=ConstTimer(1.3), progress=False, extra_passes=0)["reference_time_vs_build"] is None


def test_build_and_validate_cli_on_cpu(tmp_path, capsys):
    space_file = tmp_path / "space.json"
    space_file.write_text(micro_space().to_json())
    lut = tmp_path / "cpu.json"
    args = ["--warmup", "1", "--repeats", "3", "--passes", "1"]
    assert main(["build", "--space", str(space_file), "--num-classes", "3", "--calib", "4", "--threads", "1", "--out", str(lut), *args]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["entries"] == len(space_ops(micro_space())) and summary["correction"] is not None
    ops = summary["pass_summary"]["ops"]
    assert ops["entries"] == summary["entries"] and 0 <= ops["unconfirmed"] <= ops["extra_passes"] <= ops["entries"]
    table = LatencyTable.load(lut)
    assert all(v > 0 for v in table.entries.values()) and table.meta.environment["threads"] == 1
    assert main(["validate", "--lut", str(lut), "--samples", "4", *args]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(line) == {"n", "mape", "max_ape", "kendall_tau", "spearman", "device"} and line["n"] == 4
    assert (tmp_path / "cpu.validation.png").stat().st_size > 1000
    written = json.loads((tmp_path / "cpu.validation.json").read_text())
    assert len(written["points"]) == 4 and set(written["reference_time_vs_build"]) == {"before", "after"}
    assert all(r > 0 for r in written["reference_time_vs_build"].values())


@pytest.mark.parametrize("argv, message", [
    (["validate", "--lut", "nowhere.json"], "nowhere.json: latency table not found"),
    (["build", "--space", "huge", "--out", "x.json"], "huge"),
    (["build", "--dtype", "fp16", "--out", "x.json"], "--dtype fp16"),
    (["build", "--num-classes", "0", "--out", "x.json"], "--num-classes"),
    (["build", "--extra-passes", "-1", "--out", "x.json"], "--extra-passes: expected an integer in [0, inf], got -1"),
    (["validate", "--lut", "x.json", "--passes", "0"], "--passes: expected an integer in [1, inf], got 0"),
])
def test_cli_errors_are_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err


def test_op_key_is_readable():
    op = Op("block", (("type", "basic"), ("cin", 8), ("cout", 16), ("stride", 2), ("size", 32)))
    assert op.key == "block(type=basic,cin=8,cout=16,stride=2,size=32)" and op["cin"] == 8


@pytest.mark.parametrize("per_op, flips", [(None, False), (-0.6, True), (3.0, False)])
def test_extremes_are_exact(micro_table, per_op, flips):
    """Exact over every arch of the space, also when a per-op term reorders archs: a deeper stage
    is one op more, so with its later blocks' entries set below a negative term's size, the
    deeper arch is faster by the prediction and slower by the plain sum."""
    table = micro_table
    if per_op is not None:
        entries = {k: 0.3 if k.startswith("block(") and "stride=1" in k else v for k, v in micro_table.entries.items()}
        table = LatencyTable(entries, micro_table.meta, Correction(1.0, 2.0, 10.0, 5.0, True, per_op))
    archs = all_archs(micro_space())
    predicted = [table.predict(a) for a in archs]
    fastest, ms = table.extreme(fastest=True)
    slowest, ms_max = table.extreme(fastest=False)
    assert ms == pytest.approx(min(predicted)) and ms_max == pytest.approx(max(predicted))
    assert ms == table.predict(fastest) < ms_max == table.predict(slowest)
    if flips:  # the plain sum's fastest is not the prediction's: the term mattered
        by_raw = min(archs, key=table.raw)
        assert table.predict(by_raw) > ms + 0.1 and sum(s.depth for s in by_raw.backbone.stages) < sum(s.depth for s in fastest.backbone.stages)


def test_the_post_op_gets_exactly_the_candidates_of_the_detector_timed_end_to_end():
    """Post-processing costs what its candidates make it cost (NMS above all): the table's post op
    and the untrained detectors a build and a validation time end to end must feed it the same."""
    from latency.ops import post_op
    from supernet.supernet import _features
    from supernet.transform import letterbox

    space = micro_space()
    rng = random.Random(0)
    settings = Settings(device="cpu", threads=1)
    for head in ("fcos", "retinanet", "two_stage"):
        arch = next(a for a in (space.sample(rng) for _ in range(200)) if a.head.type == head and a.head.width == 8)
        ctx = OpContext(num_classes=3)
        timed = detector_runner(arch, ctx, settings)
        model, (x,) = timed.module, timed.inputs
        images = letterbox(list(x), arch.resolution)[0]
        with torch.no_grad():
            features = _features(model, images.tensors, arch)
            raw = model.head[head].raw_outputs(features, images, arch.head)
        assert all(float(f.abs().max()) == 0.0 for f in features)  # the mean colour normalises to zero
        post = op_runner(post_op(arch.head, arch.resolution), ctx, settings)
        fed = post.inputs[1:]
        flat = [t for t in torch.utils._pytree.tree_leaves(raw) if isinstance(t, torch.Tensor)]
        assert len(fed) == len(flat), head
        if head == "two_stage":  # the proposals are the same; the RoI stage's outputs are its FC layers' biases, the
            # same for every RoI on both sides but not between the post op's narrow FCs and the detector's own
            assert all(torch.equal(a, b) for a, b in zip(fed[:2], flat[:2]))
            assert all(bool((t == t[:1]).all()) for t in (*fed[2:], *flat[2:]))
            continue
        assert all(torch.equal(a, b) for a, b in zip(fed, flat)), head
        with torch.no_grad():
            alone, whole = post(), timed()
        assert torch.equal(alone[0]["boxes"], whole[0]["boxes"]) and torch.equal(alone[0]["scores"], whole[0]["scores"]), head
