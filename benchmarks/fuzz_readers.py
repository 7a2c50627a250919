"""Fuzz the DICOM and image readers for a fixed time budget: mutated real files into ``open_path``.

    python benchmarks/fuzz_readers.py --seconds 300 [--seed 0] [--out docs/results/fuzz_readers.txt]

Seeds: a multi-frame OPT DICOM (uncompressed, JPEG 2000 lossless, RLE), a single-frame OPT, a
DICOMDIR file-set, PNG, JPEG (a real OCT2017 test-sample B-scan), 8- and 16-bit TIFF stacks. Each
input is one seed changed by hypothesis-style mutations (bit flips, byte overwrites with boundary
values, chunk deletion, duplication and insertion, truncation, 32-bit length-field overwrites), run
through ``core.io.open_path`` with a 10 s alarm. The promise checked: every input ends in volumes or
an ``InputError`` subclass, never another exception, never a hang. Prints the number of inputs per
seed, the outcomes, and every crash (the input is saved under runs/fuzz/ to reproduce it).
"""

from __future__ import annotations

import argparse
import collections
import io
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core.errors import InputError  # noqa: E402
from core.io import open_path, write_dicomdir, write_opt  # noqa: E402
from core.volume import Laterality, OctVolume, PatientInfo, StudyInfo  # noqa: E402

BOUNDARY = [0x00, 0x01, 0x7F, 0x80, 0xFF]
BOUNDARY32 = [0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0xFFFFFFFE, 65535, 65536]


def _volume(n: int = 4, h: int = 48, w: int = 64, bits: int = 8) -> OctVolume:
    rng = np.random.default_rng(0)
    dtype = np.uint8 if bits == 8 else np.uint16
    return OctVolume(
        bscans=rng.integers(0, 200, (n, h, w)).astype(dtype),
        laterality=Laterality.OD,
        patient=PatientInfo(patient_id="FUZZ", name="Fuzz^Test"),
        study=StudyInfo(
            study_uid="1.2.3.4", series_uid="1.2.3.4.1", study_date="20260101", study_time="120000", study_id="F1"
        ),
    )


def seeds(tmp: Path) -> dict[str, tuple[str, bytes]]:
    """name -> (file name to write the mutant under, seed bytes)."""
    import tifffile
    from PIL import Image
    from pydicom.uid import JPEG2000Lossless, RLELossless

    out: dict[str, tuple[str, bytes]] = {}
    for name, syntax in (("opt-raw", None), ("opt-j2k", JPEG2000Lossless), ("opt-rle", RLELossless)):
        p = write_opt(_volume(), tmp / f"{name}.dcm", transfer_syntax=syntax)
        out[name] = ("x.dcm", p.read_bytes())
    out["opt-1frame"] = ("x.dcm", write_opt(_volume(n=1), tmp / "one.dcm").read_bytes())
    member = write_opt(_volume(n=2), tmp / "src" / "m.dcm")
    dicomdir = write_dicomdir([member], tmp / "fs")
    out["dicomdir"] = ("DICOMDIR", dicomdir.read_bytes())
    img = _volume(n=1).bscans[0]
    for fmt in ("PNG", "BMP"):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format=fmt)
        out[fmt.lower()] = (f"x.{fmt.lower()}", buf.getvalue())
    sample = sorted((REPO / "tests" / "data" / "oct2017-sample").rglob("*.jpeg"))[0]
    out["jpeg-real"] = ("CNV-1-1.jpeg", sample.read_bytes())
    for bits in (8, 16):
        buf = io.BytesIO()
        tifffile.imwrite(buf, _volume(n=3, bits=bits).bscans, photometric="minisblack")
        out[f"tiff-{bits}"] = ("x.tif", buf.getvalue())
    return out


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    b = bytearray(data)
    for _ in range(int(rng.integers(1, 9))):
        if not b:
            break
        op = int(rng.integers(0, 8))
        i = int(rng.integers(0, len(b)))
        if op == 0:  # bit flip
            b[i] ^= 1 << int(rng.integers(0, 8))
        elif op == 1:  # boundary byte
            b[i] = BOUNDARY[int(rng.integers(0, len(BOUNDARY)))]
        elif op == 2:  # random bytes
            n = int(rng.integers(1, 16))
            b[i : i + n] = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        elif op == 3:  # delete a chunk
            del b[i : i + int(rng.integers(1, 256))]
        elif op == 4:  # duplicate a chunk
            n = int(rng.integers(1, 256))
            b[i:i] = b[i : i + n]
        elif op == 5:  # truncate
            del b[i:]
        elif op == 6 and i + 4 <= len(b):  # a 32-bit field (lengths, offsets, sizes)
            v = BOUNDARY32[int(rng.integers(0, len(BOUNDARY32)))]
            b[i : i + 4] = int(v).to_bytes(4, "little" if rng.integers(0, 2) else "big")
        else:  # insert random bytes
            n = int(rng.integers(1, 64))
            b[i:i] = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
    return bytes(b)


class Hang(Exception):
    pass


def _alarm(*_):
    raise Hang()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=300.0, help="time budget (default 300)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="also write the summary here")
    a = ap.parse_args(argv)

    import logging
    import warnings

    logging.disable(logging.CRITICAL)  # the readers log damaged files at ERROR: expected here
    warnings.simplefilter("ignore")
    rng = np.random.default_rng(a.seed)
    crash_dir = REPO / "runs" / "fuzz"
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    crashes: list[str] = []
    signal.signal(signal.SIGALRM, _alarm)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        pool = seeds(tmp / "seeds")
        names = list(pool)
        work = tmp / "work"
        n = 0
        while time.perf_counter() - t0 < a.seconds:
            name = names[n % len(names)]
            fname, data = pool[name]
            case = work / f"{n}"
            case.mkdir(parents=True)
            path = case / fname
            mutant = mutate(data, rng)
            path.write_bytes(mutant)
            signal.alarm(10)
            try:
                vols = open_path(path)
                counts[name]["volumes"] += 1
                del vols
            except InputError as e:
                counts[name][type(e).__name__] += 1
            except Hang:
                counts[name]["HANG"] += 1
                crashes.append(f"{name} #{n}: hang (> 10 s)")
            except Exception as e:  # the promise broken: save the input
                counts[name]["CRASH"] += 1
                crash_dir.mkdir(parents=True, exist_ok=True)
                (crash_dir / f"{name}-{n}-{fname}").write_bytes(mutant)
                tb = traceback.format_exception_only(type(e), e)[-1].strip()
                crashes.append(f"{name} #{n}: {tb[:200]} (saved runs/fuzz/{name}-{n}-{fname})")
            finally:
                signal.alarm(0)
                for p in case.iterdir():
                    p.unlink()
                case.rmdir()
            n += 1
    elapsed = time.perf_counter() - t0
    lines = [
        f"fuzz_readers: {n} inputs in {elapsed:.0f} s (seed {a.seed}; mutated seeds through core.io.open_path)",
        f"crashes or hangs: {len(crashes)}",
        "",
        f"{'seed':<12} {'inputs':>7}  outcomes",
    ]
    for name in names:
        c = counts[name]
        lines.append(f"{name:<12} {sum(c.values()):>7}  " + ", ".join(f"{k} {v}" for k, v in c.most_common()))
    lines += [""] + crashes
    text = "\n".join(lines).rstrip() + "\n"
    print(text, end="")
    if a.out:
        a.out.write_text(text, encoding="utf-8")
    return 1 if crashes else 0


if __name__ == "__main__":
    raise SystemExit(main())
