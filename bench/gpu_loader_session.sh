#!/usr/bin/env bash
# The GPU figures bench/gpu_session.sh leaves unmeasured: the data side of paper_tiny's step and packing.
#
#   bash bench/gpu_loader_session.sh [DEST]             # on a CUDA machine: DEST/gpu-loader-session.tar.gz
#   SMOKE=1 bash bench/gpu_loader_session.sh /tmp/smoke # the same commands, tiny, on the CPU
#
#   1. paper_tiny's step through train.py's loaders from the Tiny cache (data wait, target < 5 %), with the
#      training split resident on the GPU (data.resident=true), and with CUDA graphs (compile=reduce-overhead);
#   2. packing: N = 1, 2, 4 short paper_tiny trainings at once on the GPU (runs per GPU-hour, --per-gpu N).
# Packages the GPU image lacks come from .whl/ as in bench/gpu_session.sh. Each step has its own time limit;
# the folder is packed after each step.
set -u
DEST=${1:-${OUT:-/tmp}}
W=/tmp/gpu-loader-session ARCHIVE=gpu-loader-session.tar.gz
source "$(dirname "$0")/gpu_lib.sh"
ROOT=/tmp/synthetic-cityscapes
if [ -n "${SMOKE:-}" ]; then
    GEN=(--train 8 --val 4 --test 0 --size 64x128); SIZE=32x64
    TIMING=(--steps 1 --warmup 0 --rounds 1); SHRINK=(data.size=[32,64] optim.batch_size=2 device=cpu data.num_workers=0)
    PACK=(optim.iterations=2 data.size=[32,64] optim.batch_size=2 device=cpu data.num_workers=0 val_every=2) NS=1,2
else
    GEN=(--train 300 --val 100 --test 0); SIZE=128x256
    TIMING=(--steps 40 --warmup 10 --rounds 2); SHRINK=(data.num_workers=8)
    PACK=(optim.iterations=300 val_every=300 data.num_workers=4) NS=1,2,4
fi

rm -rf "$ROOT"
step data 90 $PY -m data.synthetic --out "$ROOT" --profile calibrated "${GEN[@]}"
step cache 60 $PY -m data.cache "$ROOT" --size "$SIZE" --splits train val
step loader 150 $PY -m bench.train --config configs/paper_tiny.yaml model.pretrained=none data.root="$ROOT" \
    "${SHRINK[@]}" --loader --no-baseline "${TIMING[@]}" --variant resident data.resident=true \
    --json "$W/gpu-paper_tiny-loader.json"
step packing 200 $PY -m bench.packing --config configs/paper_tiny.yaml model.pretrained=none data.root="$ROOT" \
    "${PACK[@]}" --n "$NS" --out "$W/packing-gpu.json"
[ -n "${SMOKE:-}" ] || step graphs 120 $PY -m bench.train --config configs/paper_tiny.yaml --no-baseline \
    model.pretrained=none --steps 20 --warmup 10 --rounds 2 --variant graphs compile=reduce-overhead \
    --json "$W/gpu-paper_tiny-graphs.json"
echo "== done $(date -u +%H:%M:%S)"
