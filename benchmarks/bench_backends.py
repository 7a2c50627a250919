"""Inference backends side by side on the bundled model (issue 12): speed, FLOPs, and what changes.

    python benchmarks/bench_backends.py [--out runs/oct2017-real] [--repeat 5] [--calibration 128]

Backends: ONNX Runtime fp32 (the default), ONNX Runtime int8, OpenVINO f32, OpenVINO int8 (NNCF),
OpenVINO bf16 (emulated, and slow, where the CPU lacks native bf16), PyTorch.
- int8: both quantized here, from the card's fp32 ONNX, calibrated on the same real *training*
  B-scans of the bundled recipe's split (``--calibration`` of them, one per patient, the classes
  alike; never a validation patient, never the test-only sample). ONNX Runtime int8:
  ``core.onnx_export.quantize_int8`` (static QDQ, per-channel int8 weights, uint8 activations)
  into a temporary folder, run by a ``Screener(int8=True)`` on a copy of the card that names it.
  OpenVINO int8: ``nncf.quantize`` (default preset, one B-scan per calibration item) on the
  OpenVINO model read from the fp32 ONNX, compiled for the CPU with 2 inference threads and f32 for
  what stays unquantized, as the OpenVINO f32 backend. Without nncf (``pip install nncf``; not a
  dependency of the app) the script says why and carries on without it.
- Start-up: the time to create each backend's session (for int8: from the quantized model; the
  quantization itself is printed apart).
- Speed: ms per B-scan, batches of 16 at the card's input size, 2 threads, the backends alternating
  so that a busy machine slows them alike; the model's FLOPs per B-scan (torch's FlopCounterMode,
  one multiply-add = 2 FLOPs) and the GFLOP/s each reaches (int8: the same nominal FLOPs, as
  integer operations).
- Accuracy: on the validation patients of the bundled recipe's split (208 real B-scans) and the
  committed test-only sample: argmax agreement with ONNX Runtime fp32, balanced accuracy and its
  change, the largest probability change, and the CAMs' agreement (correlation, largest change
  relative to the range; the median correlation too).
A backend may ship (and be the default) only with argmax agreement >= 99 % and a balanced-accuracy
change of at most 0.5 pp on the validation patients; the last line says which pass.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import eval_real  # noqa: E402
from machine import cpu  # noqa: E402

from core.inference import Screener, _openvino, default_card_path, softmax  # noqa: E402
from core.modelcard import ModelCard, load_card, sha256_file  # noqa: E402
from core.onnx_export import quantize_int8  # noqa: E402
from core.preprocess import preprocess_bscans  # noqa: E402
from core.train.data import Sample, read_grey  # noqa: E402
from core.train.metrics import classification_metrics  # noqa: E402
from core.train.splits import samples_of  # noqa: E402

#: The ship rule of issue 12, on the validation patients.
MIN_AGREEMENT, MAX_CHANGE_PP = 0.99, 0.5


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


def _cam_agreement(ref: np.ndarray, other: np.ndarray) -> tuple[float, float, float]:
    """The CAMs' correlation per B-scan (smallest, median) and the largest change relative to the range."""
    a, b = ref.reshape(len(ref), -1).astype(np.float64), other.reshape(len(other), -1).astype(np.float64)
    corr = [np.corrcoef(x, z)[0, 1] for x, z in zip(a, b, strict=True) if x.std() > 0 and z.std() > 0]
    rel = np.abs(a - b).max(axis=1) / np.maximum(a.max(axis=1) - a.min(axis=1), 1e-9)
    return float(np.min(corr)), float(np.median(corr)), float(rel.max())


def _preprocess(card: ModelCard, samples: list[Sample]) -> np.ndarray:
    return np.concatenate(
        [preprocess_bscans(read_grey(s.path), card.input_size, card.mean, card.std, card.aspect) for s in samples]
    )


def _split(a, card: ModelCard) -> tuple[list[Sample], list[Sample], str]:
    """(validation samples, real training samples, what the validation samples are) of the recipe's split."""
    from training.config import load_config
    from training.recipes import prepare

    ws = prepare(load_config(a.config), a.out)
    fold = ws.plan.folds[0]
    if card.split_hash and card.split_hash != ws.plan.hash:
        print(f"(warning: split {ws.plan.hash} is not the card's split {card.split_hash})")
    what = f"validation patients of fold 0 (split {ws.plan.hash}; the thresholds were set on them)"
    return samples_of(ws.samples, fold.val), samples_of(ws.samples, fold.train), what


def _calibration_samples(
    train: list[Sample], classes: list[str], n: int, avoid: set[str], seed: int = 0
) -> list[Sample]:
    """``n`` real training B-scans, the classes alike, one per patient, none of a patient in ``avoid``."""
    rng = np.random.default_rng(seed)
    per_class = {c: [s for s in train if s.label == c and s.group not in avoid] for c in classes}
    picked: list[Sample] = []
    used: set[str] = set()
    queues = {c: [ss[i] for i in rng.permutation(len(ss))] for c, ss in per_class.items()}
    while len(picked) < n and any(queues.values()):
        for c in classes:
            q = queues[c]
            while q and q[0].group in used:
                q.pop(0)
            if q and len(picked) < n:
                s = q.pop(0)
                picked.append(s)
                used.add(s.group)
    return picked


class _OpenVinoInt8:
    """The card's fp32 ONNX read by OpenVINO, quantized by NNCF on ``calibration`` (one preprocessed
    B-scan per item), compiled for the CPU as ``core.inference``'s OpenVINO f32 backend compiles
    (latency hint, f32 for what stays unquantized, ``threads`` inference threads); ``predict`` as
    ``Screener.predict`` (batches of 16, softmax of the logits, the CAMs as they come)."""

    def __init__(self, card: ModelCard, calibration: list[np.ndarray], threads: int, timings: dict[str, float]):
        ov = _openvino()  # first: OpenVINO's (and so NNCF's) telemetry off
        if ov is None:
            raise RuntimeError("openvino is not installed (pip install openvino)")
        try:
            import nncf
        except ImportError:
            raise RuntimeError("nncf is not installed (pip install nncf)") from None
        nncf.set_log_level(logging.ERROR)
        core = ov.Core()
        t = time.perf_counter()
        model = core.read_model(io.BytesIO(card.verified_bytes("onnx")))
        with contextlib.redirect_stdout(io.StringIO()):  # NNCF's progress bar
            quantized = nncf.quantize(model, nncf.Dataset(calibration), subset_size=len(calibration))
        timings["quantize"] = time.perf_counter() - t
        t = time.perf_counter()
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads}
        self.compiled = core.compile_model(quantized, "CPU", config)
        self.request = self.compiled.create_infer_request()
        timings["startup"] = time.perf_counter() - t
        self.card, self.batch_size = card, 16
        self.version = f"nncf {nncf.__version__}, openvino {ov.__version__.split('-')[0]}"

    def _forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = self.request.infer({0: np.ascontiguousarray(x, dtype=np.float32)})
        logits = np.asarray(out[self.compiled.output("logits")], dtype=np.float32)
        return softmax(logits), np.asarray(out[self.compiled.output("cams")], dtype=np.float32).copy()

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        parts = [self._forward(x[i : i + self.batch_size]) for i in range(0, len(x), self.batch_size)]
        return np.concatenate([p for p, _ in parts]), np.concatenate([c for _, c in parts])


def _onnx_int8(card: ModelCard, calibration: list[np.ndarray], folder: Path, threads: int, timings: dict[str, float]):
    """``quantize_int8`` of the card's fp32 ONNX into ``folder``, run by a Screener on a copy of the
    card that names it (the way a card with an int8 file runs: ``Screener(card, int8=True)``)."""
    dst = folder / f"{card.name}.int8.onnx"
    t = time.perf_counter()
    quantize_int8(card.verified_file("onnx"), dst, calibration, mean=card.mean, std=card.std)
    timings["quantize"] = time.perf_counter() - t
    copy = dataclasses.replace(
        card, path=folder / f"{card.name}.json", onnx_int8_file=dst.name, onnx_int8_sha256=sha256_file(dst)
    )
    t = time.perf_counter()
    s = Screener(copy, backend="onnx", threads=threads, int8=True)
    timings["startup"] = time.perf_counter() - t
    return s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="training/configs/oct2017-real.json")
    ap.add_argument("--out", default="runs/oct2017-real", help="the recipe's output folder (splits.json)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--calibration", type=int, default=128, help="training B-scans to calibrate int8 on")
    a = ap.parse_args()
    card_path = default_card_path()
    card = load_card(card_path)
    classes = list(card.classes)

    val, train, what = _split(a, card)
    sample_folder = argparse.Namespace(folder=str(REPO / "tests" / "data" / "oct2017-sample"), config=None, out=None)
    test_only, _, test_what = eval_real._samples(sample_folder)
    sources = [(val, what), (test_only, test_what.replace(str(REPO) + "/", ""))]
    avoid = {s.group for s in val} | {s.group for s in test_only}
    calib = _calibration_samples(train, classes, a.calibration, avoid)
    calib_x = _preprocess(card, calib)
    counts = ", ".join(f"{c} {sum(s.label == c for s in calib)}" for c in classes)

    screeners: dict[str, object] = {}
    startup: dict[str, float] = {}
    quantized: dict[str, float] = {}
    notes: list[str] = []
    tmp = tempfile.TemporaryDirectory(prefix="bench-int8-")
    makers: list[tuple[str, Callable[[dict[str, float]], object]]] = [
        ("onnxruntime fp32", lambda t: Screener(card_path, backend="onnx", threads=a.threads)),
        (
            "onnxruntime int8",
            lambda t: _onnx_int8(
                card, [calib_x[i : i + 16] for i in range(0, len(calib_x), 16)], Path(tmp.name), a.threads, t
            ),
        ),
        ("openvino f32", lambda t: Screener(card_path, backend="openvino", threads=a.threads)),
        (
            "openvino int8",
            lambda t: _OpenVinoInt8(card, [calib_x[i : i + 1] for i in range(len(calib_x))], a.threads, t),
        ),
        ("openvino bf16", lambda t: Screener(card_path, backend="openvino-bf16", threads=a.threads)),
        ("pytorch fp32", lambda t: Screener(card_path, backend="torch", threads=a.threads)),
    ]
    for name, make in makers:
        timings: dict[str, float] = {}
        t = time.perf_counter()
        try:
            screeners[name] = make(timings)
        except Exception as e:  # OpenVINO or nncf not installed, or a quantizer that fails
            notes.append(f"({name} left out: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")
            continue
        startup[name] = timings.get("startup", time.perf_counter() - t)
        if "quantize" in timings:
            quantized[name] = timings["quantize"]
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
    print(
        f"int8 calibration: {len(calib)} real training B-scans of {len({s.group for s in calib})} patients "
        f"({counts}), none of a validation or test-only patient; quantized in "
        + ", ".join(f"{quantized[k]:.1f} s ({k})" for k in quantized)
        + (f"; {screeners['openvino int8'].version}" if "openvino int8" in screeners else "")
    )
    for note in notes:
        print(note)
    print(f"speed (batches of 16, best of {a.repeat}):")
    base = min(times["onnxruntime fp32"])
    for name, ts in times.items():
        t = min(ts)
        print(
            f"  {name:18s} {1e3 * t:6.1f} ms/B-scan  {flops / t / 1e9:6.1f} GFLOP/s  x{base / t:4.2f} vs onnxruntime"
            f"  (start-up {startup[name]:.2f} s)"
        )
    verdict: dict[str, bool] = {}
    for k, (samples, label) in enumerate(sources):
        samples = [s for s in samples if s.label in classes]
        y = np.array([classes.index(s.label) for s in samples])
        xs = _preprocess(card, samples)
        outs = {name: s.predict(xs) for name, s in screeners.items()}
        ref_p, ref_c = outs["onnxruntime fp32"]
        ref_bal = _balanced(y, ref_p, classes)
        print(f"{len(y)} B-scans: {label}")
        for name, (p, c) in outs.items():
            agree = float((p.argmax(1) == ref_p.argmax(1)).mean())
            bal = _balanced(y, p, classes)
            change = 100 * (bal - ref_bal)
            if k == 0:
                verdict[name] = agree >= MIN_AGREEMENT and abs(change) <= MAX_CHANGE_PP + 1e-9
            if c is None or ref_c is None:
                cam = "no CAMs"
            else:
                corr, median, cam_change = _cam_agreement(ref_c, c)
                cam = f"CAM corr >= {corr:.4f} (median {median:.4f}), max change {100 * cam_change:.2f} % of range"
            print(
                f"  {name:18s} argmax agreement {100 * agree:5.1f} % ({int(np.sum(p.argmax(1) != ref_p.argmax(1)))} "
                f"differ)  balanced {100 * bal:5.1f} % ({change:+.2f} pp)  max prob change "
                f"{np.abs(p - ref_p).max():.4f}  {cam}"
            )
    passing = [n for n in screeners if verdict.get(n)]
    fastest = min(passing, key=lambda n: min(times[n]), default=None)
    print(
        f"ship rule (validation patients: argmax agreement >= {100 * MIN_AGREEMENT:.0f} %, balanced-accuracy change "
        f"<= {MAX_CHANGE_PP} pp): pass "
        + (", ".join(passing) or "none")
        + "; fail "
        + (", ".join(n for n in screeners if not verdict.get(n)) or "none")
        + (f"; fastest that passes: {fastest} ({1e3 * min(times[fastest]):.1f} ms/B-scan)" if fastest else "")
    )
    tmp.cleanup()


if __name__ == "__main__":
    main()
