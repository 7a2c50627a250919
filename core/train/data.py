"""Training data: sample lists from the dataset layouts we know, and a torch ``Dataset`` over them.

A dataset is a list of :class:`Sample` (one B-scan image file each). Every sample carries the
*group* it belongs to (the patient, as a key that is unique across the whole dataset) so that
splits can be made per patient, and the eye / volume it comes from so that metrics can be
aggregated per eye.

Readers (each returns ``list[Sample]``):

- :func:`read_oct2017` -- ``ROOT/{train,test}/CLASS/CLASS-PATIENT-N.jpeg`` (UCSD / Kermany 2018).
- :func:`read_neh` -- NEH 2021: :func:`read_neh_csv` when the dataset's ``data_information.csv`` is
  in ``ROOT`` or one folder up, else the layout ``ROOT/CLASS/<case>/[OD|OS/]NNN_<Label>.ext``;
  patient ids restart in each class folder, so the group key is ``CLASS/<patient>``.
- :func:`read_neh_csv` -- NEH's ``data_information.csv`` (``Patient ID, Class, Label, Directory``),
  image paths relative to ``ROOT`` matched case-insensitively where the exact spelling is missing.
- :func:`read_manifest` -- a CSV with ``path,label,patient_id`` and optional ``eye,volume_id``
  (paths relative to the CSV's folder).
- :func:`synthetic_dataset` -- ``core.synthetic.write_dataset`` once per seed into a cache folder,
  then :func:`read_manifest`.
"""

from __future__ import annotations

import csv
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from core import synthetic
from core.errors import CorruptFileError, EmptyInputError, FileMissingError, InputError
from core.fileio import atomic_output
from core.io.images import parse_oct2017_name
from core.preprocess import to_uint8

__all__ = [
    "Sample",
    "IMAGE_SUFFIXES",
    "read_oct2017",
    "read_neh",
    "read_neh_csv",
    "read_manifest",
    "write_manifest",
    "synthetic_dataset",
    "load_samples",
    "BScanDataset",
    "read_grey",
    "class_counts",
    "enable_image_cache",
]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}


@dataclass(frozen=True)
class Sample:
    """One B-scan image file and what is known about it."""

    path: Path
    label: str  # class name of this B-scan (lower case)
    group: str  # patient key, unique across the dataset (used for patient-level splits)
    eye: str = ""  # e.g. "OD" / "OS" / ""
    volume: str = ""  # volume / eye key, unique across the dataset (per-eye metrics)
    eye_label: str = ""  # the class of the whole eye / patient folder, when known

    @property
    def eye_key(self) -> str:
        """A key of the eye this B-scan belongs to (falls back to the patient)."""
        return self.volume or (f"{self.group}/{self.eye}" if self.eye else self.group)


def _norm(label: str) -> str:
    return label.strip().lower()


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _keep(samples: list[Sample], classes: Sequence[str] | None, where: Path) -> list[Sample]:
    if classes is not None:
        wanted = {_norm(c) for c in classes}
        samples = [s for s in samples if s.label in wanted]
    if not samples:
        raise EmptyInputError(
            where,
            f"no B-scan images with a label among the requested classes ({', '.join(classes) if classes else 'any'})",
        )
    return samples


def read_oct2017(root: str | Path, split: str = "train", classes: Sequence[str] | None = None) -> list[Sample]:
    """The UCSD OCT2017 layout: ``root/<split>/<CLASS>/<CLASS>-<PATIENT>-<N>.jpeg``.

    The group key is the patient id (shared across class folders: one patient can have B-scans in
    several classes, and they must stay on one side of a split).
    """
    base = Path(root) / split if (Path(root) / split).is_dir() else Path(root)
    if not base.is_dir():
        raise FileMissingError(base, "OCT2017 folder not found")
    out: list[Sample] = []
    for cls_dir in sorted(p for p in base.iterdir() if p.is_dir()):
        for img in _images(cls_dir):
            parsed = parse_oct2017_name(img)  # the one OCT2017 name parser (core.io.images)
            pid = parsed[1] if parsed else img.stem
            out.append(Sample(img, _norm(cls_dir.name), f"oct2017/{pid}", "", f"oct2017/{pid}", _norm(cls_dir.name)))
    return _keep(out, classes, base)


NEH_CSV_NAME = "data_information.csv"
_NEH_COLUMNS = {"patient id": "Patient ID", "class": "Class", "label": "Label", "directory": "Directory"}
_EYES = ("OD", "OS")


def read_neh(
    root: str | Path,
    classes: Sequence[str] | None = None,
    label_mode: str = "bscan",
    csv_path: str | Path | bool | None = None,
    worst_case: bool = False,
) -> list[Sample]:
    """The NEH dataset: ``root`` is the image root, the folder holding ``NORMAL/ DRUSEN/ CNV/``.

    With ``data_information.csv`` (looked for in ``root``, then in ``root.parent``; or the file
    ``csv_path`` names) the samples come from :func:`read_neh_csv`; ``csv_path=False`` skips the
    CSV. Without it, the folder layout ``root/<CLASS>/<case>/[OD|OS/]NNN_<Label>.ext`` is read:
    the B-scan label comes from the file name, the patient class from the class folder, and the
    group key is ``<CLASS>/<case>`` because case ids restart in each class folder.

    ``label_mode="bscan"`` uses each B-scan's own label; ``"patient"`` gives every B-scan its
    patient's class. ``worst_case=True`` keeps only B-scans whose own label equals the patient's
    class. Samples whose label is not one of ``classes`` are dropped.
    """
    if label_mode not in ("bscan", "patient"):
        raise ValueError(f"label_mode must be 'bscan' or 'patient', not {label_mode!r}")
    base = Path(root)
    if not base.is_dir():
        raise FileMissingError(base, "NEH folder not found")
    if csv_path is None:
        csv_path = next((d / NEH_CSV_NAME for d in (base, base.parent) if (d / NEH_CSV_NAME).is_file()), None)
    elif csv_path is True:
        raise ValueError("csv_path must be a path, None (look for data_information.csv) or False (folders only)")
    if csv_path is not None and csv_path is not False:
        log.info("NEH: labels and patients from %s", csv_path)
        return read_neh_csv(csv_path, base, classes, label_mode, worst_case)
    out: list[Sample] = []
    for cls_dir in sorted(p for p in base.iterdir() if p.is_dir()):
        cls = _norm(cls_dir.name)
        for case in sorted(p for p in cls_dir.iterdir() if p.is_dir()):
            group = f"{cls_dir.name}/{case.name}"
            for img in _images(case):
                rel = img.relative_to(case).parts
                eye = rel[0].upper() if len(rel) > 1 and rel[0].upper() in _EYES else ""
                _, _, tail = img.stem.partition("_")
                own = _norm(tail) if tail else cls
                if worst_case and own != cls:
                    continue
                label = own if label_mode == "bscan" else cls
                out.append(Sample(img, label, group, eye, f"{group}/{eye}" if eye else group, cls))
    return _keep(out, classes, base)


def _column_key(name: str) -> str:
    """A header cell compared tolerantly: case, spaces, ``_`` and ``-`` do not matter."""
    return re.sub(r"[\s_\-]+", " ", name.strip().lstrip("\ufeff")).strip().lower()


class _CaseInsensitivePaths:
    """Resolves relative paths under ``root``, component by component, ignoring case where the
    exact name is missing (the NEH CSV spells some folders "NOrmal" where the disk has "Normal").
    Each folder is listed once."""

    def __init__(self, root: Path):
        self.root = root
        self._listing: dict[Path, tuple[set[str], dict[str, list[str]]]] = {}

    def _names(self, folder: Path) -> tuple[set[str], dict[str, list[str]]]:
        if folder not in self._listing:
            try:
                names = {e.name for e in folder.iterdir()}
            except (NotADirectoryError, FileNotFoundError, PermissionError):
                names = set()
            lower: dict[str, list[str]] = {}
            for n in sorted(names):
                lower.setdefault(n.lower(), []).append(n)
            self._listing[folder] = (names, lower)
        return self._listing[folder]

    def resolve(self, parts: Sequence[str]) -> tuple[Path | None, str]:
        """The path on disk, or ``None`` and why not."""
        cur = self.root
        for i, part in enumerate(parts):
            names, lower = self._names(cur)
            if part in names:
                cur = cur / part
                continue
            found = lower.get(part.lower(), [])
            if len(found) != 1:
                where = "/".join(parts[:i]) or "."
                why = (
                    f"'{part}' not found in {where}"
                    if not found
                    else f"'{part}' matches several names in {where} ({', '.join(found)})"
                )
                return None, why
            cur = cur / found[0]
        return cur, ""


def _numbered(reader) -> Iterable[tuple[int, list[str]]]:
    """Non-blank CSV rows with the file line each starts on (1-based)."""
    start = 1
    for row in reader:
        if any(x.strip() for x in row):
            yield start, row
        start = reader.line_num + 1


def read_neh_csv(
    csv_path: str | Path,
    root: str | Path,
    classes: Sequence[str] | None = None,
    label_mode: str = "bscan",
    worst_case: bool = False,
) -> list[Sample]:
    """NEH's ``data_information.csv``: one row per B-scan with the columns ``Patient ID``, ``Class``
    (the patient's class folder), ``Label`` (the B-scan's own label) and ``Directory`` (the image
    path relative to ``root``, the folder holding ``NORMAL/ DRUSEN/ CNV/``); other columns are ignored.

    Column names match whatever their case and spacing; labels are lower-cased. ``label_mode``
    ``"bscan"`` takes ``Label``, ``"patient"`` takes ``Class``; ``worst_case=True`` keeps only rows
    with ``Class == Label``; rows whose label is not one of ``classes`` are dropped. Patient ids
    restart in each class, so the group key is ``<CLASS>/<Patient ID>`` (for example ``CNV/12``);
    the eye is the ``OD`` / ``OS`` folder in ``Directory`` when there is one. ``Directory`` is
    resolved case-insensitively where the exact path is missing (``\\`` separators and a leading
    folder named like ``root`` are accepted). A missing column, an empty field or, in a row that is
    kept, an image not on disk is an error naming the CSV file and line.
    """
    if label_mode not in ("bscan", "patient"):
        raise ValueError(f"label_mode must be 'bscan' or 'patient', not {label_mode!r}")
    p, base = Path(csv_path), Path(root)
    if not p.is_file():
        raise FileMissingError(p, "NEH data_information.csv not found")
    if not base.is_dir():
        raise FileMissingError(base, "NEH image folder not found")
    try:
        with open(p, newline="", encoding="utf-8-sig") as f:
            lines = list(_numbered(csv.reader(f)))
    except (UnicodeDecodeError, csv.Error, OSError) as e:
        raise CorruptFileError(p, f"not a readable CSV file ({e})") from None
    if not lines:
        raise EmptyInputError(p, "the CSV file is empty (no header row)")
    header_line, header = lines[0]
    col: dict[str, int] = {}
    for i, name in enumerate(header):
        key = _column_key(name)
        if key in _NEH_COLUMNS and key not in col:
            col[key] = i
    missing = [v for k, v in _NEH_COLUMNS.items() if k not in col]
    if missing:
        raise InputError(
            p,
            f"line {header_line}: missing column(s) {', '.join(missing)} (NEH data_information.csv "
            f"needs {', '.join(_NEH_COLUMNS.values())}; found {', '.join(header) or 'none'})",
        )
    wanted = {_norm(c) for c in classes} if classes is not None else None
    paths = _CaseInsensitivePaths(base)
    out: list[Sample] = []
    for n, row in lines[1:]:
        field = {}
        for key, name in _NEH_COLUMNS.items():
            value = row[col[key]].strip() if col[key] < len(row) else ""
            if not value:
                raise InputError(p, f"line {n}: empty {name}")
            field[key] = value
        cls, own = _norm(field["class"]), _norm(field["label"])
        if worst_case and own != cls:
            continue
        label = own if label_mode == "bscan" else cls
        if wanted is not None and label not in wanted:
            continue
        directory = field["directory"]
        parts = [x for x in re.split(r"[\\/]+", directory) if x not in ("", ".")]
        img, why = paths.resolve(parts)
        if img is None and len(parts) > 1 and parts[0].lower() == base.name.lower():
            img, _ = paths.resolve(parts[1:])
            parts = parts[1:]
        if img is None:
            raise FileMissingError(p, f"line {n}: image '{directory}' not found under {base} ({why})")
        if not img.is_file():
            raise FileMissingError(p, f"line {n}: '{directory}' is not a file under {base}")
        eyes = [x.upper() for x in parts[:-1] if x.upper() in _EYES]
        eye = eyes[-1] if eyes else ""
        group = f"{field['class'].upper()}/{field['patient id']}"
        out.append(Sample(img, label, group, eye, f"{group}/{eye}" if eye else group, cls))
    return _keep(out, classes, p)


def read_manifest(
    csv_path: str | Path, classes: Sequence[str] | None = None, label_column: str = "label"
) -> list[Sample]:
    """A CSV manifest: columns ``path,label,patient_id`` and optionally ``eye,volume_id,eye_label``.

    Paths are relative to the CSV's folder (or absolute). ``label_column`` picks the label (for
    example ``eye_label`` to train on the patient / eye class).
    """
    p = Path(csv_path)
    if not p.is_file():
        raise FileMissingError(p, "manifest not found")
    try:
        with open(p, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (UnicodeDecodeError, csv.Error) as e:
        raise CorruptFileError(p, f"manifest is not a readable CSV file ({e})") from None
    needed = {"path", label_column, "patient_id"}
    if not rows or not needed <= set(rows[0]):
        raise InputError(p, f"manifest needs the columns {', '.join(sorted(needed))}")
    out = []
    for i, r in enumerate(rows, start=2):
        if not r["path"] or not r[label_column] or not r["patient_id"]:
            raise InputError(p, f"line {i}: empty path, label or patient_id")
        img = Path(r["path"])
        img = img if img.is_absolute() else p.parent / img
        eye = (r.get("eye") or "").strip()
        volume = (r.get("volume_id") or "").strip()
        out.append(
            Sample(img, _norm(r[label_column]), r["patient_id"].strip(), eye, volume, _norm(r.get("eye_label") or ""))
        )
    return _keep(out, classes, p)


def write_manifest(samples: Iterable[Sample], csv_path: str | Path) -> Path:
    """Write samples as a CSV manifest (absolute paths), atomically."""
    p = Path(csv_path)
    with atomic_output(p, overwrite=True) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "patient_id", "eye", "volume_id", "eye_label"])
        for s in samples:
            w.writerow([str(Path(s.path).resolve()), s.label, s.group, s.eye, s.volume, s.eye_label])
    return p


def synthetic_dataset(
    cache_dir: str | Path,
    *,
    patients: int,
    seed: int,
    n_bscans: int = 25,
    classes: Sequence[str] | None = None,
    height: int = 496,
    width: int = 512,
    workers: int = 1,
) -> list[Sample]:
    """Synthetic B-scans from ``core.synthetic.write_dataset``, generated once per (seed, size).

    The data lands in ``cache_dir/synthetic-s<seed>-p<patients>-b<n_bscans>-<height>x<width>``; a later
    call with the same arguments reuses it, so runs are repeatable. ``workers`` processes simulate
    the patients (0: every CPU); the data do not depend on it.
    """
    out = Path(cache_dir) / f"synthetic-s{seed}-p{patients}-b{n_bscans}-{height}x{width}"
    manifest = out / "manifest.csv"
    if not manifest.is_file():  # write_dataset writes to a temp folder and renames: no half dataset
        log.info("generating synthetic data into %s (seed %d, %d patients)", out, seed, patients)
        synthetic.write_dataset(
            out,
            patients=patients,
            fmt="png",
            seed=seed,
            n_bscans=n_bscans,
            height=height,
            width=width,
            overwrite=True,
            workers=workers,
        )
    return read_manifest(manifest, classes)


def load_samples(
    source: str,
    root: str | Path | None = None,
    *,
    classes: Sequence[str] | None = None,
    split: str = "train",
    label_mode: str = "bscan",
    cache_dir: str | Path = "runs/cache",
    patients: int = 30,
    seed: int = 0,
    n_bscans: int = 25,
    height: int = 496,
    width: int = 512,
    workers: int = 1,
    neh_csv: str | Path | bool | None = None,
    worst_case: bool = False,
) -> list[Sample]:
    """Dispatch to a reader by name: ``oct2017 | neh | manifest | synthetic``.

    ``neh_csv`` and ``worst_case`` are the NEH options of :func:`read_neh` (``csv_path``, ``worst_case``).
    """
    if worst_case and source != "neh":
        raise ValueError(f"worst_case filtering needs the NEH source, not {source!r}")
    if source == "synthetic":
        return synthetic_dataset(
            cache_dir,
            patients=patients,
            seed=seed,
            n_bscans=n_bscans,
            classes=classes,
            height=height,
            width=width,
            workers=workers,
        )
    if root is None:
        raise ValueError(f"data source {source!r} needs data.root")
    if source == "oct2017":
        return read_oct2017(root, split, classes)
    if source == "neh":
        return read_neh(root, classes, label_mode, csv_path=neh_csv, worst_case=bool(worst_case))
    if source == "manifest":
        return read_manifest(root, classes, "label" if label_mode == "bscan" else "eye_label")
    raise ValueError(f"unknown data source {source!r} (oct2017, neh, manifest, synthetic)")


def class_counts(samples: Sequence[Sample], classes: Sequence[str]) -> np.ndarray:
    """How many samples of each class, in ``classes`` order."""
    c = Counter(s.label for s in samples)
    return np.array([c.get(k, 0) for k in classes], dtype=np.int64)


def read_grey(path: Path) -> np.ndarray:
    """An image file as a 2-D uint8 grey array (8-bit conversion of 16-bit images)."""
    try:
        with Image.open(path) as im:
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                a = to_uint8(np.asarray(im).astype(np.uint16))
            else:
                a = np.asarray(im.convert("L"))
    except FileNotFoundError:
        raise FileMissingError(path, "image file not found") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise CorruptFileError(path, f"cannot decode the image ({e})") from None
    return np.ascontiguousarray(a)


_IMAGE_CACHE: dict[Path, np.ndarray] | None = None
_IMAGE_CACHE_BYTES = [0, 0]  # used, limit


def enable_image_cache(max_bytes: int = 4 << 30) -> None:
    """Keep decoded training B-scans in this process's memory (up to ``max_bytes``), so a small
    dataset is decoded once rather than every epoch. Off by default."""
    global _IMAGE_CACHE
    if _IMAGE_CACHE is None:
        _IMAGE_CACHE = {}
    _IMAGE_CACHE_BYTES[1] = int(max_bytes)


def _read_cached(path: Path) -> np.ndarray:
    if _IMAGE_CACHE is None:
        return read_grey(path)
    hit = _IMAGE_CACHE.get(path)
    if hit is None:
        hit = read_grey(path)
        if _IMAGE_CACHE_BYTES[0] + hit.nbytes <= _IMAGE_CACHE_BYTES[1]:
            hit.setflags(write=False)
            _IMAGE_CACHE[path] = hit
            _IMAGE_CACHE_BYTES[0] += hit.nbytes
    return hit


class BScanDataset(torch.utils.data.Dataset):
    """Samples -> ``(tensor [3, H, W], class index)`` through ``transform(uint8 [h, w]) -> tensor``."""

    def __init__(
        self, samples: Sequence[Sample], classes: Sequence[str], transform: Callable[[np.ndarray], torch.Tensor]
    ):
        self.samples = list(samples)
        self.classes = [_norm(c) for c in classes]
        self.index = {c: i for i, c in enumerate(self.classes)}
        unknown = {s.label for s in self.samples} - set(self.index)
        if unknown:
            raise ValueError(f"samples carry labels outside the classes {self.classes}: {sorted(unknown)}")
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def targets(self) -> np.ndarray:
        return np.array([self.index[s.label] for s in self.samples], dtype=np.int64)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        s = self.samples[i]
        return self.transform(_read_cached(s.path)), self.index[s.label]
