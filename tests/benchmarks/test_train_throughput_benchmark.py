"""The training-throughput benchmark runs end to end on CPU with tiny models (the numbers are not checked): one row
per scan backend for a Mamba model, one row for a model without a scan, and a report."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_train_throughput_rows_per_backend_and_report(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "train_throughput.py"), "--device", "cpu",
                           "--models", "mamba_unet_test,unet_test", "--backends", "chunked,reference",
                           "--batch", "2", "--size", "32", "--warmup", "1", "--steps", "1", "--repeats", "2",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads((tmp_path / "train_throughput_cpu.json").read_text())
    assert [(r["model"], r["backend"], r["uses_scan"]) for r in data["rows"]] == [
        ("mamba_unet_test", "chunked", True), ("mamba_unet_test", "reference", True), ("unet_test", "chunked", False)]
    for row in data["rows"]:
        assert len(row["images_per_s"]["all"]) == 2 and row["images_per_s"]["best"] > 0 and row["params"] > 0
    assert data["settings"]["amp"] == "none" and data["machine"]["git_commit"]
    report = (tmp_path / "train_throughput_cpu.md").read_text()
    assert "| mamba_unet_test | reference |" in report and "| unet_test | (no scan) |" in report
