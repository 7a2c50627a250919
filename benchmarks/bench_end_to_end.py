"""File to decision for one macular cube, the way the app does it:

    DICOM OPT file (128 B-scans of 496 x 512, written with core.io.write_opt)
      -> core.io.open_path -> quality -> preprocess -> model (logits + CAMs) -> aggregate
      -> every CAM upsampled to the B-scan size (what the viewer and the report use)

The same cube uncompressed and as JPEG 2000 lossless (--compression), each screened --repeat times:
prints the CPU and its kernels, each step's median time and share, the total against issue 12's
targets (<= 2 s uncompressed, <= 3 s JPEG 2000; everything outside the model forward <= 25 %), and
the peak resident memory of the process.
Uses the bundled model card when present (resources/models/octscreen-oct2017.json), else
exports a random efficientnet_b2 at --size to a temp folder (speed does not depend on weights).

    python benchmarks/bench_end_to_end.py
    python benchmarks/bench_end_to_end.py --bscans 8 --size 128 --arch test_efficientnet --random --repeat 1  # smoke
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _peak_rss_mb() -> float:
    """Peak resident set size of this process in MB (Linux reports KB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _volume(n: int, h: int, w: int, seed: int):
    """A simulated CNV cube (core.synthetic), or numpy layers + speckle if the simulator is absent."""
    try:
        from core.synthetic import simulate_volume
    except ImportError:
        simulate_volume = None
    if simulate_volume is not None:
        return simulate_volume("cnv", n_bscans=n, height=h, width=w, seed=seed)
    from core.volume import OctVolume, PatientInfo

    rng = np.random.default_rng(seed)
    rows = np.arange(h)[:, None]
    band = ((rows > 0.35 * h) & (rows < 0.6 * h)).astype(np.float32) * 0.5 + 0.06
    b = np.clip(band[None] * rng.gamma(4.0, 0.25, (n, h, w)), 0, 1)
    return OctVolume((b * 255).astype(np.uint8), laterality="OD", patient=PatientInfo("BENCH"))


def _card(args, tmp: Path):
    from core.inference import default_card_path
    from core.modelcard import ModelCard, load_card
    from core.models import build
    from core.onnx_export import export_model_files

    if args.model is None and not args.random and default_card_path().is_file():
        args.model = default_card_path()
    if args.model is not None:
        shown = Path(args.model).resolve()
        root = Path(__file__).resolve().parents[1]
        shown = shown.relative_to(root) if shown.is_relative_to(root) else Path(shown.name)
        return load_card(args.model), f"model card {shown}"
    import torch

    torch.manual_seed(0)
    model, _ = build(args.arch, 3)
    card = ModelCard(
        name="bench", arch=args.arch, classes=["normal", "drusen", "cnv"], input_size=(args.size, args.size), demo=True
    )
    t = time.perf_counter()
    path = export_model_files(model.eval(), card, tmp, int8=args.int8)
    return load_card(path), f"random {args.arch} at {args.size} px (exported in {time.perf_counter() - t:.1f} s)"


#: issue 12's targets for a 128-B-scan cube, file -> decision with every CAM, on 2 cores
TARGETS = {"uncompressed": 2.0, "j2k": 3.0}
OUTSIDE_TARGET = 0.25
SYNTAXES = {"uncompressed": None, "j2k": "JPEG2000Lossless"}


def _screen_once(screener, card, path: Path) -> tuple[dict[str, float], float, object, object]:
    """One file -> decision pass: (step seconds, total, the volume result, the eye decision)."""
    from core.aggregate import decide
    from core.io import open_path

    steps: dict[str, float] = {}
    t0 = time.perf_counter()
    t = time.perf_counter()
    (volume,) = open_path(path)
    steps["read"] = time.perf_counter() - t
    vr = screener.screen(volume)
    steps.update({k: vr.timings[k] for k in ("quality", "preprocess", "model")})
    t = time.perf_counter()
    eye = decide(vr, card.thresholds)
    steps["aggregate"] = time.perf_counter() - t
    t = time.perf_counter()
    size = volume.bscans.shape[1:]
    for i in range(vr.n):
        for c in range(len(vr.classes)):
            vr.cam(i, c, size=size)
    steps["all CAMs upsampled"] = time.perf_counter() - t
    return steps, time.perf_counter() - t0, vr, eye


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bscans", type=int, default=128)
    ap.add_argument("--height", type=int, default=496)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--model", type=Path, default=None, help="model card (default: bundled demo, else random)")
    ap.add_argument("--random", action="store_true", help="ignore the bundled demo: a random --arch at --size")
    ap.add_argument("--arch", default="efficientnet_b2", help="architecture of the random fallback model")
    ap.add_argument("--size", type=int, default=384, help="input size of the random fallback model")
    ap.add_argument("--backend", choices=["auto", "onnx", "torch"], default="auto")
    ap.add_argument("--int8", action="store_true", help="use the int8 ONNX model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument(
        "--compression",
        choices=["both", *SYNTAXES],
        default="both",
        help="the cube uncompressed, as JPEG 2000 lossless, or both side by side (default)",
    )
    ap.add_argument("--repeat", type=int, default=3, help="passes per file; each step's median is printed")
    args = ap.parse_args(argv)
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")

    import torch

    from core.inference import Screener
    from core.io import write_opt

    try:
        from benchmarks.machine import cpu
    except ImportError:  # run as a script from elsewhere
        from machine import cpu  # type: ignore[no-redef]

    torch.set_num_threads(args.threads)
    kinds = list(SYNTAXES) if args.compression == "both" else [args.compression]
    rows = {}
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        card, what = _card(args, tmp)
        print(f"CPU: {cpu()}; {args.threads} thread(s), batch {args.batch}")
        print(f"model: {what}; {card.name} v{card.version} {card.arch} input {card.input_size}")
        t = time.perf_counter()
        vol = _volume(args.bscans, args.height, args.width, seed=7)
        files = {k: write_opt(vol, tmp / f"cube-{k}.dcm", transfer_syntax=SYNTAXES[k]) for k in kinds}
        del vol
        sizes = ", ".join(f"{k} {p.stat().st_size / 1e6:.1f} MB" for k, p in files.items())
        print(
            f"volume: {args.bscans} x {args.height} x {args.width} DICOM OPT ({sizes}; simulated + written in "
            f"{time.perf_counter() - t:.1f} s); median of {args.repeat} pass(es) per file"
        )
        rss_before = _peak_rss_mb()
        screener = Screener(card, backend=args.backend, threads=args.threads, batch_size=args.batch, int8=args.int8)
        screener.predict(np.zeros((1, 3, *card.input_size), np.float32))  # warm-up (session init)
        for k, path in files.items():
            passes = [_screen_once(screener, card, path) for _ in range(args.repeat)]
            steps = {s: float(np.median([p[0][s] for p in passes])) for s in passes[0][0]}
            totals = [p[1] for p in passes]
            rows[k] = (steps, float(np.median(totals)), min(totals), max(totals), passes[-1][2], passes[-1][3])

    vr = next(iter(rows.values()))[4]
    print(f"backend {vr.backend}")
    for k, (steps, total, lo, hi, vr, eye) in rows.items():
        print(f"\n{k}: {'step':22s} {'seconds':>9s} {'ms/B-scan':>10s} {'share':>7s}")
        for s, v in steps.items():
            print(f"{'':{len(k) + 2}s}{s:22s} {v:9.2f} {1000 * v / vr.n:10.1f} {100 * v / total:6.1f}%")
        print(
            f"{'':{len(k) + 2}s}{'total':22s} {total:9.2f} {1000 * total / vr.n:10.1f}   "
            f"({vr.n / total:.1f} B-scans/s; passes {lo:.2f}-{hi:.2f} s)"
        )
        outside = 1.0 - steps["model"] / total
        print(
            f"{'':{len(k) + 2}s}target <= {TARGETS[k]:.1f} s: {'met' if total <= TARGETS[k] else 'NOT met'}; "
            f"outside the model forward {100 * outside:.0f} % (target <= {100 * OUTSIDE_TARGET:.0f} %: "
            f"{'met' if outside <= OUTSIDE_TARGET else 'NOT met'})"
        )
        print(
            f"{'':{len(k) + 2}s}decision: {eye.headline}; gradable {eye.n_gradable}/{eye.n_bscans}; "
            f"evidence {[i + 1 for i in eye.evidence]}"
        )
    if len(rows) == 2:
        (a, ta), (b, tb) = ((k, v[1]) for k, v in rows.items())
        print(f"\n{b} / {a}: x{tb / ta:.2f} the time")
    print(f"peak RSS: {_peak_rss_mb():.0f} MB (before screening: {rss_before:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
