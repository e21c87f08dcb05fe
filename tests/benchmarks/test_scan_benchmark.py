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
                           "--rounds", "2", "--max-wait", "0", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads((tmp_path / "scan.json").read_text())
    assert data["self_check"]["loop"] < 1e-4 and data["self_check"]["chunked"] < 1e-4
    rated = {"chunked"} | ({"numba"} if numba_available() else set())
    assert all({"loop"} | rated <= set(row["contenders"]) for row in data["rows"])
    assert all("bar" in row["contenders"][name] for row in data["rows"] for name in rated)
    for case in (c for row in data["rows"] for c in row["contenders"].values()):  # 2 rounds of 1 repetition
        assert len(case["fwdbwd_ms"]["all"]) == 2 and case["fwdbwd_ms"]["min"] == min(case["fwdbwd_ms"]["all"])
    assert "## Machine" in (tmp_path / "scan.md").read_text()


def test_gpu_bar_table_rates_triton_against_hbm_floor_chunked_and_mamba_ssm(load_benchmark):
    """Issue #7's verdicts from synthetic timings: 1 TB/s copy bandwidth makes the SS2D shape's forward HBM floor
    4 (3 * 768 * 4096 + 2 * 4 * 16 * 4096) B / 1e12 B/s = 0.0398 ms."""
    mod = load_benchmark("scan")
    t = lambda ms: {"min": ms, "median": ms, "all": [ms]}
    ss2d, small = [1, 768, 4096, 16, 4], [1, 192, 1024, 16, 1]
    floor = 4 * (3 * 768 * 4096 + 2 * 4 * 16 * 4096) / 1e12 * 1e3
    assert mod.hbm_floor_ms(ss2d, 1e12)[0] == pytest.approx(floor)
    rows = [{"index": 3, "shape": ss2d, "contenders": {  # 80 % of the floor, 6x chunked, 1.1x mamba_ssm: pass
                "triton": {"fwd_ms": t(floor / 0.8), "fwdbwd_ms": t(1.0)}, "chunked": {"fwdbwd_ms": t(6.0)},
                "mamba_ssm": {"fwdbwd_ms": t(1.0 / 1.1)}}},
            {"index": 1, "shape": small, "contenders": {  # no HBM check at this shape; 4x chunked fails
                "triton": {"fwd_ms": t(1.0), "fwdbwd_ms": t(1.0)}, "chunked": {"fwdbwd_ms": t(4.0)}}},
            {"index": 2, "shape": [4, 96, 4096, 16, 1], "contenders": {  # 40 % of the floor and 1.5x mamba_ssm
                "triton": {"fwd_ms": t(mod.hbm_floor_ms([4, 96, 4096, 16, 1], 1e12)[0] / 0.4), "fwdbwd_ms": t(1.5)},
                "chunked": {"fwdbwd_ms": t(10.0)}, "mamba_ssm": {"fwdbwd_ms": t(1.0)}}},
            {"index": 0, "shape": small, "contenders": {"chunked": {"fwdbwd_ms": t(1.0)}}}]  # no triton: no row
    table = mod.gpu_bar_table(rows, {"copy_bytes_per_s": 1e12})
    assert [r.get("gpu_bar") for r in rows] == ["PASS", "FAIL (speed vs chunked)",
                                                "FAIL (HBM fraction, vs mamba_ssm)", None]
    assert "| 80 |" in table and len(table.splitlines()) == 2 + 3
    assert mod.gpu_bar_table(rows[3:], {"copy_bytes_per_s": 1e12}) == ""
