"""Summarise the issue-9 ablations (``bash training/ablate_real.sh``): one row per variant.

    python benchmarks/ablation_report.py runs/ablate [--baseline docs/results/real_model_validation.txt]

Each variant folder holds ``eval.txt`` (``benchmarks/eval_real.py`` on the validation patients of the
shipped split) and ``train.log``. The baseline is the shipped control student evaluated the same way.
Prints per variant: balanced accuracy per B-scan with the card's aspect policy and with the other two,
macro AUC, ECE, CNV and DME sensitivity, the best validation loss and the training time.
Every number is read from what the runs printed; a variant still running is listed as such.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROW = re.compile(
    r"^\s+(squash|crop|letterbox)( \(card\))?\s+([\d.]+) %\s+([\d.]+)\s+([\d.]+)\s+"
    r"([\d.]+)/\s*([\d.]+)\s+([\d.]+)/\s*([\d.]+)\s+([\d.]+)/\s*([\d.]+)\s+([\d.]+)/\s*([\d.]+)"
)


def parse_eval(text: str) -> dict:
    out: dict = {"policies": {}}
    for line in text.splitlines():
        m = ROW.match(line)
        if not m:
            continue
        g = m.groups()
        row = {
            "balanced": float(g[2]),
            "auc": float(g[3]),
            "ece": float(g[4]),
            "cnv_sens": float(g[9]),
            "dme_sens": float(g[11]),
            "drusen_sens": float(g[7]),
        }
        out["policies"][g[0]] = row
        if g[1]:
            out["card"] = g[0]
    m = re.search(r"referral sensitivity ([\d.]+) %, specificity ([\d.]+) %.*sent home (\d+)", text)
    if m:
        out["referral"] = (float(m.group(1)), float(m.group(2)), int(m.group(3)))
    return out


def parse_log(text: str) -> dict:
    text = text.replace("\r", "\n")
    epochs = re.findall(
        r"epoch (\d+)/(\d+) train_loss [\d.]+ train_acc [\d.]+ val_loss ([\d.]+) val_acc ([\d.]+) \(([\d.]+) s", text
    )
    best = re.search(r"validation loss of the best model: ([\d.]+)", text)
    return {
        "epochs": f"{epochs[-1][0]}/{epochs[-1][1]}" if epochs else "0",
        "seconds": sum(float(e[4]) for e in epochs),
        "best_val_loss": float(best.group(1)) if best else None,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path)
    ap.add_argument(
        "--baseline",
        type=Path,
        default=Path("docs/results/real_model_v1.1.0_validation.txt"),
        help="eval_real output of the model the variants are compared with (default: the v1.1.0 control)",
    )
    a = ap.parse_args(argv)
    rows = []
    if a.baseline.is_file():
        first = a.baseline.read_text().splitlines()[0]
        m = re.match(r"model (\S+ v[\d.]+)", first)
        rows.append((f"baseline {m.group(1) if m else a.baseline.name}", parse_eval(a.baseline.read_text()), None))
    for d in sorted(p for p in a.root.iterdir() if p.is_dir()):
        ev = d / "eval.txt"
        log = parse_log((d / "train.log").read_text(errors="replace")) if (d / "train.log").is_file() else None
        rows.append((d.name, parse_eval(ev.read_text()) if ev.is_file() else None, log))
    head = (
        f"{'variant':<36} {'bal. acc (card)':>15} {'squash':>7} {'crop':>6} {'letterbox':>9} {'AUC':>6} "
        f"{'ECE':>6} {'CNV sens':>8} {'DME sens':>8} {'ref. sens/spec':>14} {'val loss':>8} {'epochs':>6} "
        f"{'train s':>7}"
    )
    print("Issue-9 ablations: the control student of oct2017-real on the shipped split's 138 validation patients")
    print("(208 B-scans), evaluated by benchmarks/eval_real.py; one change per variant (training/ablate_real.sh)\n")
    print(head)
    for name, ev, log in rows:
        if ev is None or "card" not in ev:
            state = f"running or failed (epochs {log['epochs']})" if log else "not run"
            print(f"{name:<36} {state}")
            continue
        c = ev["policies"][ev["card"]]
        pol = {k: f"{v['balanced']:.1f}" for k, v in ev["policies"].items()}
        ref = ev.get("referral")
        ref_s = f"{ref[0]:.1f}/{ref[1]:.1f}" if ref else "-"
        loss_s = f"{log['best_val_loss']:.3f}" if log and log["best_val_loss"] is not None else "-"
        ep_s = log["epochs"] if log else "-"
        sec_s = f"{log['seconds']:.0f}" if log else "-"
        print(
            f"{name:<36} {c['balanced']:>13.1f} % {pol.get('squash', '-'):>7} {pol.get('crop', '-'):>6} "
            f"{pol.get('letterbox', '-'):>9} {c['auc']:>6.3f} {c['ece']:>6.3f} {c['cnv_sens']:>7.1f}% "
            f"{c['dme_sens']:>7.1f}% {ref_s:>14} {loss_s:>8} {ep_s:>6} {sec_s:>7}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
