#!/usr/bin/env bash
# Issue 9: KD-OCT with a teacher stronger than its student. The Lite2 320 px teacher of the recipe is
# weaker than the Lite2 260 px control it should teach (cross-validation), so here the teacher is
# the ensemble of K controls of the bundled recipe (training/configs/oct2017-real.json: Lite2 260 px,
# 25 % synthetic B-scans), trained with seeds 0..K-1 on the same patient-level split, and the
# student is the same Lite2 260 px distilled online from the mean of their logits (alpha 0.5, T 4).
# Every model gets per-eye thresholds from the validation eyes and the app's evaluation
# (benchmarks/eval_real.py, validation patients of split 8f4616a4c7b741c6), so the KD student, each
# control (seed to seed spread) and the teacher ensemble's accuracy (in the student's train.log and
# card) are side by side. Resumable: rerun the script; finished steps are skipped.
# MEMBERS names the teachers (default "seed0 seed1"): seed<s> is the bundled recipe with runtime.seed=s,
# lite0-224 the same recipe with the Lite0 at 224 px (seed 0), for an ensemble of two architectures.
#   bash training/ensemble_kd.sh                          (seeds 0 and 1; MEMBERS="seed0 seed1 seed2")
#   MEMBERS="seed0 lite0-224" bash training/ensemble_kd.sh
# STUDENT=lite0-224 distils the Lite0 at 224 px instead of the recipe's Lite2 260 px (its control is
# the lite0-224 member; the folder gets "-to-lite0-224").
#   MEMBERS="seed0 lite0-224" STUDENT=lite0-224 bash training/ensemble_kd.sh
#   results: $OUT/<member>/eval.txt, $OUT/kd/eval.txt (kd-<m1>+<m2> for other MEMBERS)
set -u
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/ensemble-kd}
CFG=training/configs/oct2017-real.json
read -r -a MEMBERS <<<"${MEMBERS:-seed0 seed1}"
member_sets() {  # the --set options of a member's control
  case $1 in
    seed[0-9]*) echo "--set runtime.seed=${1#seed}" ;;
    lite0-224) echo "--set student.arch=tf_efficientnet_lite0 --set student.input_size=224" ;;
    *) echo "unknown member $1 (seed<N> or lite0-224)" >&2; exit 2 ;;
  esac
}
mkdir -p "$OUT"

evaluate() {  # $1: folder of the run, $2: its card
  [ -f "$1/eval.txt" ] && return 0
  $PY -m app.cli train calibrate --config $CFG --out "$1" --model "$2" >>"$1/train.log" 2>&1 &&
    $PY benchmarks/eval_real.py --model "$2" --config $CFG --out "$1" --threads 2 >"$1/eval.tmp" 2>>"$1/train.log" &&
    mv "$1/eval.tmp" "$1/eval.txt"
  echo "== $1: $(grep -m1 -i 'balanced' "$1/eval.txt" 2>/dev/null)"
}

train_once() {  # $1: run folder, $2: model name (control|student), $3: what, then the train action and options
  local dir=$1 name=$2 what=$3; shift 3
  mkdir -p "$dir"
  [ -f "$dir/fold0/$name/$name.json" ] && return 0
  echo "== $what: training ($(date -u +%H:%M))"
  local resume=""; [ -d "$dir/fold0/$name" ] && resume="--resume"
  $PY -m app.cli train "$@" --config $CFG --out "$dir" --threads 2 $resume >>"$dir/train.log" 2>&1 ||
    { echo "== $what: training failed (see $dir/train.log)"; exit 1; }
}

teachers=()
for m in "${MEMBERS[@]}"; do
  sets=$(member_sets "$m") || exit 2
  # shellcheck disable=SC2086  # $sets is a list of options
  train_once "$OUT/$m" control "control $m" student $sets
  teachers+=(--teacher "$OUT/$m/fold0/control")
done
kd=kd; [ "${MEMBERS[*]}" = "seed0 seed1" ] || kd="kd-$(IFS=+; echo "${MEMBERS[*]}")"
student_sets=""
if [ -n "${STUDENT:-}" ]; then student_sets=$(member_sets "$STUDENT") || exit 2; kd="$kd-to-$STUDENT"; fi
dir="$OUT/$kd"
card="$dir/fold0/student/student.json"
# shellcheck disable=SC2086  # $student_sets is a list of options
train_once "$dir" student "student ${STUDENT:-(recipe)} distilled from ${MEMBERS[*]}" distill "${teachers[@]}" $student_sets
grep -m1 "teacher (" "$dir/train.log"  # the ensemble on the validation patients
# the app's evaluation of every model, after the training (so it does not share the cores with it)
for m in "${MEMBERS[@]}"; do evaluate "$OUT/$m" "$OUT/$m/fold0/control/control.json"; done
evaluate "$dir" "$card"
