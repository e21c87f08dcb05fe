"""The layout benchmark still runs end to end at 512x shorter sequences (timings not checked, only recorded)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_layout_benchmark_times_both_variants_of_every_case(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "layout.py"), "--quick", "--reps", "1",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads((tmp_path / "layout.json").read_text())
    assert record["quick"] and record["machine"]["git_commit"] and record["allocator"]
    cases = [row["case"] for row in record["rows"]]
    assert len(cases) == 7 and sum("forward+backward" in c for c in cases) == 2
    for row in record["rows"]:
        assert row["whole"]["min_ms"] > 0 and row["slabs"]["min_ms"] > 0
        assert row["speedup"] == pytest.approx(row["whole"]["min_ms"] / row["slabs"]["min_ms"])
    report = (tmp_path / "layout.md").read_text()
    assert report.count("\n| ") == 1 + 7 and "MINIMUM (MEDIAN)" in report  # header and seven cases
