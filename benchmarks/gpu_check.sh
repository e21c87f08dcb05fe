#!/usr/bin/env bash
# The GPU checks of issues #7 (Triton scan), #2 (chunked on CUDA) and #6 (3D growth at 1x4x128^3), as one prepared
# run for a session that is lent a GPU machine (15 minutes of device time in all, start-up included).
#
# Here, once (the device machine cannot reach PyPI; SegMamba's decoder needs MONAI, which it lacks):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux2014_x86_64 -d .whl monai==1.6.1
# Then one device `run` with carry [".whl"], timeout_s 600:
#   bash benchmarks/gpu_check.sh
# Each part has its own time limit, so a slow or failing part does not take the others down; results land in $OUT
# (scan_<gpu>.md/json, train_throughput_<gpu>.md/json, models3d.md/json, tests.log): copy them into
# benchmarks/results/ and commit them with the device named (the files name it).
set -u
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="$PWD/src:/tmp/site"
else
  export PYTHONPATH="$PWD/src"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/tests.log"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/tests.log"

part() {  # part SECONDS NAME COMMAND...: runs one part under its own limit and says how it ended
  local limit=$1 name=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@"
  echo "== $name: exit $? after $((SECONDS - t0)) s" | tee -a "$OUT/tests.log" >&2
}

# 1. correctness on the GPU: the M1 grid for chunked and triton on CUDA, and the Triton file's own GPU test
part 150 tests python3 -m pytest -q -p no:cacheprovider tests/ops/test_selective_scan.py tests/ops/test_triton_scan.py \
    -k "cuda" >> "$OUT/tests.log" 2>&1
# 2. the scan benchmark on CUDA: loop (L <= 4096), chunked, triton, mamba_ssm if installed; M1 shapes + batch 16
part 150 scan python3 benchmarks/scan.py --device cuda --reps 10 --skip-loop-above 4096 --out "$OUT"
# 3. end-to-end training throughput, batch 24, 224x224, bf16 autocast
part 150 throughput python3 benchmarks/train_throughput.py --steps 10 --repeats 3 --out "$OUT"
# 4. 3D growth on the GPU: SegMamba and the U-Net from 1x4x64^3 to 1x4x128^3 (the bar of issue #6)
part 120 models3d python3 benchmarks/models3d.py --devices cuda --models segmamba,unet \
    --sizes 1x4x64x64x64,1x4x128x128x128 --reps 3 --out "$OUT"
ls -l "$OUT"
