"""The work around the model on one thread or on several, side by side (issue 12).

    python benchmarks/bench_prep_threads.py [--repeat 8] [--threads 2]

``Screener.screen`` measures quality and preprocesses the B-scans on ``Screener.cpu_workers()``
threads (OpenCV and numpy release the GIL). This screens one simulated 128 x 496 x 512 CNV cube with
the bundled model, alternating that work on 1 thread and on ``--threads`` threads (the model on
``--threads`` either way), and prints each step's median and the ratio; the results are checked to
be the same.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bscans", type=int, default=128)
    args = ap.parse_args(argv)

    from benchmarks.machine import cpu
    from core.inference import Screener, default_card_path
    from core.synthetic import simulate_volume

    vol = simulate_volume("cnv", n_bscans=args.bscans, height=496, width=512, seed=7)
    s = Screener(default_card_path(), threads=args.threads)
    s.predict(np.zeros((1, 3, *s.card.input_size), np.float32))  # warm-up
    print(f"CPU: {cpu()}; model {s.card.name} v{s.card.version} ({s.card.arch}) on {args.threads} thread(s)")
    print(f"cube: {args.bscans} x 496 x 512 (simulated CNV); median of {args.repeat} alternating passes")
    cases = {"around the model on 1 thread": 1, f"around the model on {args.threads} threads": args.threads}
    rows: dict[str, list[tuple[float, float, float, float]]] = {k: [] for k in cases}
    results = {}
    for _ in range(args.repeat):
        for name, workers in cases.items():
            s.cpu_workers = lambda w=workers: w  # type: ignore[method-assign]
            t = time.perf_counter()
            vr = s.screen(vol)
            total = time.perf_counter() - t
            rows[name].append((total, vr.timings["quality"], vr.timings["preprocess"], vr.timings["model"]))
            results[name] = vr
    a, b = (results[k] for k in cases)
    same = a.quality_reasons == b.quality_reasons and np.allclose(a.probs, b.probs, atol=1e-6)
    med = {k: np.median(np.array(v), axis=0) for k, v in rows.items()}
    print(f"\n{'':34s} {'screen':>8s} {'quality':>8s} {'preproc':>8s} {'model':>8s}")
    for name, m in med.items():
        print(f"{name:34s} {m[0]:7.2f}s {m[1]:7.3f}s {m[2]:7.3f}s {m[3]:7.2f}s")
    (m1, m2) = med.values()
    prep = (m1[1] + m1[2]) / (m2[1] + m2[2])
    print(
        f"\nquality + preprocessing x{prep:.2f} faster; whole screen x{m1[0] / m2[0]:.2f}; "
        f"{'the same results' if same else 'DIFFERENT RESULTS'}"
    )
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
