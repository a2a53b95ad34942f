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
