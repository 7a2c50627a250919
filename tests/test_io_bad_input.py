"""Bad input corpus: every case raises the right InputError subclass with a message naming the file.

Each case builds its input in tmp_path and returns (path given to open_path, path the message names).
"""

from __future__ import annotations

import importlib.util
import struct
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
import tifffile
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.uid import UID

from core import errors as E
from core.io import open_path, write_opt
from core.io.writer import build_opt_dataset
from tests.fixtures.oct_io import ct_file, full_volume, fundus_file, pdf_file, sr_file

RNG = np.random.default_rng(1234)


def _random_bytes(n: int = 4096) -> bytes:
    return RNG.integers(0, 256, n, dtype=np.uint8).tobytes()


def _opt_bytes(n: int = 3) -> bytes:
    import io

    buf = io.BytesIO()
    build_opt_dataset(full_volume(n=n)).save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _png_bytes(pixels: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares width x height but holds almost no data (a decompression bomb shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _write(path: Path, data: bytes) -> tuple[Path, Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path, path


def _dicom_variant(tmp: Path, name: str, change) -> tuple[Path, Path]:
    ds = build_opt_dataset(full_volume(n=2))
    change(ds)
    path = tmp / name
    ds.save_as(path, enforce_file_format=True, implicit_vr=False, little_endian=True)
    return path, path


def _drop_pixels(ds) -> None:
    del ds.PixelData


def _syntax(uid: str):
    def change(ds) -> None:
        ds.file_meta.TransferSyntaxUID = UID(uid)
        frame = len(ds.PixelData) // 2
        ds.PixelData = encapsulate([ds.PixelData[:frame], ds.PixelData[frame:]])  # opaque "compressed" frames
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True

    return change


def _huge(rows: int, cols: int, frames: int):
    def change(ds) -> None:
        ds.Rows, ds.Columns, ds.NumberOfFrames = rows, cols, frames

    return change


def _folder(tmp: Path, files: dict[str, bytes]) -> tuple[Path, Path]:
    folder = tmp / "folder"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder, folder


def _mixed_size_folder(tmp: Path) -> tuple[Path, Path]:
    folder, _ = _folder(tmp, {f"{i}.png": _png_bytes(np.zeros((20, 30), np.uint8)) for i in range(3)})
    odd = folder / "2b.png"
    odd.write_bytes(_png_bytes(np.zeros((20, 31), np.uint8)))
    return folder, odd


def _tiff_mixed_pages(tmp: Path) -> tuple[Path, Path]:
    path = tmp / "mixed.tif"
    with tifffile.TiffWriter(path) as tif:
        tif.write(np.zeros((10, 12), np.uint8))
        tif.write(np.zeros((10, 14), np.uint8))
    return path, path


def _float_tiff(tmp: Path) -> tuple[Path, Path]:
    path = tmp / "float.tif"
    tifffile.imwrite(path, np.zeros((10, 12), np.float32))
    return path, path


def _tiff_unknown_codec(tmp: Path) -> tuple[Path, Path]:
    """Raw pixels whose Compression tag claims JPEG 2000: no codec here (without imagecodecs) reads it."""
    path = tmp / "j2k.tif"
    tifffile.imwrite(path, np.zeros((40, 40), np.uint8))
    with tifffile.TiffFile(path) as tif:
        offset = tif.pages[0].tags["Compression"].valueoffset
    data = bytearray(path.read_bytes())
    data[offset : offset + 2] = (34712).to_bytes(2, "little")
    path.write_bytes(bytes(data))
    return path, path


HAS_IMAGECODECS = importlib.util.find_spec("imagecodecs") is not None


def _broken_link(tmp: Path) -> tuple[Path, Path]:
    link = tmp / "link.dcm"
    link.symlink_to(tmp / "gone.dcm")
    return link, link


CASES = {
    "missing path": (lambda t: (t / "nope.dcm", t / "nope.dcm"), E.FileMissingError),
    "broken symlink": (_broken_link, E.FileMissingError),
    "empty dicom file": (lambda t: _write(t / "empty.dcm", b""), E.EmptyInputError),
    "empty png file": (lambda t: _write(t / "empty.png", b""), E.EmptyInputError),
    "empty folder": (lambda t: _folder(t, {}), E.EmptyInputError),
    "random bytes": (lambda t: _write(t / "noise.bin", _random_bytes()), E.UnsupportedFormatError),
    "random bytes named .dcm": (lambda t: _write(t / "noise.dcm", _random_bytes()), E.CorruptFileError),
    "text named .png": (lambda t: _write(t / "notes.png", b"this is not an image\n"), E.UnsupportedFormatError),
    "word document": (
        lambda t: _write(t / "letter.docx", b"PK\x03\x04" + _random_bytes(200)),
        E.UnsupportedFormatError,
    ),
    "DICM then garbage": (
        lambda t: _write(t / "garbage.dcm", b"\0" * 128 + b"DICM" + _random_bytes(300)),
        E.CorruptFileError,
    ),
    "dicom cut in the header": (lambda t: _write(t / "cut300.dcm", _opt_bytes()[:300]), E.CorruptFileError),
    "dicom truncated pixels": (lambda t: _write(t / "cut.dcm", _opt_bytes()[:-100]), E.CorruptFileError),
    "CT image": (lambda t: (ct_file(t / "ct.dcm"),) * 2, E.NotOctError),
    "fundus photograph (OP)": (lambda t: (fundus_file(t / "fundus.dcm"),) * 2, E.NotOctError),
    "structured report": (lambda t: (sr_file(t / "sr.dcm"),) * 2, E.NotOctError),
    "encapsulated PDF": (lambda t: (pdf_file(t / "report.dcm"),) * 2, E.NotOctError),
    "OPT without pixel data": (lambda t: _dicom_variant(t, "nopix.dcm", _drop_pixels), E.NoPixelDataError),
    "unknown transfer syntax": (
        lambda t: _dicom_variant(t, "unknown_ts.dcm", _syntax("1.2.3.4.5.6.7")),
        E.UnsupportedCompressionError,
    ),
    "JPIP referenced syntax": (
        lambda t: _dicom_variant(t, "jpip.dcm", _syntax("1.2.840.10008.1.2.4.94")),
        E.UnsupportedCompressionError,
    ),
    "dicom side too large": (lambda t: _dicom_variant(t, "wide.dcm", _huge(496, 60000, 2)), E.ImageTooLargeError),
    "dicom volume too large": (lambda t: _dicom_variant(t, "deep.dcm", _huge(1024, 1024, 4096)), E.ImageTooLargeError),
    "png decompression bomb": (lambda t: _write(t / "bomb.png", _png_header_only(60000, 60000)), E.ImageTooLargeError),
    "png side too large": (lambda t: _write(t / "wide.png", _png_header_only(9000, 10)), E.ImageTooLargeError),
    "truncated png": (
        lambda t: _write(t / "cut.png", _png_bytes(RNG.integers(0, 255, (64, 64), dtype=np.uint8))[:300]),
        E.CorruptFileError,
    ),
    "truncated jpeg": (lambda t: _write(t / "cut.jpeg", b"\xff\xd8\xff\xe0" + b"\0" * 40), E.CorruptFileError),
    "tiff header then garbage": (lambda t: _write(t / "bad.tif", b"II*\x00" + _random_bytes(100)), E.CorruptFileError),
    "tiff pages of two sizes": (_tiff_mixed_pages, E.InconsistentVolumeError),
    "float tiff": (_float_tiff, E.UnsupportedFormatError),
    "tiff with a codec not installed": (
        _tiff_unknown_codec,
        E.CorruptFileError if HAS_IMAGECODECS else E.UnsupportedCompressionError,
    ),
    "folder of non-image files": (
        lambda t: _folder(t, {"a.bin": _random_bytes(), "b.exe": b"MZ" + _random_bytes()}),
        E.EmptyInputError,
    ),
    "folder with mixed image sizes": (_mixed_size_folder, E.InconsistentVolumeError),
    "heidelberg vol cut in its header": (
        lambda t: _write(t / "scan.vol", b"HSF-OCT-103" + _random_bytes(100)),
        E.CorruptFileError,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_raises_named_input_error(tmp_path, case):
    build, expected = CASES[case]
    given, named = build(tmp_path)
    with pytest.raises(E.InputError) as info:
        open_path(given)
    assert type(info.value) is expected, f"{case}: {type(info.value).__name__}: {info.value}"
    assert str(named) in str(info.value)
    assert info.value.path == named


def test_corpus_is_big_enough():
    assert len(CASES) >= 20


def test_folder_errors_list_collects_each_bad_file(tmp_path):
    folder = tmp_path / "exam"
    good = write_opt(full_volume(n=2), folder / "good.dcm")
    (folder / "noise.bin").write_bytes(_random_bytes())
    ct_file(folder / "ct.dcm")
    (folder / "empty.png").write_bytes(b"")
    (folder / ".DS_Store").write_bytes(_random_bytes(64))  # hidden: skipped silently
    errors: list[E.InputError] = []
    volumes = open_path(folder, errors=errors)
    assert [v.source for v in volumes] == [good]
    assert sorted(type(e).__name__ for e in errors) == ["EmptyInputError", "NotOctError", "UnsupportedFormatError"]
    assert {e.path.name for e in errors} == {"noise.bin", "ct.dcm", "empty.png"}


def test_folder_of_only_bad_files_raises_but_still_reports_each(tmp_path):
    folder, _ = _folder(tmp_path, {"a.bin": _random_bytes(), "b.dcm": b""})
    errors: list[E.InputError] = []
    with pytest.raises(E.EmptyInputError, match="no readable OCT data"):
        open_path(folder, errors=errors)
    assert {e.path.name for e in errors} == {"a.bin", "b.dcm"}


def test_vendor_file_without_the_extra_says_what_to_install(tmp_path, monkeypatch):
    import core.io.vendor as vendor

    monkeypatch.setattr(vendor, "_has_oct_converter", lambda: False)
    path = tmp_path / "exam.E2E"
    path.write_bytes(b"CMDb" + _random_bytes(100))
    with pytest.raises(E.MissingExtraError) as info:
        open_path(path)
    assert str(path) in str(info.value) and "pip install 'octscreen[vendor]'" in str(info.value)
    assert "Heidelberg E2E" in str(info.value)


def test_vendor_reader_converts_oct_converter_volumes(tmp_path, monkeypatch):
    """Exercise the oct-converter path against its documented API with a stand-in module."""
    import datetime as dt
    import sys
    import types

    import core.io.vendor as vendor

    frames = [np.full((8, 10), i, np.uint16) for i in range(3)]

    class FakeVolume:
        def __init__(self, laterality):
            self.volume, self.laterality, self.patient_id = frames, laterality, "V1"
            self.first_name, self.surname, self.sex, self.DOB = "Ann", "Lee", "F", "19600102"
            self.acquisition_date = dt.datetime(2025, 5, 6)
            self.pixel_spacing = [0.0114, 0.12, 0.0039]  # [lateral, between B-scans, axial]

    class E2E:
        def __init__(self, filepath):
            self.filepath = filepath

        def read_oct_volume(self):
            if Path(self.filepath).stat().st_size < 10:
                raise ValueError("bad chunk header")
            return [FakeVolume("R"), FakeVolume("L")]

    readers = types.ModuleType("oct_converter.readers")
    readers.E2E = E2E
    monkeypatch.setitem(sys.modules, "oct_converter", types.ModuleType("oct_converter"))
    monkeypatch.setitem(sys.modules, "oct_converter.readers", readers)
    monkeypatch.setattr(vendor, "_has_oct_converter", lambda: True)
    good = tmp_path / "exam.e2e"
    good.write_bytes(b"x" * 64)
    volumes = open_path(good)
    assert [v.laterality.value for v in volumes] == ["OD", "OS"]
    v = volumes[0]
    np.testing.assert_array_equal(v.bscans, np.stack(frames))
    assert (v.patient.name, v.patient.birth_date, v.study.study_date) == ("Lee^Ann", "19600102", "20250506")
    assert (v.spacing.slice, v.spacing.row, v.spacing.column) == (0.12, 0.0039, 0.0114)
    assert volumes[0].eye != volumes[1].eye
    bad = tmp_path / "bad.e2e"
    bad.write_bytes(b"x")
    with pytest.raises(E.CorruptFileError, match="bad chunk header") as info:
        open_path(bad)
    assert info.value.path == bad


def test_pillow_global_limit_is_left_alone(tmp_path):
    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(E.ImageTooLargeError):
        open_path(_write(tmp_path / "bomb.png", _png_header_only(60000, 60000))[0])
    assert Image.MAX_IMAGE_PIXELS == before


def test_unreadable_pixels_of_one_dicom_in_folder_do_not_hide_others(tmp_path):
    good = write_opt(full_volume(n=2, seed=1), tmp_path / "good.dcm")
    (tmp_path / "cut.dcm").write_bytes(_opt_bytes()[:-50])
    errors: list[E.InputError] = []
    assert [v.source for v in open_path(tmp_path, errors=errors)] == [good]
    assert len(errors) == 1 and isinstance(errors[0], E.CorruptFileError) and errors[0].path.name == "cut.dcm"
    assert pydicom.dcmread(good).Modality == "OPT"


def test_unexpected_reader_failure_is_contained_to_its_file(tmp_path, monkeypatch, caplog):
    import core.io.dicom as dicom

    good = write_opt(full_volume(n=2, seed=1), tmp_path / "a.dcm")
    odd = write_opt(full_volume(n=2, seed=2), tmp_path / "b.dcm")
    real = dicom.volume_from_file

    def flaky(f):
        if f.path == odd:
            raise ZeroDivisionError("reader bug")
        return real(f)

    monkeypatch.setattr(dicom, "volume_from_file", flaky)
    errors: list[E.InputError] = []
    assert [v.source for v in open_path(tmp_path, errors=errors)] == [good]
    assert len(errors) == 1 and type(errors[0]) is E.CorruptFileError and errors[0].path == odd
    assert "ZeroDivisionError" in str(errors[0])
    assert "reader bug" in caplog.text  # logged with its traceback for the developers
