#!/usr/bin/env bash
# Issue 9 ablations on real OCT2017 B-scans: each variant is the control student (no teacher) of the
# oct2017-real recipe on its one patient-level split (the shipped model's split) as it was in v1.1.0
# (REF: Lite0 at 224 px, real data only), changed in one or two things, then evaluated the way the app
# screens (benchmarks/eval_real.py, validation patients). lite2-260-synth is the bundled v1.3.0 recipe.
# Resumable: rerun the script and finished variants are skipped, a killed one continues.
#   bash training/ablate_real.sh [VARIANT...]      (default: all, in this order)
#   results: runs/ablate/<variant>/eval.txt; summary: python benchmarks/ablation_report.py runs/ablate
set -u
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/ablate}
REF="--set student.arch=tf_efficientnet_lite0 --set student.input_size=224 --set synthetic_mix.fraction=0"
declare -A SETS=(
  [lite0-288]="--set student.input_size=288 --set student.epochs=10"
  [lite0-224-crop]="--set runtime.aspect=crop"
  [lite0-224-letterbox]="--set runtime.aspect=letterbox"
  [lite2-260]="--set student.arch=tf_efficientnet_lite2 --set student.input_size=260"
  [b2-scratch-224]="--set student.arch=efficientnet_b2 --set student.pretrained=false --set student.epochs=12 --set student.lr=2e-3"
  [lite0-224-synth]="--set synthetic_mix.fraction=0.25"
  [lite2-260-synth]="--set student.arch=tf_efficientnet_lite2 --set student.input_size=260 --set synthetic_mix.fraction=0.25"
)
ORDER=(lite0-288 lite0-224-crop lite2-260 b2-scratch-224 lite0-224-synth lite0-224-letterbox)
[ $# -gt 0 ] && ORDER=("$@")
for v in "${ORDER[@]}"; do
  dir="$OUT/$v"
  [ -f "$dir/eval.txt" ] && { echo "== $v: done"; continue; }
  mkdir -p "$dir"
  echo "== $v: training ($(date -u +%H:%M))"
  resume=""; [ -d "$dir/fold0/control" ] && resume="--resume"
  # shellcheck disable=SC2086
  [ -f "$dir/fold0/control/control.json" ] || $PY -m app.cli train student --config training/configs/oct2017-real.json --out "$dir" --threads 2 \
      $REF ${SETS[$v]} $resume >>"$dir/train.log" 2>&1 || { echo "== $v: training failed (see $dir/train.log)"; continue; }
  # per-eye thresholds from the same validation eyes as the shipped model's, then the app's evaluation
  $PY -m app.cli train calibrate --config training/configs/oct2017-real.json --out "$dir" \
      --model "$dir/fold0/control/control.json" $REF ${SETS[$v]} >>"$dir/train.log" 2>&1
  $PY benchmarks/eval_real.py --model "$dir/fold0/control/control.json" --config training/configs/oct2017-real.json \
      --out "$dir" --threads 2 >"$dir/eval.tmp" 2>>"$dir/train.log" && mv "$dir/eval.tmp" "$dir/eval.txt"
  echo "== $v: $(grep -m1 -i 'balanced' "$dir/eval.txt" 2>/dev/null)"
done
