"""The 3D model efficiency benchmark still runs end to end (a tiny model at two tiny sizes; timings not checked)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mambaseg.training.trainer import memory_allocator

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
        assert row["peak_train_mb"] > 0 and row["malloc_env"]["MALLOC_MMAP_THRESHOLD_"]  # the memory child ran
        assert 0 < row["saved_for_backward_mb"] < row["peak_train_mb"]
    assert large["gflops"] == pytest.approx(2 * small["gflops"], rel=1e-6)  # batch 2: exactly twice the work
    (growth,) = run["growth"]
    assert growth["voxel_ratio"] == 2 and growth["gflops_ratio"] == pytest.approx(2, rel=1e-6)
    assert growth["saved_ratio"] == pytest.approx(2, rel=0.05)  # activations saved for backward: batch-linear
    assert growth["train_ratio"] == pytest.approx(large["train_ms"]["min"] / small["train_ms"]["min"])
    report = (tmp_path / "models3d.md").read_text()
    assert "| segmamba_test |" in report and "growth from the smallest to the largest input" in report


def test_reuse_keeps_only_successful_results(tmp_path, load_benchmark):
    mod = load_benchmark("models3d")
    ok, failed = {"train_ms": {"min": 1.0}}, {"error": "timed out after 600 s"}
    earlier = {"date": "2026-11-23T17:00:00", "runs": [{"device": "cpu", "rows": [
        {"model": "segmamba", "results": {"1x1x64x64x64": ok, "1x1x96x96x96": failed}}]}]}
    path = tmp_path / "models3d.json"
    path.write_text(json.dumps(earlier))
    kept = mod._earlier_results([str(path)])
    assert set(kept) == {("cpu", "segmamba", "1x1x64x64x64")}  # the failed case is measured again
    assert kept[("cpu", "segmamba", "1x1x64x64x64")]["reused"].startswith(str(path))
    assert mod._earlier_results(None) == {}
    later = tmp_path / "later.json"  # a second file adds its cases and wins where both hold one
    earlier["runs"][0]["rows"][0]["results"] = {"1x1x64x64x64": {"train_ms": {"min": 2.0}}, "1x1x96x96x96": ok}
    later.write_text(json.dumps(earlier))
    kept = mod._earlier_results([str(path), str(later)])
    assert set(kept) == {("cpu", "segmamba", "1x1x64x64x64"), ("cpu", "segmamba", "1x1x96x96x96")}
    assert kept[("cpu", "segmamba", "1x1x64x64x64")]["train_ms"]["min"] == 2.0


def test_memory_child_environment_sees_memory_reused_from_a_warm_up(load_benchmark):
    """Under MEMORY_CHILD_ENV a step that allocates 12 x 8 MiB after a warm-up that freed the same blocks raises the
    peak RSS by about 96 MiB: freed blocks went back to the system instead of being reused unseen."""
    mod = load_benchmark("models3d")
    code = ("import sys, torch; sys.path.insert(0, 'benchmarks'); from _common import peak_rss_bytes\n"
            "def step():\n    return [torch.ones(2 * 2**20) for _ in range(12)]\n"
            "step(); before = peak_rss_bytes(reset=True); step(); print((peak_rss_bytes() - before) / 2**20)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**os.environ, **mod.MEMORY_CHILD_ENV})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 90 <= float(proc.stdout.strip().splitlines()[-1]) <= 110


def test_report_is_written_after_every_case(tmp_path, monkeypatch, load_benchmark):
    """A run stopped by a time limit (here: the second case never returns) keeps the cases it finished."""
    mod = load_benchmark("models3d")
    done = {"params": 10, "gflops": 1.0, "scan_share": 0.5, "fwd_ms": {"min": 1.0, "median": 1.0},
            "train_ms": {"min": 2.0, "median": 2.0}, "peak_train_mb": 3.0}
    calls = []

    def fake_case(*args, **kwargs):
        calls.append(args)
        if len(calls) > 1:
            raise KeyboardInterrupt  # what a `timeout` kill looks like from inside: nothing after this runs
        return done

    monkeypatch.setattr(mod, "run_case", fake_case)
    monkeypatch.setattr(sys, "argv", ["models3d.py", "--models", "unet", "--sizes", "1x1x8x8x8,1x1x16x16x16",
                                      "--devices", "cpu", "--out", str(tmp_path)])
    with pytest.raises(KeyboardInterrupt):
        mod.main()
    saved = json.loads((tmp_path / "models3d.json").read_text())
    assert saved["runs"][0]["rows"][0]["results"] == {"1x1x8x8x8": done}
    report = (tmp_path / "models3d.md").read_text()
    assert "| unet | 10 |" in report and "| unet | not measured (yet) |" in report


def test_jemalloc_thread_peak_counts_the_most_bytes_live_at_once(load_benchmark):
    """With jemalloc preloaded, two 32 MiB tensors live together (then one freed, one more made) peak at 64 MiB."""
    mod = load_benchmark("models3d")
    try:
        library = mod.find_jemalloc()
    except FileNotFoundError as err:
        pytest.skip(f"jemalloc is not installed here: {err}")
    snippet = (
        "import sys; sys.path.insert(0, 'benchmarks'); import torch, models3d as m\n"
        "from mambaseg.training.trainer import memory_allocator\n"
        "def step():\n"
        "    a = torch.ones(8 * 2**20); b = a + 1; del a; c = b * 2; del b; del c\n"
        "print(memory_allocator(), m.jemalloc_thread_peak(step))\n")
    proc = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**os.environ, **mod.malloc_env("jemalloc"), "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    allocator, peak = proc.stdout.split()
    assert allocator == "jemalloc" and library
    assert float(peak) == pytest.approx(64, abs=1)  # MB: two 32 MiB tensors at once, never three


def test_jemalloc_thread_peak_is_none_without_jemalloc(load_benchmark):
    """Under glibc (this test process) the measure is absent, not a wrong number; the step is not run."""
    mod = load_benchmark("models3d")
    if memory_allocator() == "jemalloc":
        pytest.skip("this test process itself runs under jemalloc")
    calls = []
    assert mod.jemalloc_thread_peak(lambda: calls.append(1)) is None and not calls


def test_missing_jemalloc_error_says_how_to_install_it(load_benchmark, monkeypatch):
    mod = load_benchmark("models3d")
    monkeypatch.setattr(mod, "JEMALLOC_CANDIDATES", ("/nonexistent/libjemalloc.so.2",))
    monkeypatch.delenv("JEMALLOC_PATH", raising=False)
    with pytest.raises(FileNotFoundError, match="apt-get install libjemalloc2"):
        mod.malloc_env("jemalloc")
    assert mod.malloc_env("default") is None and mod.malloc_env("tuned") == mod.TUNED_MALLOC_ENV
    monkeypatch.setenv("JEMALLOC_PATH", __file__)  # any existing file is taken as given
    assert mod.malloc_env("jemalloc") == {"LD_PRELOAD": __file__, "MALLOC_CONF": mod.JEMALLOC_CONF}
