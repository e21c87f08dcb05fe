"""Builds mamba_ssm's selective-scan CUDA op from its PyPI source release, for the one GPU of this machine.

Why: issue #7 rates the Triton kernel against mamba_ssm's CUDA kernel in the same run. ``pip install mamba-ssm``
fetches a prebuilt wheel from GitHub or compiles ten template-heavy CUDA files for every architecture; a benchmark
machine without network access (the lent GPU machines) can do neither. This script compiles only the extension
that ``selective_scan_fn`` needs (``selective_scan_cuda``, with the compiler flags of mamba_ssm's ``setup.py``)
for the local GPU's architecture alone, with ninja in parallel, and lays the Python package out beside it.

The package's ``__init__`` is replaced by one that only sets ``__version__``: the original imports every model
module (Mamba2, Mamba3, ...), which need packages that the selective scan does not. Nothing else is changed.

Usage (GPU machine, repository root)::

    python benchmarks/gpu_build_mamba_ssm.py --sdist .whl/mamba_ssm-2.3.2.post1.tar.gz --dest /tmp/mamba_ssm_build
    export PYTHONPATH=/tmp/mamba_ssm_build/pkg:/tmp/mamba_ssm_build/build:$PYTHONPATH

then ``mambaseg.ops.list_backends`` on CUDA tensors includes ``mamba_ssm``. Prints the two folders on success.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tarfile
import time
from pathlib import Path

#: nvcc flags of mamba_ssm's setup.py (2.3.x) for the selective-scan extension, architecture flags aside
NVCC_FLAGS = ["-O3", "-std=c++17", "-U__CUDA_NO_HALF_OPERATORS__", "-U__CUDA_NO_HALF_CONVERSIONS__",
              "-U__CUDA_NO_BFLOAT16_OPERATORS__", "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
              "-U__CUDA_NO_BFLOAT162_OPERATORS__", "-U__CUDA_NO_BFLOAT162_CONVERSIONS__",
              "--expt-relaxed-constexpr", "--expt-extended-lambda", "--use_fast_math", "-lineinfo"]
SOURCES = ["selective_scan.cpp"] + [f"selective_scan_fwd_{t}.cu" for t in ("fp32", "fp16", "bf16")] + [
    f"selective_scan_bwd_{t}_{k}.cu" for t in ("fp32", "fp16", "bf16") for k in ("real", "complex")]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sdist", required=True, help="mamba_ssm-<version>.tar.gz from PyPI")
    p.add_argument("--dest", default="/tmp/mamba_ssm_build")
    p.add_argument("--jobs", type=int, default=8, help="parallel compiler processes (default 8)")
    args = p.parse_args()
    import torch
    from torch.utils import cpp_extension

    if not torch.cuda.is_available():
        raise SystemExit("gpu_build_mamba_ssm.py: needs a CUDA GPU (it builds for that GPU's architecture)")
    dest = Path(args.dest)
    src_root, pkg, build = dest / "src", dest / "pkg", dest / "build"
    for d in (src_root, pkg, build):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    with tarfile.open(args.sdist) as tar:
        tar.extractall(src_root, filter="data")
    (top,) = [d for d in src_root.iterdir() if d.is_dir()]
    shutil.copytree(top / "mamba_ssm", pkg / "mamba_ssm")
    version = next((line.split("=")[1].strip().strip("\"'") for line in
                    (top / "mamba_ssm" / "__init__.py").read_text().splitlines() if line.startswith("__version__")),
                   "unknown")
    (pkg / "mamba_ssm" / "__init__.py").write_text(f'__version__ = "{version}"\n')
    major, minor = torch.cuda.get_device_capability()
    os.environ["TORCH_CUDA_ARCH_LIST"] = f"{major}.{minor}"
    os.environ["MAX_JOBS"] = str(args.jobs)
    csrc = top / "csrc" / "selective_scan"
    t0 = time.time()
    print(f"building selective_scan_cuda {version} for sm_{major}{minor} with {args.jobs} jobs ...", flush=True)
    cpp_extension.load(name="selective_scan_cuda", sources=[str(csrc / s) for s in SOURCES],
                       extra_cflags=["-O3", "-std=c++17"], extra_cuda_cflags=NVCC_FLAGS,
                       extra_include_paths=[str(csrc)], build_directory=str(build), verbose=True)
    sys.path[:0] = [str(pkg), str(build)]
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn  # noqa: F401  (the import must work)

    print(f"built in {time.time() - t0:.0f} s\nPYTHONPATH+={pkg}:{build}")


if __name__ == "__main__":
    main()
