"""The synthetic dataset writer: ``write_dataset`` simulates patients (``core.synthetic.simulator``)
and writes their B-scans as PNG files or DICOM OPT volumes with one ``manifest.csv``, atomically
(a temporary folder moved into place)."""

from __future__ import annotations

import concurrent.futures
import contextlib
import csv
import functools
import logging
import multiprocessing
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from core.fileio import atomic_folder, write_bytes_atomic
from core.synthetic.simulator import CLASSES, simulate_patient
from core.volume import OctVolume

__all__ = ["MANIFEST_COLUMNS", "write_dataset"]

log = logging.getLogger("core.synthetic")

MANIFEST_COLUMNS: tuple[str, ...] = ("path", "label", "patient_id", "eye", "volume_id", "bscan_index", "eye_label")


def _encode_png(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise OSError("PNG encoding failed")
    return buf.tobytes()


def _patient_files(
    p: int, *, seed: int, n_bscans: int, height: int, width: int, classes: tuple[str, ...], fmt: str
) -> list[tuple[list[tuple[Path, bytes | OctVolume]], list[dict[str, object]]]]:
    """One patient of :func:`write_dataset`: per eye, (files to write, manifest rows). A PNG file is
    its encoded bytes; a DICOM file is the volume (written by the io layer in the parent process)."""
    eyes = []
    for vol in simulate_patient(p, seed=seed, n_bscans=n_bscans, height=height, width=width, classes=classes):
        pid, eye = vol.patient.patient_id, vol.laterality.value
        volume_id = f"{pid}_{eye}"
        frame_labels = vol.frame_labels
        assert vol.label is not None and frame_labels is not None  # the simulator labels every eye and B-scan
        files: list[tuple[Path, bytes | OctVolume]]
        if fmt == "png":
            paths = [
                Path(vol.label.upper(), pid, eye, f"{i + 1:03d}_{lab.upper()}.png")
                for i, lab in enumerate(frame_labels)
            ]
            files = [(rel, _encode_png(img)) for rel, img in zip(paths, vol.bscans)]
        else:
            paths = [Path(pid, f"{volume_id}.dcm")] * vol.n_bscans
            files = [(paths[0], vol)]
        rows: list[dict[str, object]] = [
            dict(
                path=rel.as_posix(),
                label=lab,
                patient_id=pid,
                eye=eye,
                volume_id=volume_id,
                bscan_index=i,
                eye_label=vol.label,
            )
            for i, (rel, lab) in enumerate(zip(paths, frame_labels))
        ]
        eyes.append((files, rows))
    return eyes


def _remove_previous_dataset(out: Path) -> None:
    """Remove the files an earlier ``write_dataset`` listed in ``out/manifest.csv``, then empty folders.

    Files not listed there (the user's own) are left alone."""
    manifest = out / "manifest.csv"
    if not manifest.is_file():
        return
    root = out.resolve()
    with manifest.open(newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != MANIFEST_COLUMNS:
            return
        paths = {row["path"] for row in reader}
    for rel in paths:
        p = (out / rel).resolve()
        if root in p.parents:
            p.unlink(missing_ok=True)
    manifest.unlink()
    for d in sorted((p for p in out.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if not any(d.iterdir()):
            d.rmdir()


def write_dataset(
    out_dir: str | Path,
    *,
    patients: int,
    fmt: str,
    seed: int,
    n_bscans: int = 25,
    classes: Sequence[str] = CLASSES,
    progress: Callable[[int, int], None] | None = None,
    overwrite: bool = False,
    height: int = 496,
    width: int = 512,
    workers: int = 1,
) -> Path:
    """Write ``patients`` synthetic patients (both eyes) to ``out_dir`` and return ``out_dir``.

    fmt 'png': ``OUT/<CLASS>/<patient_id>/<OD|OS>/<NNN>_<LABEL>.png`` (CLASS = eye label, LABEL =
    B-scan label, upper case; NNN = 1-based B-scan index). fmt 'dicom':
    ``OUT/<patient_id>/<patient_id>_<OD|OS>.dcm`` (multi-frame OPT via ``core.io.write_opt``).
    Both write ``OUT/manifest.csv`` (:data:`MANIFEST_COLUMNS`; one row per B-scan; ``path`` relative
    to OUT; ``bscan_index`` 0-based frame index in the volume; ``label`` the B-scan's label).

    Everything is written to a temporary folder first and moved into place at the end, so an error
    or a :class:`core.errors.Cancelled` raised by ``progress(done, total)`` leaves nothing behind.
    A non-empty ``out_dir`` is refused unless ``overwrite``; then the files of an earlier dataset
    listed in its manifest are replaced and other files are left alone.

    ``workers`` > 1 simulates patients in that many processes (each patient has its own seed, so
    the dataset is the same whatever the number of workers); 0 uses every CPU.
    """
    if fmt not in ("png", "dicom"):
        raise ValueError(f"fmt must be 'png' or 'dicom', got {fmt!r}")
    if patients < 1:
        raise ValueError(f"patients must be at least 1, got {patients}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out}: folder is not empty (use overwrite to replace an earlier dataset)")
    write_opt: Callable[[OctVolume, Path], Path] | None = None
    if fmt == "dicom":
        # the DICOM OPT writer of the io layer
        from core.io import write_opt  # noqa: PLC0415 (heavy: pydicom and the codecs; PNG datasets need neither)

    with atomic_folder(out, merge=True) as tmp:  # a non-empty out: the user's own files stay
        rows: list[dict[str, object]] = []
        total = 2 * patients
        job = functools.partial(
            _patient_files, seed=seed, n_bscans=n_bscans, height=height, width=width, classes=tuple(classes), fmt=fmt
        )
        n_proc = min(patients, workers if workers > 0 else (os.cpu_count() or 1))
        with contextlib.ExitStack() as stack:
            if n_proc > 1:
                pool = concurrent.futures.ProcessPoolExecutor(n_proc, mp_context=multiprocessing.get_context("spawn"))
                stack.callback(pool.shutdown, wait=True, cancel_futures=True)  # a cancel drops the queue
                results = pool.map(job, range(patients), chunksize=max(1, patients // (8 * n_proc)))
            else:
                results = map(job, range(patients))
            for p, eyes in enumerate(results):  # in patient order whatever the workers
                for k, (files, eye_rows) in enumerate(eyes):
                    for rel, data in files:
                        if isinstance(data, OctVolume):
                            assert write_opt is not None  # volumes are only made for fmt="dicom"
                            write_opt(data, tmp / rel)
                        else:
                            write_bytes_atomic(tmp / rel, data, overwrite=True)
                    rows.extend(eye_rows)
                    if progress is not None:
                        progress(2 * p + k + 1, total)
        with (tmp / "manifest.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        if out.is_dir():
            _remove_previous_dataset(out)
    log.info("wrote %d synthetic patients (%s) to %s", patients, fmt, out)
    return out
