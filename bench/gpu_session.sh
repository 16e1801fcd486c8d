#!/usr/bin/env bash
# One GPU session's measurements, in priority order, each under its own time limit so that a slow one
# cannot take the others with it. Every figure lands as a JSON file of bench.train (command, config, git
# commit and device recorded in it) or as a log; the folder is packed into gpu-session.tar.gz after each
# step, so what finished survives a cut-off.
#
#   bash bench/gpu_session.sh [DEST]             # on a machine with a CUDA GPU: DEST/gpu-session.tar.gz
#   SMOKE=1 bash bench/gpu_session.sh /tmp/smoke # the same commands, tiny, on the CPU (checks the script)
# (DEST defaults to $OUT, else /tmp; the files are written under /tmp/gpu-session and packed into DEST).
#
# What it measures (docs/speed.md and docs/protocols.md quote the results):
#   1. the 2-task protocols' training steps (cityscapes2-mtan: SegNet-MTAN, batch 8, 128x256, Adam;
#      cityscapes2-hps: DeepLabV3+ R50 OS8, batch 64) for the loss-space and solver-based methods and the
#      single-task baselines: their GPU-hours at the published schedules;
#   2. paper_tiny's step (ResNet-101 OS8, batch 8, 128x256): bf16 + channels_last + fused Adam against the
#      naive float32 baseline, and check_finite=log; this file, results/perf/gpu-paper_tiny.json, replaces
#      the assumed throughput in `reproduce.py plan`;
#   3. the whole train.py loop of the SegNet-MTAN protocol on a generated npy set (loader, validation,
#      checkpoints, Delta_m inputs) and evaluate.py on its checkpoint: the GPU path end to end;
#   4. torch.compile of paper_tiny's step, last because its compile time is unknown.
# Packages a GPU image may lack (submitit, torchjd and its solvers, cityscapesscripts) are installed from .whl/
# (git-ignored) when it exists, e.g. filled here with `pip download --no-deps --only-binary=:all:
# --python-version 3.12 --platform manylinux2014_x86_64 -d .whl submitit==1.5.4 torchjd==0.18.0 qpsolvers
# quadprog cvxpy ecos clarabel osqp qdldl cffi pycparser cityscapesscripts==2.3.0 appdirs pyquaternion
# coloredlogs humanfriendly` (cvxpy imports without scs, highspy and sparsediffpy).
set -u
DEST=${1:-${OUT:-/tmp}}
W=/tmp/gpu-session ARCHIVE=gpu-session.tar.gz
source "$(dirname "$0")/gpu_lib.sh"
if [ -n "${SMOKE:-}" ]; then
    TIMING=(--steps 1 --warmup 0 --rounds 1)
    SHRINK=(data.size=[32,64] optim.batch_size=2 device=cpu)
    E2E=(optim.iterations=2 data.size=[32,64] optim.batch_size=2 eval_batch_size=2 data.num_workers=0)
    NPY=(--train 4 --val 2 --size 32x64)
else
    TIMING=(--steps 20 --warmup 5 --rounds 2)
    SHRINK=()
    E2E=(optim.iterations=600 log_every=50 val_every=300 ckpt_every=300 data.num_workers=8)
    NPY=(--train 256 --val 64 --size 128x256)
fi


MTAN_METHODS=(--variant uw method.name=uncertainty --variant famo method.name=famo
              --variant nash-mtl method.name=nash-mtl --variant fairgrad method.name=fairgrad
              --variant pcgrad method.name=pcgrad --variant bf16 amp=bf16)
step cityscapes2-mtan 120 $PY -m bench.train --config configs/cityscapes2-mtan.yaml "${TIMING[@]}" --no-baseline \
    "${SHRINK[@]}" "${MTAN_METHODS[@]}" \
    --variant stl-seg7 "tasks=[seg7]" model.arch=segnet-split "method.fixed.weights={seg7: 1.0}" \
    --variant stl-depth "tasks=[depth_abs]" model.arch=segnet-split "method.fixed.weights={depth_abs: 1.0}" \
    --json "$W/gpu-cityscapes2-mtan.json"
step cityscapes2-hps 120 $PY -m bench.train --config configs/cityscapes2-hps.yaml "${TIMING[@]}" --no-baseline \
    model.pretrained=none "${SHRINK[@]}" --variant uw method.name=uncertainty --variant nash-mtl method.name=nash-mtl \
    --variant bf16 amp=bf16 \
    --variant stl-seg7 "tasks=[seg7]" "method.fixed.weights={seg7: 1.0}" \
    --json "$W/gpu-cityscapes2-hps.json"
step paper_tiny 90 $PY -m bench.train --config configs/paper_tiny.yaml "${TIMING[@]}" model.pretrained=none "${SHRINK[@]}" \
    --variant bf16-cl amp=bf16 channels_last=true optim.impl=fused --variant deferred check_finite=log \
    --json "$W/gpu-paper_tiny.json"

NPYROOT=/tmp/cityscapes2-synthetic
rm -rf "$NPYROOT" /tmp/gpu-e2e
step e2e-data 40 $PY -m data.npy synthetic "$NPYROOT" "${NPY[@]}"
step e2e-train 120 $PY train.py --config configs/cityscapes2-mtan.yaml data.root="$NPYROOT" run_dir=/tmp/gpu-e2e \
    method.name=nash-mtl "${E2E[@]}"
cp /tmp/gpu-e2e/metrics.jsonl "$W/e2e-metrics.jsonl" 2>/dev/null
step e2e-evaluate 45 $PY evaluate.py --checkpoint /tmp/gpu-e2e/checkpoint.pt --root "$NPYROOT" --out "$W/e2e-eval.json"

[ -n "${SMOKE:-}" ] || step paper_tiny-compiled 120 $PY -m bench.train --config configs/paper_tiny.yaml --steps 20 \
    --warmup 10 --rounds 2 --no-baseline model.pretrained=none amp=bf16 channels_last=true \
    --variant compiled amp=bf16 channels_last=true compile=default --json "$W/gpu-paper_tiny-compiled.json"
echo "== done $(date -u +%H:%M:%S)"
