"""Per-B-scan inference speed on the CPU, side by side in one run:

    teacher convnextv2_large (PyTorch)  |  student efficientnet_b2 (PyTorch eager)
    student ONNX fp32  |  student ONNX int8 (dynamic)  |  student ONNX int8 (static QDQ)

Random weights (speed does not depend on them); the ONNX models carry the CAM output, as in the
app. Prints images/s, ms per B-scan, the speed ratio against ONNX fp32, and for the int8 models
their agreement with fp32 (max |delta p|, argmax agreement, CAM correlation) on OCT-like inputs.

    python benchmarks/bench_inference.py                   # 384 px, 2 threads (~5 min on 2 cores)
    python benchmarks/bench_inference.py --size 128 --reps 2 --teacher-reps 1   # smoke test
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.inference import softmax  # noqa: E402


def _time(fn, x: np.ndarray, reps: int, warmup: int = 1) -> float:
    """Median seconds per call of fn(x) after warm-up."""
    for _ in range(warmup):
        fn(x)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _time_interleaved(fns: dict[str, object], x: np.ndarray, reps: int) -> dict[str, float]:
    """Median seconds per call of each fn(x), timed round-robin (one call of each per round) so
    that a busy or throttling CPU affects all models alike."""
    for fn in fns.values():
        fn(x)  # warm-up: session init, allocator, caches
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn(x)
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def _ort_session(path: Path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # No busy-waiting of idle pool threads: they would steal the CPU from the model timed next.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def _agreement(ref: tuple[np.ndarray, np.ndarray], got: tuple[np.ndarray, np.ndarray]) -> str:
    """How close a quantized model's (logits, cams) are to fp32's (random weights give near-uniform
    probabilities, so the logits' relative error and the CAM correlation say more than |dp|)."""
    rel = float(np.abs(ref[0] - got[0]).max() / max(float(np.abs(ref[0]).max()), 1e-12))
    agree = float((softmax(ref[0]).argmax(1) == softmax(got[0]).argmax(1)).mean())
    r = float(np.corrcoef(ref[1].ravel(), got[1].ravel())[0, 1])
    return f"logit rel err {rel:.3f}, argmax {100 * agree:.0f} %, CAM r {r:.3f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=384, help="input size in pixels (square)")
    ap.add_argument("--reps", type=int, default=5, help="timed repetitions per student model")
    ap.add_argument("--teacher-reps", type=int, default=2, help="timed repetitions of the teacher (slow)")
    ap.add_argument("--batch", type=int, default=8, help="B-scans per forward pass (students)")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (torch and ONNX Runtime)")
    ap.add_argument("--no-teacher", action="store_true", help="skip the ConvNeXtV2-L teacher")
    ap.add_argument("--teacher", default="convnextv2_large", help="teacher architecture")
    ap.add_argument("--student", default="efficientnet_b2", help="student architecture")
    args = ap.parse_args(argv)

    import torch

    from core.cam import CamNet
    from core.modelcard import ModelCard
    from core.models import build
    from core.onnx_export import export_onnx, quantize_int8, random_calibration

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    size = (args.size, args.size)
    calib = random_calibration(size, n_batches=4, batch_size=4, seed=1)
    x = np.concatenate(random_calibration(size, n_batches=1, batch_size=args.batch, seed=2))
    print(f"input {args.size}x{args.size}, batch {args.batch}, {args.threads} thread(s), torch {torch.__version__}")

    student, _ = build(args.student, 3)
    student.eval()
    net = CamNet(student).eval()

    def torch_run(model):
        def f(a):
            with torch.inference_mode():
                return model(torch.from_numpy(a))

        return f

    fns: dict[str, object] = {f"student {args.student} PyTorch eager": torch_run(net)}
    notes: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as td:
        card = ModelCard(name="bench", arch=args.student, classes=["normal", "drusen", "cnv"], input_size=size)
        fp32 = export_onnx(student, card, Path(td) / "s.onnx")
        sess = _ort_session(fp32, args.threads)
        fns["student ONNX fp32"] = lambda a: sess.run(["logits", "cams"], {"input": a})
        notes["student ONNX fp32"] = f"{fp32.stat().st_size / 1e6:.1f} MB"
        ref = sess.run(["logits", "cams"], {"input": x})
        for method in ("dynamic", "static"):
            name = f"student ONNX int8 ({method})"
            try:
                q = quantize_int8(
                    fp32, Path(td) / f"s.{method}.onnx", calib if method == "static" else None, method=method
                )
                s = _ort_session(q, args.threads)
            except Exception as e:  # report, keep benchmarking the rest
                notes[name] = f"failed: {type(e).__name__}: {e}"[:90]
                continue
            fns[name] = lambda a, s=s: s.run(["logits", "cams"], {"input": a})
            notes[name] = f"{q.stat().st_size / 1e6:.1f} MB; " + _agreement(ref, fns[name](x))
        per_call = _time_interleaved(fns, x, args.reps)
    rows: list[tuple[str, float, str]] = [
        (k, per_call.get(k, float("nan")) / len(x), notes.get(k, ""))
        for k in [*fns, *(n for n in notes if n not in fns)]
    ]

    if not args.no_teacher:
        teacher, _ = build(args.teacher, 3)
        teacher.eval()
        one = x[:1]
        t_teacher = _time(torch_run(teacher), one, args.teacher_reps)
        rows.insert(0, (f"teacher {args.teacher} PyTorch", t_teacher, "batch 1"))

    base = next(t for n, t, _ in rows if "ONNX fp32" in n)
    print(f"\n{'model':42s} {'img/s':>8s} {'ms/img':>9s} {'vs ONNX fp32':>13s}  notes")
    for name, t, note in rows:
        if t != t:  # nan
            print(f"{name:42s} {'-':>8s} {'-':>9s} {'-':>13s}  {note}")
            continue
        print(f"{name:42s} {1 / t:8.2f} {1000 * t:9.1f} {base / t:12.2f}x  {note}")
    print("\n(ratios > 1 are faster than ONNX fp32; random weights, CAM output included for students)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
