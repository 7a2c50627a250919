"""The cross-validation table from the folds finished so far (a crossval run writes its
crossval.txt only when every fold is done; a long run on 2 cores spans sessions with --resume).

    python benchmarks/crossval_report.py runs/oct2017-real-cv [--out docs/results/crossval_oct2017_real.txt]

Reads ``OUT/fold<i>/<model>/test_metrics.json`` of the teacher (or the ensemble teacher and its
members), the distilled student and the control, and prints per B-scan (balanced accuracy = macro
sensitivity; per-class sensitivity) and per eye (the app's decision on each test patient's B-scans),
mean ± sd over the finished folds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.train.metrics import fold_table  # noqa: E402

MODELS = {"teacher": "teacher", "ensemble": "teacher (ensemble)"}
"""Model folders and their table rows, in table order; then every ``control-<name>`` folder (a member of an
ensemble teacher, ``crossval.teacher = "ensemble"``) as ``member <name>``, then the two students."""
STUDENTS = {"student": "student (distilled)", "control": "student (control)"}


def models(run: Path) -> dict[str, str]:
    """The model folders of ``run`` (any fold) and their row names, in table order."""
    members = sorted({p.name for p in run.glob("fold*/control-*") if p.is_dir()})
    return {**MODELS, **{m: f"member {m.removeprefix('control-')}" for m in members}, **STUDENTS}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="the crossval output folder (holds splits.json and fold<i>/)")
    ap.add_argument("--out", type=Path, help="also write the table here")
    a = ap.parse_args(argv)
    plan = json.loads((a.run / "splits.json").read_text(encoding="utf-8"))
    n_folds = len(plan["folds"])
    per_model: dict[str, list[dict]] = {}
    done: dict[str, list[int]] = {}
    for folder, name in models(a.run).items():
        for i in range(n_folds):
            f = a.run / f"fold{i}" / folder / "test_metrics.json"
            if f.is_file():
                per_model.setdefault(name, []).append(json.loads(f.read_text(encoding="utf-8")))
                done.setdefault(name, []).append(i)
    if not per_model:
        print(f"{a.run}: no finished fold yet")
        return 1
    classes = next(iter(per_model.values()))[0]["classes"]
    lines = [
        f"{a.run}: split {plan.get('hash', '?')}, {n_folds} patient-level folds; finished: "
        + "; ".join(f"{k} folds {[i + 1 for i in v]}" for k, v in done.items()),
        "",
        "Per B-scan (test patients of each fold; balanced accuracy = macro_sensitivity):",
        fold_table(per_model, keys=("accuracy", "macro_sensitivity", "macro_auc", "ece")),
        "",
        "Per-class sensitivity per B-scan:",
        fold_table(
            {k: [{c: m["per_class"][c]["sensitivity"] for c in classes} for m in v] for k, v in per_model.items()},
            keys=tuple(classes),
        ),
    ]
    eyes = {k: [m["per_eye"] for m in v if m.get("per_eye")] for k, v in per_model.items()}
    if all(eyes.values()):
        lines += [
            "",
            "Per eye (the app's decision on each test patient's B-scans, thresholds calibrated on the fold's "
            "validation patients):",
            fold_table(eyes, keys=("accuracy", "macro_sensitivity", "macro_auc")),
        ]
    text = "\n".join(lines)
    print(text)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
