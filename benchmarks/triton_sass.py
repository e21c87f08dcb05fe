"""Static cost model of the Triton selective scan on an NVIDIA GPU, built without one.

Why: the Triton kernels are timed only when a session is lent a GPU. Between those runs, this script answers "where
do the instructions of each kernel go, and what is the fastest the kernel could possibly run" from the machine code
alone, so a kernel change can be judged before it is timed.

How:
  1. Records the kernel launches of one forward+backward of ``selective_scan_triton`` at a shape, by running the
     autograd function on ``meta`` tensors with the launches intercepted (grid, arguments, constexprs, warps: exactly
     what the real call would launch, defaults included).
  2. Compiles each launch as Triton's JIT would on a GPU (arguments specialised the same way: 16-divisible integers
     and pointers flagged, integers equal to 1 made constant), to a cubin for ``sm_<capability>``, with the
     ``ptxas`` and ``nvdisasm`` that Triton ships.
  3. Finds the hot loop of each kernel in the disassembly (the innermost loop with the most instructions) and counts
     its instructions per functional unit, per (step, state) element it processes.
  4. Bounds each kernel's time from below by the busiest unit (plus, issue-bound, the code outside the loop once per
     program): per loop iteration of one warp, issue (4 warp
     instructions per clock per SM) and each pipe's lane throughput per clock per SM (CUDA C++ Programming Guide,
     arithmetic instruction throughput, compute capability 9.0): fp32 add/mul/fma 128, integer/logic/compare/select
     64, exp2/log2/rcp (MUFU) 16, conversions 16, warp shuffles 32, load/store units 32. Summed over the kernels'
     trips of that loop and spread over all SMs at the boost clock.

  5. Adds a second floor, for latency: a program's loop iterations run one after another, and an iteration whose loads
     are not software-pipelined (no ``LDGSTS`` async copies in the loop) waits for at least one global-memory round
     trip (``ROUND_TRIP_CLOCKS``, an assumed figure); pipelined ``STAGES`` deep, the loads are issued ``STAGES - 1``
     iterations ahead. Programs beyond what fits on the SMs at once run in later waves.

What it cannot see: dependency stalls inside an iteration, and how much of the round trips other warps hide. A kernel
whose measured time is far above both floors is latency bound within its iterations (too few warps per SM for its
serial chain of shuffles, barriers and exponentials); one near the throughput floor is bound by the unit named.
The report puts the bound beside the forward times measured on an H200
(``results/triton_tune_h200.md``), computed from the source of the revision those times measured (``git show``;
``--no-calibrate`` skips it, e.g. in a shallow clone).

Run from the repository root (Linux x86_64 with the ``triton`` package; no GPU, no CUDA toolkit):
``python benchmarks/triton_sass.py [--shapes 3,2] [--capability 90] [--out benchmarks/results]``.
Writes ``triton_sass_sm<capability>.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import functools
import inspect
import json
import math
import re
import shlex
import subprocess
import sys
import tempfile
import types
from pathlib import Path
from unittest import mock

import torch

ROOT = Path(__file__).resolve().parent.parent
for _p in (str(ROOT / "src"), str(ROOT / "benchmarks")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from _machine import machine_info, package_versions  # noqa: E402
from scan import GPU_BAR_HBM_SHAPES, GPU_EXTRA_SHAPES, SHAPES, hbm_floor_ms  # noqa: E402

from mambaseg.ops import _triton  # noqa: E402

#: H100 / H200 SXM: 132 SMs at a 1.98 GHz boost clock.
SMS = 132
CLOCK_HZ = 1.98e9
ISSUE_PER_CLOCK = 4  # warp instructions per clock per SM (4 schedulers)
#: Clocks of one global-memory round trip (load issued to data in registers), an assumed round figure for Hopper
#: (DRAM; an L2 hit takes about half): with it the floor accounts for 75 % of the H200's measured two-pass forward
#: at the 3D shape, 129 of 172 us (results/triton_sass_sm90.md).
ROUND_TRIP_CLOCKS = 500
#: Lanes per clock per SM of each unit (compute capability 9.0) and the SASS opcodes it runs.
PIPES = {
    "fma": (128, {"FFMA", "FMUL", "FADD", "HFMA2", "HMUL2", "HADD2"}),
    "alu": (64, {"IMAD", "IADD3", "ISETP", "LOP3", "SHF", "LEA", "SEL", "PRMT", "IABS", "IMNMX", "VIADD", "VIMNMX",
                 "FSEL", "FSETP", "FMNMX", "MOV", "IADD", "LOP", "SHL", "SHR", "PLOP3", "P2R", "R2P", "LEA.HI"}),
    "mufu": (16, {"MUFU"}),
    "conv": (16, {"F2F", "F2FP", "I2F", "F2I", "I2FP", "F2IP", "FRND"}),
    "shfl": (32, {"SHFL"}),
    "lsu": (32, {"LDS", "STS", "LDSM", "STSM", "LDG", "STG", "ATOMG", "REDG", "ATOMS", "RED", "ATOM", "LD", "ST",
                 "LDL", "STL"}),
}
_OPCODE = re.compile(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P[T0-9]+\s+)?([A-Z0-9_]+)((?:\.[A-Z0-9_]+)*)")
_LABEL = re.compile(r"^(\.L_x_\d+):")
_BRANCH = re.compile(r"\bBRA\b.*`\((\.L_x_\d+)\)")


# ------------------------------------------------------------------------------------------------ 1. the launches
class _Recorder:
    """Stands in for a wrapped kernel: ``kernel[grid](*args, **kwargs)`` is recorded, not run."""

    def __init__(self, module, name, launches):
        self.module, self.name, self.launches = module, name, launches

    def __getitem__(self, grid):
        def launch(*args, num_warps=4, **constexprs):
            names = list(inspect.signature(getattr(self.module, self.name)).parameters)
            self.launches.append(dict(kernel=self.name, grid=tuple(grid), args=dict(zip(names, args)),
                                      constexprs=constexprs, num_warps=num_warps, module=self.module))
        return launch


class _Ctx:
    """The parts of an autograd context that ``_TritonScanFn`` uses."""

    def save_for_backward(self, *tensors):
        self.saved_tensors = tensors


def record_launches(shape, dtype=torch.float32, module=_triton, **options) -> list[dict]:
    """The kernel launches of one forward and one backward of ``selective_scan_triton`` at ``shape``
    ``(B, D, L, N, G)`` with ``D``, ``z``, ``delta_bias`` and softplus (the SS2D / Mamba-block call), on meta tensors.

    ``options`` are ``selective_scan_triton``'s launch options (``forward=``, ``backward=``, ``block_t=``...);
    ``module`` the kernels' module (another revision's, see :func:`module_at`).
    """
    b, d, length, n, g = shape
    meta = dict(device="meta")
    bc = (b, n, length) if g == 1 else (b, g, n, length)
    u, delta, z = (torch.empty(b, d, length, dtype=dtype, **meta) for _ in range(3))
    A = torch.empty(d, n, **meta)
    B, C = torch.empty(bc, dtype=dtype, **meta), torch.empty(bc, dtype=dtype, **meta)
    D, bias = torch.empty(d, **meta), torch.empty(d, **meta)
    launches: list[dict] = []
    fake = types.SimpleNamespace(**{k: _Recorder(module, k, launches) for k in module._KERNELS})
    full = launch_defaults(module)
    unknown = set(options) - set(full)
    if unknown:
        raise ValueError(f"record_launches: unknown options {sorted(unknown)}; known: {sorted(full)}")
    full.update(options)
    with mock.patch.object(module, "_kernels", lambda interpret: fake):
        ctx = _Ctx()
        out, last = module._TritonScanFn.forward(ctx, u, delta, A, B, C, D, z, bias, True, full)
        # autograd hands the backward zeros for an unused last state, never None
        module._TritonScanFn.backward(ctx, torch.empty_like(out), torch.empty_like(last))
    return launches


def launch_defaults(module=_triton) -> dict:
    """``selective_scan_triton``'s launch options (those after ``return_last_state``) with their defaults."""
    params = list(inspect.signature(module.selective_scan_triton).parameters.values())
    start = [p.name for p in params].index("return_last_state") + 1
    return {p.name: p.default for p in params[start:]}


@functools.lru_cache(maxsize=None)
def module_at(revision: str):
    """The kernels' module as it was at git ``revision`` (to bound the code that a recorded GPU time measured),
    loaded as a sibling of today's ``mambaseg.ops._triton``."""
    import importlib.util

    source = subprocess.run(["git", "show", f"{revision}:src/mambaseg/ops/_triton.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / f"_triton_at_{revision}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"mambaseg.ops._triton_at_{revision}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # the JIT reads the kernels' source through their module
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------------------------ 2. compilation
def compile_launch(launch: dict, capability: int = 90, workdir: str | None = None) -> dict:
    """Compiles one recorded launch as the JIT would on a GPU; returns its cubin, SASS and resource usage."""
    import triton
    from triton._C.libtriton import native_specialize_impl
    from triton.backends.compiler import BaseBackend

    kernel = getattr(launch["module"]._kernels(False), launch["kernel"])
    names = kernel.arg_names
    values = dict(launch["args"])
    values.update(launch["constexprs"])
    signature, constants, attrs = {}, {}, {}
    for i, name in enumerate(names):
        value = values[name]
        if name in launch["constexprs"]:
            signature[name], constants[(i,)] = "constexpr", value
            continue
        ty, key = native_specialize_impl(BaseBackend, value, False, True, True)
        if ty == "constexpr":  # an integer equal to 1
            signature[name], constants[(i,)] = "constexpr", value
            continue
        signature[name] = ty
        if key:
            attrs[(i,)] = BaseBackend.parse_attr(key)
    compiled = _triton.compile_cuda(kernel, signature, constants, attrs, capability, launch["num_warps"])
    tools = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        cubin = Path(tmp) / f"{launch['kernel']}.cubin"
        cubin.write_bytes(compiled.asm["cubin"])
        sass = subprocess.run([str(tools / "nvdisasm"), "-c", str(cubin)], capture_output=True, text=True,
                              check=True).stdout
        usage = subprocess.run([str(tools / "cuobjdump"), "--dump-resource-usage", str(cubin)], capture_output=True,
                               text=True, check=True).stdout
    resources = dict(re.findall(r"\b(REG|STACK|SHARED|LOCAL):(\d+)", usage))
    return dict(sass=sass, registers=int(resources.get("REG", 0)), local_bytes=int(resources.get("LOCAL", 0)),
                stack_bytes=int(resources.get("STACK", 0)), shared_bytes=int(resources.get("SHARED", 0)))


# ------------------------------------------------------------------------------------------------ 3. the hot loop
def parse_sass(sass: str) -> list[tuple[str, str]]:
    """``[(kind, text)]`` per line: kind is ``"label"`` (text = label) or ``"op"`` (text = opcode with modifiers,
    branch targets kept in the line for :func:`loops`)."""
    lines = []
    for line in sass.splitlines():
        m = _LABEL.match(line.strip())
        if m:
            lines.append(("label", m.group(1)))
            continue
        m = _OPCODE.search(line)
        if m:
            lines.append(("op", m.group(1) + m.group(2) + " " + line))
    return lines


def loops(lines) -> list[tuple[int, int]]:
    """``(start, end)`` line ranges of the loops: a label and a later branch back to it."""
    where = {text: i for i, (kind, text) in enumerate(lines) if kind == "label"}
    found = []
    for i, (kind, text) in enumerate(lines):
        m = _BRANCH.search(text) if kind == "op" else None
        if m and m.group(1) in where and where[m.group(1)] < i:
            found.append((where[m.group(1)], i))
    return found


def _opcode_counts(lines) -> collections.Counter:
    counts = collections.Counter()
    for kind, text in lines:
        if kind == "op":
            opcode = text.split()[0]
            counts["MUFU.EX2" if opcode.startswith("MUFU.EX2") else opcode.split(".")[0]] += 1
    return counts


def hot_loop_counts(sass: str) -> tuple[dict, int, dict] | None:
    """Instruction counts of one iteration of the hot loop (the innermost loop with the most instructions), by
    opcode (``MUFU.EX2`` kept apart), the factor by which the compiler unrolled it, and the whole kernel's counts.

    An unrolled loop comes with a remainder loop that runs one iteration at a time; the unroll factor is the ratio
    of their exp2 counts (every kernel's iteration has exponentials), and the counts are divided by it. None when
    the kernel has no loop.
    """
    lines = parse_sass(sass)
    spans = loops(lines)
    inner = [s for s in spans if not any(o != s and s[0] <= o[0] and o[1] <= s[1] for o in spans)]
    if not inner:
        return None
    bodies = [_opcode_counts(lines[a:b + 1]) for a, b in inner]
    hot = max(bodies, key=lambda c: sum(c.values()))
    exps = sorted(c["MUFU.EX2"] for c in bodies if c["MUFU.EX2"])
    unroll = 1
    if hot["MUFU.EX2"] and exps and hot["MUFU.EX2"] % exps[0] == 0:
        unroll = hot["MUFU.EX2"] // exps[0]
    per_iteration = {k: v // unroll if v % unroll == 0 else v / unroll for k, v in hot.items()}
    return per_iteration, unroll, _opcode_counts(lines)


def pipe_counts(counts: dict) -> dict:
    """Per-unit instruction counts (``MUFU.EX2`` under mufu), ``total`` and ``other``."""
    out = {pipe: 0 for pipe in PIPES}
    other = 0
    for opcode, k in counts.items():
        base = opcode.split(".")[0]
        pipe = next((p for p, (_, ops) in PIPES.items() if base in ops), None)
        if pipe is None:
            other += k
        else:
            out[pipe] += k
    out["other"], out["total"] = other, sum(counts.values())
    return out


# ------------------------------------------------------------------------------------------------ 4. the bound
def loop_geometry(launch: dict) -> tuple[int, int]:
    """``(trips, elements)``: iterations of the hot loop per program, and the (step, state) elements ((chunk
    boundary, state) for the combine) one iteration handles in the whole program."""
    k, c, a = launch["kernel"], launch["constexprs"], launch["args"]
    if k == "_fwd_single_pass_kernel":
        return math.ceil(a["length"] / c["BLOCK_T"]), c["BLOCK_N"] * c["BLOCK_T"]
    if k in ("_fwd_chunk_kernel", "_bwd_chunk_carry_kernel"):
        return a["chunk_len"], c["BLOCK_D"] * c["BLOCK_N"]
    if k == "_chunk_combine_kernel":
        if "BLOCK_C" not in c:  # the sequential combine of earlier revisions (the H200's): one chunk per iteration
            return a["n_chunks"] - 1, c["BLOCK_D"] * c["BLOCK_N"]
        return math.ceil((a["n_chunks"] - 1) / c["BLOCK_C"]), c["BLOCK_P"] * c["BLOCK_C"]
    if k == "_bwd_chunk_kernel":
        return a["n_state"], c["BLOCK_D"] * c["BLOCK_T"]
    if k == "_bwd_single_pass_kernel":
        return a["n_chunks"], c["BLOCK_N"] * c["BLOCK_T"]
    raise KeyError(k)


def bound(launch: dict, compiled: dict) -> dict:
    """Instruction mix of the hot loop per element and per thread, and the time bound of the whole launch."""
    found = hot_loop_counts(compiled["sass"])
    if found is None:
        raise RuntimeError(f"triton_sass: no loop found in the SASS of {launch['kernel']}")
    counts, unroll, whole = found
    pipes = pipe_counts(counts)
    trips, elements = loop_geometry(launch)
    threads = 32 * launch["num_warps"]
    per_thread = elements / threads  # elements one thread handles per iteration
    cycles = {"issue": pipes["total"] / ISSUE_PER_CLOCK}  # SM clocks per warp-iteration, each unit alone
    for pipe, (rate, _) in PIPES.items():
        cycles[pipe] = pipes[pipe] * 32 / rate
    limiter = max(cycles, key=cycles.get)
    programs = math.prod(launch["grid"])
    warp_iterations = programs * trips * launch["num_warps"]
    # the code outside the hot loop (set-up, epilogue, a remainder loop) runs about once per program: issue only
    outside = sum(whole.values()) - sum(counts.values()) * unroll
    seconds = (warp_iterations * cycles[limiter] + programs * launch["num_warps"] * outside / ISSUE_PER_CLOCK) \
        / SMS / CLOCK_HZ
    # resident programs per SM: 64K registers allocated per warp in units of 256, at most 64 warps and 32 programs
    warp_registers = -(-max(1, compiled["registers"]) * 32 // 256) * 256
    resident_programs = min(32, 65536 // (warp_registers * launch["num_warps"]), 64 // launch["num_warps"])
    resident_warps = launch["num_warps"] * resident_programs
    # latency floor: the iterations of a program in sequence, each behind a global-memory round trip unless its
    # loads are software-pipelined (async copies issued STAGES - 1 iterations ahead)
    async_copies = counts.get("LDGSTS", 0)
    loads = counts.get("LDG", 0) + async_copies
    stages = launch["constexprs"].get("STAGES", 1) if async_copies else 1
    waves = math.ceil(programs / (max(1, resident_programs) * SMS))
    round_trip_us = (waves * trips * ROUND_TRIP_CLOCKS / max(1, stages - 1) / CLOCK_HZ * 1e6) if loads else 0.0
    return dict(kernel=launch["kernel"], grid=launch["grid"], num_warps=launch["num_warps"],
                constexprs={k: v for k, v in launch["constexprs"].items() if k.startswith("BLOCK")},
                registers=compiled["registers"], local_bytes=compiled["local_bytes"] + compiled["stack_bytes"],
                trips=trips, unroll=unroll, elements_per_thread=per_thread,
                per_element={k: round(v / per_thread, 2) for k, v in pipes.items()},
                exp2_per_element=round(counts.get("MUFU.EX2", 0) / per_thread, 2),
                barriers_per_iteration=counts.get("BAR", 0),
                fences_per_iteration=counts.get("MEMBAR", 0) + counts.get("CCTL", 0),
                fences_in_kernel=whole.get("MEMBAR", 0) + whole.get("CCTL", 0),
                spills_per_iteration=counts.get("STL", 0) + counts.get("LDL", 0),
                limiter=limiter, bound_us=seconds * 1e6, async_copies_per_iteration=async_copies, waves=waves,
                round_trip_us=round_trip_us, floor_us=max(seconds * 1e6, round_trip_us),
                warps_per_sm=programs * launch["num_warps"] / SMS, max_resident_warps=resident_warps)


def analyse(shape, capability=90, dtype=torch.float32, module=_triton, **options) -> dict:
    """Every launch of one forward+backward at ``shape``, compiled and bounded; totals per direction."""
    launches = record_launches(shape, dtype, module, **options)
    rows = []
    for i, launch in enumerate(launches):
        row = bound(launch, compile_launch(launch, capability))
        row["direction"] = "forward" if i < _forward_count(launches) else "backward"
        rows.append(row)
    total = {d: sum(r["bound_us"] for r in rows if r["direction"] == d) for d in ("forward", "backward")}
    floor = {d: sum(r["floor_us"] for r in rows if r["direction"] == d) for d in ("forward", "backward")}
    return dict(shape=list(shape), options=options, dtype=str(dtype).replace("torch.", ""), kernels=rows,
                bound_us=total, floor_us=floor)


def _forward_count(launches) -> int:
    """Launches up to and including the one that writes ``out`` (the forward's last)."""
    for i, launch in enumerate(launches):
        if launch["kernel"] == "_fwd_single_pass_kernel" or launch["constexprs"].get("OUTPUT"):
            return i + 1
    return 0


# ------------------------------------------------------------------------------------------------ report
#: Times measured on an H200 (CUDA graphs, results/triton_tune_h200.md, 2026-12-04) at the sweep's best settings,
#: and the revision whose kernels they timed (results/h200_run1/README.md).
H200_REVISION = "6e3f341"
_SP = dict(forward="single_pass")
_BWD = dict(block_d_backward=8, chunk_length=64)
#: shape -> (forward us, its settings, forward+backward us, its settings)
H200_MEASURED = {
    (1, 768, 4096, 16, 4): (110.3, dict(_SP, block_t=128, num_warps=2),
                            1120.7, dict(_SP, block_t=128, num_warps=2, **_BWD, num_warps_backward=2)),
    (4, 96, 4096, 16, 1): (82.4, dict(_SP, block_t=128, num_warps=4),
                           579.0, dict(_SP, block_t=128, num_warps=4, **_BWD, num_warps_backward=2)),
    (16, 96, 4096, 16, 1): (217.5, dict(_SP, block_t=128, num_warps=2),
                            2077.1, dict(_SP, block_t=128, num_warps=2, **_BWD, num_warps_backward=2)),
    (1, 96, 4096, 16, 1): (46.8, dict(_SP, block_t=256, num_warps=8),
                           219.2, dict(_SP, block_t=256, num_warps=8, **_BWD, num_warps_backward=4)),
    (1, 48, 32768, 16, 1): (172.2, dict(forward="two_pass", block_d=16, chunk_length=128, num_warps=2),
                            839.8, dict(forward="two_pass", block_d=16, num_warps=2, **_BWD, num_warps_backward=2)),
    (1, 192, 1024, 16, 1): (15.4, dict(_SP, block_t=256, num_warps=4),
                            114.8, dict(_SP, block_t=256, num_warps=4, **_BWD, num_warps_backward=4)),
}
#: Copy bandwidth (read + write) measured on the H200 by triton_tune.py (results/triton_tune_h200.json).
H200_COPY_BYTES_PER_S = 4.106e12


def bar_budget(shape, forward_instr_per_element: float) -> dict:
    """What issue #7's forward bar (50 % of the HBM floor) asks of a kernel at ``shape``: the HBM floor at the
    H200's copy bandwidth, the time allowed, the MUFU floors with one and two exp2 per (step, state) (single pass,
    or a chunk-parallel two-pass forward that scans every chunk twice), and the instructions per element the
    allowed time can issue."""
    b, d, length, n, g = shape
    elements = b * d * length * n
    floor_us = hbm_floor_ms(shape, H200_COPY_BYTES_PER_S)[0] * 1e3
    allowed_us = 2 * floor_us
    mufu_us = elements / (PIPES["mufu"][0] * SMS * CLOCK_HZ) * 1e6
    budget = allowed_us * 1e-6 * SMS * CLOCK_HZ * ISSUE_PER_CLOCK * 32 / elements
    return dict(shape=list(shape), hbm_floor_us=floor_us, allowed_us=allowed_us, mufu_one_exp_us=mufu_us,
                mufu_two_exp_us=2 * mufu_us, instr_budget_per_element=budget,
                forward_instr_per_element=forward_instr_per_element)


#: The variants compared per shape: the defaults, the single-pass backward, the carry pass as it was launched
#: before 2026-12-05 (16 channels, 4 warps: 2 state elements per thread), a two-pass forward with 16 state
#: elements per thread (32 channels, 1 warp), and every loop software-pipelined.
VARIANTS = (dict(), dict(backward="single_pass"), dict(block_d_carry=16, num_warps_carry=4),
            dict(forward="two_pass", block_d=32, num_warps=1), dict(num_stages=2, num_stages_serial=4))


def calibrate(shape, capability) -> dict:
    """The H200's measured forward and forward+backward at ``shape`` beside the bound of the code they timed (git
    ``H200_REVISION``) and of today's code at the same settings."""
    then_module = module_at(H200_REVISION)
    fwd_us, fwd_settings, both_us, both_settings = H200_MEASURED[shape]
    row = dict(shape=list(shape), forward_settings=_describe(fwd_settings),
               fwdbwd_settings=_describe(both_settings), measured_forward_us=fwd_us, measured_fwdbwd_us=both_us)
    for when, module in (("then", then_module), ("now", _triton)):
        fwd = analyse(shape, capability, module=module, **fwd_settings)
        both = analyse(shape, capability, module=module, **both_settings)
        for kind in ("bound", "floor"):
            row[f"{kind}_forward_{when}_us"] = fwd[f"{kind}_us"]["forward"]
            row[f"{kind}_fwdbwd_{when}_us"] = both[f"{kind}_us"]["forward"] + both[f"{kind}_us"]["backward"]
    return row


def report(data: dict) -> str:
    md = lambda cells: "| " + " | ".join(map(str, cells)) + " |"
    lines = [f"# Triton selective scan: static cost model for sm_{data['capability']}", "",
             f"`{data['command']}` on {data['date']}. Triton {data['versions'].get('triton')}, torch "
             f"{data['versions'].get('torch')}; git commit {data['machine']['git_commit']}. No GPU was used: every "
             "kernel launch of one forward+backward (fp32 inputs; D, z, delta_bias, softplus) was compiled as "
             "Triton's JIT would compile it on a GPU and its hot loop read from the disassembly (method: the "
             "script's docstring).", "",
             f"Host: {data['machine']['cpu']}, {data['machine']['usable_cores']} usable cores, "
             f"{data['machine']['memory_gb']} GB RAM, {data['machine']['os']}, Python {data['machine']['python']}; "
             "no GPU. The figures depend on the Triton version and the target, not on the host.", "",
             f"Bound = the busiest unit over the launch's loop iterations, on {SMS} SMs at {CLOCK_HZ / 1e9:.2f} GHz; "
             "instructions are per (step, state) element and per thread. Round trips = the loop's iterations in "
             f"sequence, each behind one global-memory round trip ({ROUND_TRIP_CLOCKS} clocks, assumed) unless its "
             "loads are software-pipelined (async copies in the loop); floor = the larger of the two. A real kernel "
             "also waits inside its iterations (shuffles, barriers, exponentials in a chain), so it runs slower than "
             "its floor; how much slower is the measure of how latency-bound it is.", ""]
    if data.get("calibration"):
        lines += ["## Bound against the H200's measured times (best settings of the sweep)", "",
                  f"The H200 timed the kernels of git {H200_REVISION} (compiled there by Triton 3.6); 'then' is the "
                  "bound computed from that revision's source with the Triton named above, 'now' today's kernels at "
                  "the same settings (not yet timed). Settings: results/triton_tune_h200.md.", "",
                  md(["shape (B, D, L, N, G)", "fwd measured us", "fwd bound then", "fwd floor then",
                      "measured / floor", "fwd bound now", "fwd floor now", "fwd+bwd measured us",
                      "fwd+bwd bound then", "fwd+bwd floor then", "measured / floor", "fwd+bwd bound now",
                      "fwd+bwd floor now"]), "|---" * 13 + "|"]
        for c in data["calibration"]:
            lines.append(md([tuple(c["shape"]), c["measured_forward_us"], f"{c['bound_forward_then_us']:.1f}",
                             f"{c['floor_forward_then_us']:.1f}",
                             f"{c['measured_forward_us'] / c['floor_forward_then_us']:.1f}x",
                             f"{c['bound_forward_now_us']:.1f}", f"{c['floor_forward_now_us']:.1f}",
                             c["measured_fwdbwd_us"],
                             f"{c['bound_fwdbwd_then_us']:.1f}", f"{c['floor_fwdbwd_then_us']:.1f}",
                             f"{c['measured_fwdbwd_us'] / c['floor_fwdbwd_then_us']:.1f}x",
                             f"{c['bound_fwdbwd_now_us']:.1f}", f"{c['floor_fwdbwd_now_us']:.1f}"]))
        lines.append("")
    if data.get("budget"):
        lines += ["## What the forward bar asks (50 % of the HBM floor)", "",
                  "A forward at 50 % of the HBM floor must finish in twice the floor. At these shapes that time is "
                  "close to what the exponentials alone take on the MUFU (16 per clock per SM): with one exp2 per "
                  "(step, state) the MUFU must stay over half busy and every other instruction must hide behind it; "
                  "a two-pass forward (two exp2) cannot get there. 'Budget' is the instructions per element the "
                  "allowed time can issue on every SM (MUFU included).", "",
                  md(["shape (B, D, L, N, G)", "HBM floor us (H200 copy bw)", "allowed us", "MUFU, 1 exp2 us",
                      "MUFU, 2 exp2 us", "budget instr/elt", "single-pass forward now instr/elt"]), "|---" * 7 + "|"]
        for c in data["budget"]:
            lines.append(md([tuple(c["shape"]), f"{c['hbm_floor_us']:.1f}", f"{c['allowed_us']:.1f}",
                             f"{c['mufu_one_exp_us']:.1f}", f"{c['mufu_two_exp_us']:.1f}",
                             f"{c['instr_budget_per_element']:.1f}", c["forward_instr_per_element"]]))
        lines.append("")
    lines += ["## Every kernel", "",
              md(["shape", "options", "dir", "kernel", "grid", "warps", "tiles", "regs", "local B", "warps/SM",
                  "resident max", "unroll", "instr/elt", "fma", "alu", "mufu", "ex2", "shfl", "lsu", "BAR/iter",
                  "fences/iter", "spill ops/iter", "async copies/iter", "limiter", "bound us", "waves",
                  "round trips us", "floor us"]), "|---" * 28 + "|"]
    for a in data["analyses"]:
        for r in a["kernels"]:
            pe = r["per_element"]
            lines.append(md([tuple(a["shape"]), _describe(a["options"]), r["direction"][:3],
                             r["kernel"].strip("_").replace("_kernel", ""), r["grid"], r["num_warps"],
                             " ".join(f"{k[6:]}={v}" for k, v in r["constexprs"].items()), r["registers"],
                             r["local_bytes"], f"{r['warps_per_sm']:.1f}", r["max_resident_warps"], r["unroll"],
                             pe["total"],
                             pe["fma"], pe["alu"], pe["mufu"], r["exp2_per_element"], pe["shfl"], pe["lsu"],
                             r["barriers_per_iteration"], r["fences_per_iteration"], r["spills_per_iteration"],
                             r["async_copies_per_iteration"], r["limiter"], f"{r['bound_us']:.1f}", r["waves"],
                             f"{r['round_trip_us']:.1f}", f"{r['floor_us']:.1f}"]))
    lines += ["", "## Totals (us)", "", md(["shape", "options", "forward bound", "backward bound", "forward floor",
                                            "backward floor"]), "|---" * 6 + "|"]
    for a in data["analyses"]:
        lines.append(md([tuple(a["shape"]), _describe(a["options"]), f"{a['bound_us']['forward']:.1f}",
                         f"{a['bound_us']['backward']:.1f}", f"{a['floor_us']['forward']:.1f}",
                         f"{a['floor_us']['backward']:.1f}"]))
    return "\n".join(lines) + "\n"


def _describe(options: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in options.items()) or "defaults"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", default="3,2,6,0,5,1", help="indices into scan.py's SHAPES + GPU_EXTRA_SHAPES")
    p.add_argument("--capability", type=int, default=90, help="CUDA compute capability x 10 (90: H100/H200)")
    p.add_argument("--no-calibrate", action="store_true", help="skip the H200-measured forward settings")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)
    if _triton.triton_mode() != "compile":
        print(f"triton_sass: needs Triton in compiled mode (found {_triton.triton_mode()!r}; unset TRITON_INTERPRET)",
              file=sys.stderr)
        return 2
    all_shapes = SHAPES + GPU_EXTRA_SHAPES
    shapes = [tuple(all_shapes[int(i)]) for i in args.shapes.split(",")]
    data = dict(command="python benchmarks/triton_sass.py " + " ".join(map(shlex.quote, argv or sys.argv[1:])),
                date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                capability=args.capability, machine=machine_info(str(ROOT)), versions=package_versions(),
                model=dict(sms=SMS, clock_hz=CLOCK_HZ, issue_per_clock=ISSUE_PER_CLOCK,
                           lanes_per_clock={k: v[0] for k, v in PIPES.items()}),
                analyses=[], calibration=[], budget=[])
    for shape in shapes:
        for options in VARIANTS:
            print(f"{shape} {_describe(options)}", flush=True)
            data["analyses"].append(analyse(shape, args.capability, **options))
        if shape in GPU_BAR_HBM_SHAPES:
            forward = next(k for k in data["analyses"][-len(VARIANTS)]["kernels"] if k["direction"] == "forward")
            data["budget"].append(bar_budget(shape, forward["per_element"]["total"]))
        if not args.no_calibrate and shape in H200_MEASURED:
            data["calibration"].append(calibrate(shape, args.capability))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"triton_sass_sm{args.capability}"
    stem.with_suffix(".json").write_text(json.dumps(data, indent=1, default=str) + "\n")
    stem.with_suffix(".md").write_text(report(data))
    print(report(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
