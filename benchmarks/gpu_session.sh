#!/usr/bin/env bash
# The GPU checks and runs of the trainer, as run on a lent H100 (see docs/results/gpu_h100.md).
#
#   bash benchmarks/gpu_session.sh smoke DEST   # CUDA tests, throughput benchmark, short chains (~6 min)
#   bash benchmarks/gpu_session.sh full DEST    # the full-size recipe: synthetic-gpu.json (~9 min)
#
# Every step has its own time limit and log; DEST receives results.tar.gz (logs, tables, model
# cards, histories) and summary.txt. Extra arguments after DEST are passed to the full recipe as
# `--set key=value` overrides, e.g. `teacher.epochs=6`.
set -u
MODE=${1:-smoke}
DEST=${2:-runs/gpu-dest}
shift 2 || true
WORK=runs/gpu-$MODE
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
mkdir -p "$WORK" "$DEST"
SUMMARY=$DEST/summary.txt
: >"$SUMMARY"

step() {  # step NAME LIMIT_S COMMAND...: run with a limit, log to WORK/NAME.log, note rc and time
    local name=$1 limit=$2
    shift 2
    local t0=$SECONDS
    echo "=== $name (limit ${limit}s): $*" | tee -a "$SUMMARY"
    timeout "$limit" "$@" >"$WORK/$name.log" 2>&1
    local rc=$?
    echo "=== $name: rc=$rc in $((SECONDS - t0)) s" | tee -a "$SUMMARY"
    tail -n "${TAIL:-15}" "$WORK/$name.log" | tee -a "$SUMMARY"
    return $rc
}

tiny=(--set data.patients=12 --set data.n_bscans=4 --set test_data.patients=6 --set test_data.n_bscans=4
      --set teacher.epochs=1 --set student.epochs=1)

if [ "$MODE" = smoke ]; then
    step env 60 bash -c "nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; $PY -c 'import torch, timm, onnxruntime, sys; print(sys.version.split()[0], torch.__version__, torch.version.cuda, timm.__version__, onnxruntime.__version__, onnxruntime.get_available_providers(), torch.cuda.get_device_name(), torch.cuda.is_bf16_supported())'; nproc; free -g | head -2"
    # the training tests, here on CUDA (device 'auto'): bf16 autocast, channels_last, SWA, distillation, resume
    TAIL=8 step tests_cuda 200 $PY -m pytest -q -p no:cacheprovider tests/test_train_loop.py tests/test_train_learns.py \
        tests/test_train_losses.py tests/test_train_cli.py
    # model throughput, random batches on the GPU (the table in docs/results/gpu_h100.md)
    [ -n "${SKIP_BENCH:-}" ] || TAIL=30 step bench 240 $PY benchmarks/bench_gpu_training.py --batches 16,32,64 --steps 10 --warmup 3 --out "$WORK"
    # the whole chain with the full-size models on a little data (CUDA, bf16, 12 loader workers)
    step chain_full_models 180 $PY -m app.cli train crossval --config training/configs/synthetic-gpu.json \
        --out "$WORK/chain" "${tiny[@]}"
    # torch.compile and torchrun (NCCL) paths with small models
    step chain_compile 150 $PY -m app.cli train crossval --config training/configs/synthetic-gpu.json \
        --out "$WORK/compile" "${tiny[@]}" --set runtime.compile=true --set teacher.arch=convnextv2_atto \
        --set student.arch=efficientnet_b0 --set teacher.input_size=128 --set student.input_size=128
    step torchrun_nccl 120 torchrun --standalone --nproc-per-node 1 -m app.cli train teacher \
        --config training/configs/synthetic-gpu.json --out "$WORK/ddp" "${tiny[@]}" --set teacher.arch=convnextv2_atto \
        --set teacher.input_size=128
    step export 120 $PY -m app.cli train export --config training/configs/synthetic-gpu.json --out "$WORK/chain" \
        --folder "$WORK/export" --overwrite
else
    sets=()
    for kv in "$@"; do sets+=(--set "$kv"); done
    # data first, in all CPUs (a -c script: the spawned simulator workers cannot re-run a stdin script)
    SETS="$*" step data 300 $PY -c '
import os, time
from training.config import load_config
from training.recipes import _load
cfg = load_config("training/configs/synthetic-gpu.json", os.environ["SETS"].split())
for part in ("data", "test_data"):
    t = time.perf_counter()
    s = _load(cfg[part], cfg["data"]["classes"])
    print(part, len(s), "B-scans ready in", round(time.perf_counter() - t, 1), "s")
'
    TAIL=30 step recipe 560 $PY -m app.cli train crossval --config training/configs/synthetic-gpu.json \
        --out "$WORK/run" "${sets[@]}"
    step images_per_s 30 $PY benchmarks/bench_gpu_training.py --summarize "$WORK/run"
    step export 120 $PY -m app.cli train export --config training/configs/synthetic-gpu.json --out "$WORK/run" \
        --folder "$WORK/export" --overwrite
fi
# pack everything small (no weights) for the trip back
tar czf "$DEST/results.tar.gz" --exclude='*.safetensors' --exclude='*.onnx' --exclude='*.pt' --exclude='*.png' \
    --exclude='cache' "$WORK" 2>/dev/null
ls -la "$DEST"
