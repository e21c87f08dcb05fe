"""The Triton settings sweep: its quick mode runs end to end under Triton's CPU interpreter (timings meaningless,
correctness checks real), and the merge of another run's mamba_ssm timings gives the bar it should."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_quick_sweep_checks_every_setting_against_chunked(tmp_path):
    pytest.importorskip("triton", reason="the sweep needs the triton package")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "triton_tune.py"), "--quick", "--out",
                           str(tmp_path)], env={**os.environ, "TRITON_INTERPRET": "1"}, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads((tmp_path / "triton_tune_cpu_interpreter.json").read_text())
    assert len(data["shapes"]) == 2
    for shape in data["shapes"]:
        kinds = {c["options"]["forward"] for c in shape["forward"]}
        assert kinds == {"two_pass", "single_pass"}
        for case in shape["forward"] + shape["fwdbwd"]:
            assert case["ms"] > 0 and case["max_error_vs_chunked"] < 1e-4, case
        assert shape["best_forward"]["forward"] in kinds
        assert {c["options"].get("backward", "chunk_parallel") for c in shape["fwdbwd"]} == {"chunk_parallel",
                                                                                             "single_pass"}
    assert [tuple(r["shape"]) for r in data["bar"]] == [tuple(s["shape"]) for s in data["shapes"]]
    assert "## Bar" in (tmp_path / "triton_tune_cpu_interpreter.md").read_text()


def test_other_runs_mamba_ssm_timings_are_merged_with_their_provenance(tmp_path, load_benchmark):
    mod = load_benchmark("triton_tune")
    shape = [1, 768, 4096, 16, 4]
    triton = {"options": {"forward": "single_pass"}, "ms": 0.1, "max_error_vs_chunked": 1e-6}
    mine = {"command": "python benchmarks/triton_tune.py", "date": "d2", "gpu": "GPU", "versions": {}, "reps": 10,
            "rounds": 5, "copy_bytes_per_s": 4e12, "shapes": [
        {"shape": shape, "forward": [triton], "fwdbwd": [{**triton, "ms": 2.0}],
         "others": {"chunked": {"fwd_ms": 5.0, "fwdbwd_ms": 20.0}}}]}
    theirs = {"date": "d1", "shapes": [{"shape": shape, "others": {
        "chunked": {"fwd_ms": 5.0, "fwdbwd_ms": 20.2}, "mamba_ssm": {"fwd_ms": 0.1, "fwdbwd_ms": 1.0}}}]}
    path = tmp_path / "run1.json"
    path.write_text(json.dumps(theirs))
    mod.merge_others(mine, path)
    assert mine["others_from"]["chunked_max_deviation"] == pytest.approx(0.2 / 20.2)
    (row,) = mine["bar"]
    assert row["triton_over_mamba_ssm"] == pytest.approx(2.0) and row["speedup_vs_chunked"] == pytest.approx(10)
    floor = mod.hbm_floor_ms(tuple(shape), 4e12)[0]
    assert row["fwd_fraction_of_hbm_floor"] == pytest.approx(floor / 0.1)
    assert row["bar"] == "FAIL (HBM fraction, vs mamba_ssm)"  # 10x chunked passes; 2x mamba_ssm and 10 % do not
    text = mod.report(mine)
    assert str(path) in text and "agrees within 1.0 %" in text
    assert "| 2.00 | FAIL (HBM fraction, vs mamba_ssm) |" in text
