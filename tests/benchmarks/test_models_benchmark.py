"""The model efficiency benchmark still runs end to end (a tiny model and input; timings are not checked)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_models_benchmark_writes_report(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "models.py"), "--models", "mamba_unet_test",
                           "--sizes", "1x1x32x32", "--reps", "1", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = json.loads((tmp_path / "models.json").read_text())["rows"][0]["results"]["1x1x32x32"]
    assert row["params"] > 0 and row["gflops"] > 0 and 0 < row["scan_share"] < 1
    assert row["train_ms"]["min"] > 0 and row["fwd_ms"]["min"] > 0
    assert "| mamba_unet_test |" in (tmp_path / "models.md").read_text()
