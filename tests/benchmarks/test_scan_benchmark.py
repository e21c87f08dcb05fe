"""The scan benchmark script still runs end to end (tiny shapes; timings are not checked, only that it works)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mambaseg.ops._numba import numba_available

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_scan_benchmark_quick_run_writes_report(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "scan.py"), "--quick", "--reps", "1",
                           "--max-wait", "0", "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads((tmp_path / "scan.json").read_text())
    assert data["self_check"]["loop"] < 1e-4 and data["self_check"]["chunked"] < 1e-4
    rated = {"chunked"} | ({"numba"} if numba_available() else set())
    assert all({"loop"} | rated <= set(row["contenders"]) for row in data["rows"])
    assert all("bar" in row["contenders"][name] for row in data["rows"] for name in rated)
    assert "## Machine" in (tmp_path / "scan.md").read_text()
