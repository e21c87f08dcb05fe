"""The static cost model of the Triton kernels (benchmarks/triton_sass.py): every launch of one forward+backward
compiles for sm_90 as the JIT would compile it, and the hot loops have the properties the kernels are built for.
Runs in a subprocess: compiling needs Triton imported in compiled mode (the Triton tests import it interpreted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

triton = pytest.importorskip("triton", reason="the Triton backend needs the triton package (pip install triton)")
if not all((Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / tool).is_file()
           for tool in ("ptxas", "nvdisasm", "cuobjdump")):
    pytest.skip("this triton build ships no NVIDIA ptxas/nvdisasm/cuobjdump (the Linux x86_64 wheels do)",
                allow_module_level=True)

ROOT = Path(__file__).resolve().parents[2]
SS2D = [1, 768, 4096, 16, 4]  # scan.py's SHAPES[3]: VMamba's 4 directions packed in one launch


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("sass")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "triton_sass.py"), "--shapes", "3",
                           "--no-calibrate", "--out", str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "triton_sass_sm90.md").read_text().startswith("# Triton selective scan: static cost model")
    return json.loads((out / "triton_sass_sm90.json").read_text())


def _analysis(report, **options):
    return next(a for a in report["analyses"] if a["shape"] == SS2D and a["options"] == options)


def test_records_the_launches_of_the_defaults(report):
    kernels = _analysis(report)["kernels"]
    assert [k["kernel"] for k in kernels] == ["_fwd_single_pass_kernel", "_bwd_chunk_carry_kernel",
                                              "_chunk_combine_kernel", "_bwd_chunk_kernel"]
    assert [k["direction"] for k in kernels] == ["forward"] + ["backward"] * 3
    carry = kernels[1]
    # 4 groups of 192 channels in blocks of 32 -> 24 programs per chunk, 63 chunks of 64 steps send a carry
    assert carry["grid"] == [1, 24, 63] and carry["num_warps"] == 1 and carry["constexprs"]["BLOCK_D"] == 32
    assert _analysis(report, backward="single_pass")["kernels"][1]["kernel"] == "_bwd_single_pass_kernel"


def test_kernels_have_no_fences_no_spills_and_their_exponentials(report):
    """Relaxed atomics (no MEMBAR / L1 invalidation anywhere in a kernel), registers only, and the exp2 per
    (step, state) element each kernel needs (two in the gradient kernels: the forward and the reverse decay) plus
    at most its per-step extras (softplus, sigmoid), which checks that the hot loop, its unrolling and its element
    count were read right."""
    exps = {"_fwd_single_pass_kernel": 1, "_fwd_chunk_kernel": 1, "_bwd_chunk_carry_kernel": 1,
            "_chunk_combine_kernel": 1, "_bwd_chunk_kernel": 2, "_bwd_single_pass_kernel": 2}
    seen = set()
    for analysis in report["analyses"]:
        for k in analysis["kernels"]:
            what = f"{k['kernel']} {analysis['options']}"
            seen.add(k["kernel"])
            assert k["fences_in_kernel"] == 0 and k["spills_per_iteration"] == 0, what
            assert k["local_bytes"] == 0 and 0 < k["registers"] <= 255, what
            extras = 1 if k["elements_per_thread"] >= 8 else 2  # per-step exp2, shared by a thread's elements
            assert exps[k["kernel"]] <= k["exp2_per_element"] < exps[k["kernel"]] + extras, what
            assert k["bound_us"] > 0 and k["per_element"]["total"] > 0, what
    assert seen == set(exps), seen


def test_an_unrolled_loop_is_counted_per_iteration(load_benchmark):
    """A loop the compiler unrolled 4x comes with a remainder loop that runs one iteration at a time: the hot loop's
    counts are divided by the ratio of the two loops' exp2 counts (the kernels' own loops are not unrolled today,
    so the parser is checked on disassembly written out here in nvdisasm's format)."""
    triton_sass = load_benchmark("triton_sass")
    body = ["MUFU.EX2 R1, R2 ;", "FFMA R3, R1, R3, R4 ;"]
    lines = [".L_x_0:", *(body * 4), "@P0 BRA `(.L_x_0) ;", ".L_x_1:", *body, "@P1 BRA `(.L_x_1) ;", "EXIT ;"]
    sass = "\n".join(line if line.startswith(".L") else f"        /*{16 * i:04x}*/                   {line}"
                     for i, line in enumerate(lines))
    counts, unroll, whole = triton_sass.hot_loop_counts(sass)
    assert unroll == 4
    assert counts == {"MUFU.EX2": 1, "FFMA": 1, "BRA": 0.25}
    assert whole == {"MUFU.EX2": 5, "FFMA": 5, "BRA": 2, "EXIT": 1}


def test_default_carry_pass_needs_fewer_instructions_than_the_old_launch(report):
    """The reason for the carry pass's defaults (32 channels, 1 warp): per (step, state) element it issues fewer
    instructions than the earlier 16 channels x 4 warps, whose threads held 2 state elements each."""
    def carry(**options):
        return next(k for k in _analysis(report, **options)["kernels"] if k["kernel"] == "_bwd_chunk_carry_kernel")
    new, old = carry(), carry(block_d_carry=16, num_warps_carry=4)
    assert new["elements_per_thread"] == 16 and old["elements_per_thread"] == 2
    assert new["per_element"]["total"] < 0.5 * old["per_element"]["total"]


def test_pipelined_loops_issue_their_loads_ahead(report):
    """``num_stages`` / ``num_stages_serial`` reach every kernel: pipelined, each hot loop (fp32 inputs) loads through
    async copies, as launched by default none does; the round-trip floor counts the loads issued ahead."""
    default = _analysis(report)["kernels"]
    pipelined = _analysis(report, num_stages=2, num_stages_serial=4)["kernels"]
    assert [k["kernel"] for k in pipelined] == [k["kernel"] for k in default]
    for old, new in zip(default, pipelined):
        assert old["async_copies_per_iteration"] == 0 and new["async_copies_per_iteration"] > 0, new["kernel"]
        assert old["floor_us"] == max(old["bound_us"], old["round_trip_us"]), old
        # loads issued STAGES - 1 iterations ahead: 3 ahead for the serial loops (carry pass, combine), 1 for the rest
        ahead = 3 if new["kernel"] in ("_bwd_chunk_carry_kernel", "_chunk_combine_kernel") else 1
        per_wave = new["round_trip_us"] / new["waves"]  # (the pipelined code may fit more programs per SM)
        assert per_wave == pytest.approx(old["round_trip_us"] / old["waves"] / ahead), new["kernel"]
    combine = next(k for k in default if k["kernel"] == "_chunk_combine_kernel")
    # the 63 chunk boundaries scanned at once (one tile of 64), not walked one after another behind 63 round trips
    assert combine["trips"] == 1 and combine["floor_us"] == combine["bound_us"] > combine["round_trip_us"]
