import importlib.util
import json
from pathlib import Path

import pytest
from common import write_space

spec = importlib.util.spec_from_file_location("latency_table", Path(__file__).parents[1] / "benchmarks" / "latency_table.py")
latency_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(latency_table)


@pytest.mark.slow
def test_latency_benchmark_reports_build_validation_and_each_correction_model(tmp_path, capsys):
    out = tmp_path / "result.json"
    latency_table.main(["--space", write_space(tmp_path / "micro.json"), "--num-classes", "3", "--threads", "1", "--calib", "6",
                        "--samples", "6", "--passes", "1", "--warmup", "0", "--repeats", "2", "--lut-dir", str(tmp_path), "--out", str(out)])
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["build"]["entries"] > 0 and line["validation"]["n"] == 6 and "points" not in line
    assert (tmp_path / "cpu_micro_fp32_bs1.json").is_file() and (tmp_path / "cpu_micro_fp32_bs1.validation.png").is_file()
    models = line["correction_models"]
    assert set(models) <= {"none", "affine", "per_op"} and {"none", "affine"} <= set(models)
    # recomputed from the points, whose times are rounded to 0.1 us: equal up to the last digit kept (0.01)
    assert models["none"]["validation_mape"] == pytest.approx(line["validation"]["mape_uncorrected"], abs=0.011)
    kept = line["build"]["correction"]
    if kept["kept"]:  # the model the build kept is the one the validation's own error was measured with
        name = "per_op" if kept["per_op_ms"] != 0 else "affine"
        assert models[name]["validation_mape"] == pytest.approx(line["validation"]["mape"], abs=0.011)
    written = json.loads(out.read_text())
    assert len(written["points"]) == 6 and all("arch" in p for p in written["points"])


@pytest.mark.slow
def test_latency_benchmark_in_onnxruntime_compares_the_runtime_with_eager(tmp_path, capsys):
    space = {"resolutions": [64], "neck": {"types": ["fpn"], "widths": [8], "repeats": [1]},
             "backbone": {"stem_widths": [8], "stages": [{"depths": [1], "widths": [8], "blocks": ["basic", "ir_k3_e6"]}] * 4},
             "head": {"types": ["fcos"], "widths": [8], "num_convs": [1]}}
    latency_table.main(["--space", write_space(tmp_path / "small.json", space), "--num-classes", "3", "--threads", "1", "--calib", "2",
                        "--samples", "4", "--passes", "1", "--warmup", "0", "--repeats", "2", "--lut-dir", str(tmp_path),
                        "--backend", "onnxruntime"])
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (tmp_path / "cpu_small_fp32_bs1_onnxruntime.json").is_file()
    assert line["build"]["environment"]["runtime"]["backend"] == "onnxruntime" and line["validation"]["n"] == 4
    versus = line["versus_eager"]
    assert len(versus["eager_ms"]) == 4 and -1 <= versus["kendall_tau"] <= 1 and versus["speedup_median"] > 0
    assert isinstance(versus["same_fastest"], bool)


fusion_spec = importlib.util.spec_from_file_location("fusion_onnxruntime", Path(__file__).parents[1] / "benchmarks" / "fusion_onnxruntime.py")
fusion = importlib.util.module_from_spec(fusion_spec)
fusion_spec.loader.exec_module(fusion)


def test_fusion_benchmark_attributes_every_part_of_the_graph_and_times_each_op_alone(tmp_path, capsys):
    out = tmp_path / "fusion.json"
    fusion.main(["--space", write_space(tmp_path / "micro.json"), "--archs", "2", "--runs", "2", "--warmup", "1", "--threads", "1",
                 "--out", str(out)])
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["archs"] == 2 and "points" not in line
    for point in json.loads(out.read_text())["points"]:
        # the exporter names nodes by module: every part of the detector gets kernel time in the
        # whole graph, as each of its ops does alone
        assert all(point["in_graph_ms"][p] > 0 for p in fusion.PARTS) and all(point["alone_ms"][p] > 0 for p in fusion.PARTS)
        assert point["wall_ms"]["whole"] > 0 and point["wall_ms"]["sum_of_ops"] > 0
    assert 0 < line["summary"]["kernels_in_graph_over_alone"]["median"] < 10
