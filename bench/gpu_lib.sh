# Shared by bench/gpu_session.sh and bench/gpu_loader_session.sh (sourced, not run): the environment, the
# packages the GPU image lacks (.whl/, git-ignored; see gpu_session.sh's header), and `step`, which runs one
# measurement under its own time limit and packs the work folder $W into $DEST/$ARCHIVE after it, so that
# what finished survives a cut-off.
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled NO_ALBUMENTATIONS_UPDATE=1
PY=${PY:-python3}
rm -rf "$W"; mkdir -p "$W" "$DEST"
if [ -d .whl ] && [ -z "${SMOKE:-}" ]; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi

pack() { tar czf "$DEST/$ARCHIVE" -C "$W" . 2>/dev/null || true; }
step() {  # step NAME SECONDS COMMAND...: run one measurement with a time limit, log it, pack what exists
    local name=$1 limit=$2
    shift 2
    echo "== $name ($(date -u +%H:%M:%S), limit ${limit}s): $*"
    timeout "$limit" "$@" > "$W/$name.log" 2>&1
    echo "   exit $? at $(date -u +%H:%M:%S)"
    tail -n 25 "$W/$name.log"
    pack
}

# What ran where. On the device machine the copied .git may be the session's starting commit: the tree that
# ran is that commit plus what `git status` there calls modified (bench.train's files then say -dirty).
{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 || true
  $PY -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__,
'cuda', torch.version.cuda, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"
  git rev-parse HEAD 2>/dev/null || echo "commit ${MTL_GIT_COMMIT:-unknown}"; nproc; } > "$W/machine.txt" 2>&1
cat "$W/machine.txt"
