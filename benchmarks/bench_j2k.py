"""JPEG 2000 decoding of an OCT cube, decoders side by side in one run (issue 12).

    python benchmarks/bench_j2k.py [--bscans 128] [--repeat 3]

One JPEG 2000 lossless OPT file (a simulated 496 x 512 cube written by core.io.write_opt) decoded by:
pydicom's pixel handler (pylibjpeg-openjpeg, one frame at a time), pydicom with GDCM (when
``python-gdcm`` is installed: ``pip install python-gdcm``; not a dependency), imagecodecs on one
thread, and OCT Screen's reader (core.io: imagecodecs on ``decode_workers()`` threads). Prints ms per
frame for each, the speed-up against pydicom, that all give the same pixels, and the CPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import imagecodecs  # noqa: E402
import pydicom  # noqa: E402
from machine import cpu  # noqa: E402
from pydicom.encaps import generate_frames  # noqa: E402

from core.io import open_path, write_opt  # noqa: E402
from core.io.dicom import decode_workers  # noqa: E402
from core.synthetic import simulate_volume  # noqa: E402


def _best(f, repeat: int) -> tuple[float, np.ndarray]:
    out = f()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = f()
        times.append(time.perf_counter() - t)
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bscans", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = write_opt(
            simulate_volume("cnv", n_bscans=a.bscans, seed=1),
            Path(tmp) / "cube.dcm",
            transfer_syntax="JPEG2000Lossless",
        )
        size = path.stat().st_size
        ds = pydicom.dcmread(path)
        frames = list(generate_frames(ds.PixelData, number_of_frames=a.bscans))
        cases = [
            ("pydicom (pylibjpeg-openjpeg, 1 frame at a time)", lambda: pydicom.dcmread(path).pixel_array),
        ]
        try:
            import gdcm
            from pydicom.pixels import pixel_array

            gdcm_version = gdcm.Version.GetVersion()
            cases.append(
                (
                    f"pydicom with GDCM {gdcm_version}",
                    lambda: pixel_array(pydicom.dcmread(path), decoding_plugin="gdcm"),
                )
            )
        except ImportError:
            gdcm_version = ""
        cases += [
            ("imagecodecs, 1 thread", lambda: np.stack([imagecodecs.jpeg2k_decode(f) for f in frames])),
            (f"core.io.open_path (imagecodecs, {decode_workers()} threads)", lambda: open_path(path)[0].bscans),
        ]
        results = [(name, *_best(f, a.repeat)) for name, f in cases]
    ref = results[0][2]
    print(f"CPU: {cpu()} ({os.cpu_count()} logical, {decode_workers()} usable); imagecodecs {imagecodecs.__version__}")
    print(f"cube: {a.bscans} B-scans of 496 x 512, JPEG 2000 lossless, {size / 1e6:.1f} MB; best of {a.repeat}")
    if not gdcm_version:
        print("  (GDCM left out: python-gdcm is not installed; pip install python-gdcm)")
    for name, t, out in results:
        same = "same pixels" if np.array_equal(out, ref) else "DIFFERENT PIXELS"
        print(f"  {name:52s} {1e3 * t / a.bscans:6.1f} ms/frame  {t:6.2f} s  x{results[0][1] / t:4.2f}  {same}")


if __name__ == "__main__":
    main()
