"""Image readers: OCT2017 sample files, NEH layout, generic B-scan folders, TIFF stacks, bit depths."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from core.errors import InconsistentVolumeError, InputError
from core.io import open_path
from core.io.images import parse_neh_path, parse_oct2017_name
from core.volume import Laterality

SAMPLE = Path(__file__).parent / "data" / "oct2017-sample"  # committed, CC BY 4.0 (tests/data/README.md)


def _png(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format="PNG")
    return path


def test_oct2017_sample_volumes_per_patient():
    files = sorted(SAMPLE.rglob("*.jpeg"))
    volumes = open_path(SAMPLE)
    assert sum(v.n_bscans for v in volumes) == len(files)
    for v in volumes:
        assert v.shape[1] == 496  # every OCT2017 B-scan is 496 rows high
        names = [parse_oct2017_name(p) for p in v.source_files]
        assert {(c, pid) for c, pid, _ in names} == {(v.label.upper(), v.patient.patient_id)}
        assert v.frame_labels == (v.label,) * v.n_bscans
        assert [n for _, _, n in names] == sorted(n for _, _, n in names)
    keys = {(v.label, v.patient.patient_id) for v in volumes}
    expected = {(p.name.split("-")[0].lower(), p.name.split("-")[1]) for p in files}
    assert keys == expected
    drusen = [v for v in volumes if v.patient.patient_id == "4878077"]
    assert len(drusen) == 1 and drusen[0].shape == (6, 496, 512)
    # one patient with B-scans of two widths: one volume per width, same eye identity
    split = [v for v in volumes if v.patient.patient_id == "1786810"]
    assert sorted(v.shape for v in split) == [(1, 496, 768), (2, 496, 512)]
    assert len({v.eye for v in split}) == 1
    assert len({v.study.series_uid for v in split}) == 2


def test_single_oct2017_file_pixels_match_pillow():
    path = SAMPLE / "CNV" / "CNV-659864-2.jpeg"
    (v,) = open_path(path)
    np.testing.assert_array_equal(v.bscans[0], np.asarray(Image.open(path).convert("L")))
    assert (v.patient.patient_id, v.label, v.shape) == ("659864", "cnv", (1, 496, 1536))
    assert v.source == path


def test_neh_layout_gives_case_eye_and_frame_labels(tmp_path):
    rng = np.random.default_rng(0)
    labels = {"001_Normal": "normal", "002_Drusen": "drusen", "010_Drusen": "drusen"}
    for cls in ("DRUSEN", "NORMAL"):  # case '7' exists in both classes: they must stay apart
        for eye in ("OD", "OS"):
            for stem in labels:
                _png(tmp_path / cls / "7" / eye / f"{stem}.png", rng.integers(0, 255, (20, 30), dtype=np.uint8))
    volumes = open_path(tmp_path)
    assert len(volumes) == 4
    assert len({v.eye for v in volumes}) == 4
    v = next(v for v in volumes if v.label == "drusen" and v.laterality is Laterality.OS)
    assert v.patient.patient_id == "7" and v.n_bscans == 3
    assert v.frame_labels == ("normal", "drusen", "drusen")  # natural order: 002 before 010
    assert parse_neh_path(tmp_path / "CNV" / "3" / "OD" / "005_CNV.png") == ("CNV", "3", Laterality.OD, "cnv")


def test_generic_folder_is_one_volume_in_natural_order(tmp_path):
    frames = [np.full((10, 12), 10 * i, np.uint8) for i in range(12)]
    for i, frame in enumerate(frames):
        _png(tmp_path / "scan" / f"bscan_{i}.png", frame)
    (v,) = open_path(tmp_path / "scan")
    np.testing.assert_array_equal(v.bscans, np.stack(frames))  # bscan_2 before bscan_10
    assert v.source == tmp_path / "scan" and len(v.source_files) == 12
    assert v.label is None and v.laterality is Laterality.UNKNOWN


def test_mixed_sizes_in_a_folder_name_the_odd_file(tmp_path):
    for i in range(3):
        _png(tmp_path / f"{i}.png", np.zeros((10, 12), np.uint8))
    odd = _png(tmp_path / "3.png", np.zeros((10, 14), np.uint8))
    errors: list[InputError] = []
    with pytest.raises(InputError):
        open_path(tmp_path, errors=errors)
    assert isinstance(errors[0], InconsistentVolumeError) and errors[0].path == odd
    assert "3.png" in str(errors[0])


def test_16_bit_png_and_tiff_keep_their_values(tmp_path):
    frame = (np.arange(20 * 30, dtype=np.uint32).reshape(20, 30) * 97 % 65536).astype(np.uint16)
    Image.fromarray(frame).save(tmp_path / "a.png")
    tifffile.imwrite(tmp_path / "b.tif", frame)
    for name in ("a.png", "b.tif"):
        (v,) = open_path(tmp_path / name)
        assert v.bscans.dtype == np.uint16 and v.bit_depth == 16
        np.testing.assert_array_equal(v.bscans[0], frame)


def test_multipage_tiff_is_one_volume(tmp_path):
    stack = np.random.default_rng(2).integers(0, 255, (5, 16, 18), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "cube.tiff", stack)
    tifffile.imwrite(tmp_path / "other.tiff", stack[:2])
    volumes = open_path(tmp_path)
    assert sorted(v.n_bscans for v in volumes) == [2, 5]
    np.testing.assert_array_equal(next(v for v in volumes if v.n_bscans == 5).bscans, stack)


def test_colour_images_become_grey(tmp_path):
    grey = np.random.default_rng(3).integers(0, 255, (14, 16), dtype=np.uint8)
    rgb = np.stack([grey] * 3, axis=-1)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    Image.fromarray(np.dstack([rgb, np.full_like(grey, 255)])).save(tmp_path / "d.png")
    tifffile.imwrite(tmp_path / "e.tif", rgb, photometric="rgb")
    Image.fromarray(rgb).save(tmp_path / "f.bmp")
    for name in ("c.png", "d.png", "e.tif", "f.bmp"):
        (v,) = open_path(tmp_path / name)
        assert v.bscans.shape == (1, 14, 16)
        np.testing.assert_array_equal(v.bscans[0], grey)


def test_content_decides_not_the_extension(tmp_path):
    frame = np.random.default_rng(4).integers(0, 255, (12, 12), dtype=np.uint8)
    Image.fromarray(frame).save(tmp_path / "really_png.jpg", format="PNG")
    (v,) = open_path(tmp_path / "really_png.jpg")
    np.testing.assert_array_equal(v.bscans[0], frame)  # lossless: it was read as PNG


def test_bad_file_among_good_ones_keeps_the_good_volumes(tmp_path):
    folder = tmp_path / "mix"
    shutil.copytree(SAMPLE / "NORMAL", folder)
    (folder / "NORMAL-9999999-1.jpeg").write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 20)  # truncated JPEG
    (folder / "notes.txt").write_text("exported by a technician")  # ignored sidecar
    errors: list[InputError] = []
    volumes = open_path(folder, errors=errors)
    assert len(volumes) == len({p.name.split("-")[1] for p in (SAMPLE / "NORMAL").iterdir()})
    assert len(errors) == 1 and "NORMAL-9999999-1.jpeg" in str(errors[0])


def test_lzw_tiff_falls_back_to_pillow(tmp_path):
    stack = np.random.default_rng(5).integers(0, 255, (3, 20, 30), dtype=np.uint8)
    pages = [Image.fromarray(frame) for frame in stack]
    pages[0].save(tmp_path / "lzw.tif", compression="tiff_lzw", save_all=True, append_images=pages[1:])
    (v,) = open_path(tmp_path / "lzw.tif")
    np.testing.assert_array_equal(v.bscans, stack)
