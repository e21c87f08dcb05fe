"""The 3D model efficiency benchmark still runs end to end (a tiny model at two tiny sizes; timings not checked)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_models3d_benchmark_writes_report_with_growth(tmp_path):
    sizes = "1x1x16x16x16,2x1x16x16x16"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "models3d.py"), "--models", "segmamba_test",
                           "--sizes", sizes, "--reps", "1", "--devices", "cpu", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = json.loads((tmp_path / "models3d.json").read_text())["runs"][0]
    assert run["device"] == "cpu"
    small, large = (run["rows"][0]["results"][s] for s in sizes.split(","))
    for row in (small, large):
        assert row["params"] > 0 and row["gflops"] > 0 and 0 < row["scan_share"] < 1
        assert row["train_ms"]["min"] > 0 and row["fwd_ms"]["min"] > 0
    assert large["gflops"] == pytest.approx(2 * small["gflops"], rel=1e-6)  # batch 2: exactly twice the work
    (growth,) = run["growth"]
    assert growth["voxel_ratio"] == 2 and growth["gflops_ratio"] == pytest.approx(2, rel=1e-6)
    assert growth["train_ratio"] == pytest.approx(large["train_ms"]["min"] / small["train_ms"]["min"])
    report = (tmp_path / "models3d.md").read_text()
    assert "| segmamba_test |" in report and "growth from the smallest to the largest input" in report


def test_reuse_keeps_only_successful_results(tmp_path, monkeypatch):
    import importlib.util

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # the script imports its sibling _common
    spec = importlib.util.spec_from_file_location("models3d_under_test", ROOT / "benchmarks" / "models3d.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ok, failed = {"train_ms": {"min": 1.0}}, {"error": "timed out after 600 s"}
    earlier = {"date": "2026-11-23T17:00:00", "runs": [{"device": "cpu", "rows": [
        {"model": "segmamba", "results": {"1x1x64x64x64": ok, "1x1x96x96x96": failed}}]}]}
    path = tmp_path / "models3d.json"
    path.write_text(json.dumps(earlier))
    kept = mod._earlier_results(str(path))
    assert set(kept) == {("cpu", "segmamba", "1x1x64x64x64")}  # the failed case is measured again
    assert kept[("cpu", "segmamba", "1x1x64x64x64")]["reused"].startswith(str(path))
    assert mod._earlier_results(None) == {}
