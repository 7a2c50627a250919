"""Inference backends side by side on the bundled model (issue 12): speed, FLOPs, and what changes.

    python benchmarks/bench_backends.py [--out runs/oct2017-real] [--repeat 5]

Backends: ONNX Runtime fp32 (the default), OpenVINO f32, OpenVINO bf16 (emulated, and slow, where
the CPU lacks native bf16), PyTorch.
- Start-up: the time to create each backend's session.
- Speed: ms per B-scan, batches of 16 at the card's input size, 2 threads, the backends alternating
  so that a busy machine slows them alike; the model's FLOPs per B-scan (torch's FlopCounterMode,
  one multiply-add = 2 FLOPs) and the GFLOP/s each reaches.
- Accuracy: on the validation patients of the bundled recipe's split (208 real B-scans) and the
  committed test-only sample: argmax agreement with ONNX Runtime, balanced accuracy, the largest
  probability change, and the CAMs' agreement (correlation, largest change relative to the range).
A backend may be the default only with argmax agreement >= 99 % and a balanced-accuracy change
<= 0.5 pp.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import eval_real  # noqa: E402
from machine import cpu  # noqa: E402

from core.inference import Screener, default_card_path  # noqa: E402
from core.preprocess import preprocess_bscans  # noqa: E402
from core.train.data import read_grey  # noqa: E402
from core.train.metrics import classification_metrics  # noqa: E402


def _flops(card) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from core.models import build

    model, _ = build(card.arch, len(card.classes))
    model.eval()
    h, w = card.input_size
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, h, w))
    return float(counter.get_total_flops())


def _balanced(y: np.ndarray, p: np.ndarray, classes: list[str]) -> float:
    m = classification_metrics(y, p, classes)
    return float(np.mean([v["sensitivity"] for v in m["per_class"].values() if v["support"]]))


def _cam_agreement(ref: np.ndarray, other: np.ndarray) -> tuple[float, float]:
    a, b = ref.reshape(len(ref), -1).astype(np.float64), other.reshape(len(other), -1).astype(np.float64)
    corr = [np.corrcoef(x, z)[0, 1] for x, z in zip(a, b, strict=True) if x.std() > 0 and z.std() > 0]
    rel = np.abs(a - b).max(axis=1) / np.maximum(a.max(axis=1) - a.min(axis=1), 1e-9)
    return float(np.min(corr)), float(rel.max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="training/configs/oct2017-real.json")
    ap.add_argument("--out", default="runs/oct2017-real", help="the recipe's output folder (splits.json)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    card_path = default_card_path()
    screeners: dict[str, Screener] = {}
    startup: dict[str, float] = {}
    for name, backend in (
        ("onnxruntime fp32", "onnx"),
        ("openvino f32", "openvino"),
        ("openvino bf16", "openvino-bf16"),
        ("pytorch fp32", "torch"),
    ):
        t = time.perf_counter()
        try:
            screeners[name] = Screener(card_path, backend=backend, threads=a.threads)
        except Exception as e:  # OpenVINO not installed
            print(f"({name}: {e})")
            continue
        startup[name] = time.perf_counter() - t
    card = screeners["onnxruntime fp32"].card
    classes = list(card.classes)
    flops = _flops(card)
    h, w = card.input_size
    x = np.random.default_rng(0).standard_normal((16, 3, h, w)).astype(np.float32)
    times: dict[str, list[float]] = {k: [] for k in screeners}
    for s in screeners.values():
        s.predict(x)
    for _ in range(a.repeat):
        for name, s in screeners.items():
            t = time.perf_counter()
            s.predict(x)
            times[name].append((time.perf_counter() - t) / len(x))
    print(f"CPU: {cpu()}; {a.threads} threads")
    print(f"model {card.name} v{card.version} ({card.arch}, {h}x{w}): {flops / 1e9:.2f} GFLOP per B-scan")
    print(f"speed (batches of 16, best of {a.repeat}):")
    base = min(times["onnxruntime fp32"])
    for name, ts in times.items():
        t = min(ts)
        print(
            f"  {name:18s} {1e3 * t:6.1f} ms/B-scan  {flops / t / 1e9:6.1f} GFLOP/s  x{base / t:4.2f} vs onnxruntime"
            f"  (start-up {startup[name]:.2f} s)"
        )
    sources = [
        argparse.Namespace(folder=None, config=a.config, out=a.out, fold=0, split="val"),
        argparse.Namespace(folder=str(REPO / "tests" / "data" / "oct2017-sample"), config=None, out=None),
    ]
    for src in sources:
        samples, _, what = eval_real._samples(src)
        samples = [s for s in samples if s.label in classes]
        y = np.array([classes.index(s.label) for s in samples])
        xs = np.concatenate(
            [preprocess_bscans(read_grey(s.path), card.input_size, card.mean, card.std, card.aspect) for s in samples]
        )
        outs = {name: s.predict(xs) for name, s in screeners.items()}
        ref_p, ref_c = outs["onnxruntime fp32"]
        ref_bal = _balanced(y, ref_p, classes)
        print(f"{len(y)} B-scans: {what.replace(str(REPO) + '/', '')}")
        for name, (p, c) in outs.items():
            agree = float((p.argmax(1) == ref_p.argmax(1)).mean())
            bal = _balanced(y, p, classes)
            if c is None or ref_c is None:
                cam = "no CAMs"
            else:
                corr, change = _cam_agreement(ref_c, c)
                cam = f"CAM corr >= {corr:.4f}, max change {100 * change:.2f} % of range"
            print(
                f"  {name:18s} argmax agreement {100 * agree:5.1f} %  balanced {100 * bal:5.1f} % "
                f"({100 * (bal - ref_bal):+.1f} pp)  max prob change {np.abs(p - ref_p).max():.4f}  {cam}"
            )


if __name__ == "__main__":
    main()
