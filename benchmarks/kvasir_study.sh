#!/usr/bin/env bash
# The first mambaseg study (issue M4): six models x three seeds on Kvasir-SEG at a CPU-feasible size, compared with
# `mambaseg compare`. Reproduces benchmarks/results/kvasir_study/ from the repository root:
#
#     bash benchmarks/kvasir_study.sh            # about 75 min on one core of a 2-core EPYC
#
# Environment: DATA (Kvasir-SEG folder, default ../shared/data/kvasir_seg), WORK (scratch folder for the converted
# dataset and the run folders, default study_work/), THREADS (torch threads, default 1: the published run used one
# core, `taskset -c 0`). Running it again continues an interrupted benchmark (finished runs are skipped).
set -euo pipefail

DATA=${DATA:-../shared/data/kvasir_seg}
WORK=${WORK:-study_work}
THREADS=${THREADS:-1}
OUT=benchmarks/results/kvasir_study
MAMBASEG=${MAMBASEG:-.venv/bin/mambaseg}
export OMP_NUM_THREADS=$THREADS NUMBA_NUM_THREADS=$THREADS

if [ ! -d "$WORK/raw/Dataset501_KvasirSEG" ]; then
  "$MAMBASEG" data convert --format folders2d "$DATA" "$WORK/raw" --id 501 --name KvasirSEG
fi

# One protocol for every model: seeded 80/10/10 split (800 train / 100 val / 100 test images), images resampled to
# spacing 8 (about 1/8 of the original resolution; predictions are resampled back and scored at full resolution),
# 64x64 patches, batch 8, 150 iterations, AdamW 1e-3 with cosine decay, Dice + CE, no deep supervision. The two
# nnU-Net-style networks get 5 stages (a 4x4 bottleneck at 64x64, as nnU-Net's planner would choose).
"$MAMBASEG" benchmark --data "$WORK/raw/Dataset501_KvasirSEG" \
  --models unet,mamba_unet,vm_unet,ultralight_vm_unet,umamba_bot,swin_unet --seeds 3 --iterations 150 \
  --target-spacing 8 8 --patch-size 64 64 --batch-size 8 --val-every 50 \
  --set optimizer=adamw --set lr=0.001 --set weight_decay=0.0001 --set schedule=cosine --set warmup_iterations=10 \
  --set min_lr=0.00001 --set loss=dice_ce --set grad_clip=12 --set deep_supervision=false --set augmentation=true \
  --model-kwargs '{"unet": {"features_per_stage": [32, 64, 128, 256, 512]}, "umamba_bot": {"features_per_stage": [32, 64, 128, 256, 512]}}' \
  --out "$WORK/bench"

# NSD is left out: its 1-pixel tolerance at full resolution says little about masks predicted at 1/8 of it.
"$MAMBASEG" compare "$WORK/bench" --out "$OUT" --metrics dice,hd95 --reproduce "bash benchmarks/kvasir_study.sh"

# Keep the small record of every run next to the report (no checkpoints, no predictions).
cp "$WORK/bench/benchmark.json" "$WORK/bench/split.json" "$OUT/"
for run in "$WORK"/bench/runs/*/*/; do
  dest="$OUT/runs/${run#"$WORK"/bench/runs/}"
  mkdir -p "$dest"
  for f in config.yaml plan.json log.csv efficiency.json done.json train_result.json environment.json; do
    [ -f "$run/$f" ] && cp "$run/$f" "$dest/"
  done
done
echo "report: $OUT/report.md"
