"""DICOM readers: frame order, spacing and laterality sources, single-frame series, DICOMDIR, codecs."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from core.errors import InconsistentVolumeError, InputError
from core.io import open_path, write_dicomdir, write_opt
from core.io.writer import build_opt_dataset
from core.volume import Laterality
from tests.fixtures.oct_io import full_volume, jpeg_baseline_opt, single_frame_oct


def _rewrite(path, change):
    ds = pydicom.dcmread(path)
    change(ds)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_frames_ordered_by_in_stack_position(tmp_path):
    volume = full_volume(n=5)
    ds = build_opt_dataset(volume)
    perm = [3, 0, 4, 1, 2]  # store frames shuffled, with their stack positions
    ds.PixelData = volume.bscans[perm].tobytes()
    items = list(ds.PerFrameFunctionalGroupsSequence)
    ds.PerFrameFunctionalGroupsSequence = pydicom.Sequence([items[i] for i in perm])
    ds.save_as(tmp_path / "shuffled.dcm", enforce_file_format=True)
    (back,) = open_path(tmp_path / "shuffled.dcm")
    np.testing.assert_array_equal(back.bscans, volume.bscans)
    assert back.frame_labels == volume.frame_labels


def test_frames_ordered_by_position_without_stack_numbers(tmp_path):
    volume = full_volume(n=4)
    ds = build_opt_dataset(volume)
    perm = [2, 0, 3, 1]
    ds.PixelData = volume.bscans[perm].tobytes()
    items = [ds.PerFrameFunctionalGroupsSequence[i] for i in perm]
    for item in items:
        del item.FrameContentSequence[0].InStackPositionNumber
    ds.PerFrameFunctionalGroupsSequence = pydicom.Sequence(items)
    del ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].SpacingBetweenSlices
    del ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].SliceThickness
    ds.save_as(tmp_path / "pos.dcm", enforce_file_format=True)
    (back,) = open_path(tmp_path / "pos.dcm")
    np.testing.assert_array_equal(back.bscans, volume.bscans)
    assert back.spacing.slice == pytest.approx(0.1234)  # derived from the plane positions


def test_spacing_and_laterality_from_per_frame_groups(tmp_path):
    ds = build_opt_dataset(full_volume(n=3))
    measures = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence
    anatomy = ds.SharedFunctionalGroupsSequence[0].FrameAnatomySequence
    del ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence
    del ds.SharedFunctionalGroupsSequence[0].FrameAnatomySequence
    measures[0].PixelSpacing = [0.005, 0.02]
    measures[0].SliceThickness = 0.25
    del measures[0].SpacingBetweenSlices
    anatomy[0].FrameLaterality = "R"
    for item in ds.PerFrameFunctionalGroupsSequence:
        item.PixelMeasuresSequence = measures
        item.FrameAnatomySequence = anatomy
        item.PlanePositionSequence[0].ImagePositionPatient = [0, 0, 0]  # no usable positions
    ds.Laterality = ""
    ds.ImageLaterality = "U"
    ds.save_as(tmp_path / "pf.dcm", enforce_file_format=True)
    (back,) = open_path(tmp_path / "pf.dcm")
    assert (back.spacing.row, back.spacing.column, back.spacing.slice) == (0.005, 0.02, 0.25)
    assert back.laterality is Laterality.OD


def test_single_frame_series_grouped_and_ordered(tmp_path):
    rng = np.random.default_rng(1)
    series_a, series_b = generate_uid(), generate_uid()
    frames_a = rng.integers(0, 255, (4, 16, 20), dtype=np.uint8)
    frames_b = rng.integers(0, 65535, (3, 12, 10), dtype=np.uint16)
    # series A: positions decide (instance numbers deliberately reversed); series B: instance numbers
    for i, frame in enumerate(frames_a):
        single_frame_oct(tmp_path / f"x{7 - i}.dcm", frame, series_uid=series_a, instance=10 - i, z=0.2 * i)
    for i, k in enumerate([2, 0, 1]):
        single_frame_oct(
            tmp_path / f"b{i}.dcm", frames_b[k], series_uid=series_b, instance=k + 1, laterality="L", study_uid="9.9"
        )
    volumes = open_path(tmp_path)
    assert len(volumes) == 2
    by_series = {v.study.series_uid: v for v in volumes}
    a, b = by_series[series_a], by_series[series_b]
    np.testing.assert_array_equal(a.bscans, frames_a)
    np.testing.assert_array_equal(b.bscans, frames_b)
    assert a.spacing.slice == pytest.approx(0.2) and a.spacing.row == 0.0039
    assert a.laterality is Laterality.OD and b.laterality is Laterality.OS
    assert len(a.source_files) == 4 and a.source == tmp_path


def test_single_frame_series_with_mixed_sizes_names_the_odd_file(tmp_path):
    uid = generate_uid()
    for i in range(3):
        single_frame_oct(tmp_path / f"s{i}.dcm", np.zeros((16, 16), np.uint8), series_uid=uid, instance=i + 1)
    odd = single_frame_oct(tmp_path / "s3.dcm", np.zeros((16, 24), np.uint8), series_uid=uid, instance=4)
    errors: list[InputError] = []
    with pytest.raises(InputError):
        open_path(tmp_path, errors=errors)
    assert len(errors) == 1 and isinstance(errors[0], InconsistentVolumeError)
    assert errors[0].path == odd


def test_dicomdir_lists_the_volumes(tmp_path):
    src = [
        write_opt(full_volume(n=3, seed=i, laterality=side), tmp_path / "src" / f"{side}.dcm")
        for i, side in enumerate(["OD", "OS"])
    ]
    dicomdir = write_dicomdir(src, tmp_path / "media")
    assert dicomdir == tmp_path / "media" / "DICOMDIR"
    with pytest.raises(FileExistsError):
        write_dicomdir(src, tmp_path / "media")
    volumes = open_path(dicomdir)
    assert sorted(v.laterality.value for v in volumes) == ["OD", "OS"]
    assert all(v.n_bscans == 3 for v in volumes)
    # the folder holding the DICOMDIR gives the same volumes once each (no duplicates)
    assert len(open_path(tmp_path / "media")) == 2


def test_dicomdir_member_missing_is_reported_not_fatal(tmp_path):
    write_dicomdir([write_opt(full_volume(n=2, seed=i), tmp_path / f"v{i}.dcm") for i in range(2)], tmp_path / "media")
    members = [p for p in (tmp_path / "media").rglob("*") if p.is_file() and p.name != "DICOMDIR"]
    members[0].unlink()
    errors: list[InputError] = []
    volumes = open_path(tmp_path / "media" / "DICOMDIR", errors=errors)
    assert len(volumes) == 1
    assert len(errors) == 1 and str(members[0].name) in str(errors[0])


def test_jpeg_baseline_multiframe_is_decoded(tmp_path):
    frames = np.tile(np.linspace(0, 255, 32, dtype=np.uint8), (3, 24, 1))
    frames[1] = 255 - frames[1]
    (back,) = open_path(jpeg_baseline_opt(tmp_path / "jpeg.dcm", frames))
    assert back.bscans.shape == (3, 24, 32)
    assert np.abs(back.bscans.astype(int) - frames).max() <= 8  # lossy, but close
    assert back.extra["transfer_syntax"] == pydicom.uid.JPEGBaseline8Bit


def test_monochrome1_and_colour_are_converted(tmp_path):
    volume = full_volume(n=2)
    path = write_opt(volume, tmp_path / "m1.dcm")
    _rewrite(path, lambda ds: setattr(ds, "PhotometricInterpretation", "MONOCHROME1"))
    (back,) = open_path(path)
    np.testing.assert_array_equal(back.bscans, 255 - volume.bscans)

    rgb = np.stack([volume.bscans] * 3, axis=-1)  # grey stored as RGB

    def to_rgb(ds):
        ds.SamplesPerPixel = 3
        ds.PhotometricInterpretation = "RGB"
        ds.PlanarConfiguration = 0
        ds.PixelData = rgb.tobytes()

    (colour,) = open_path(_rewrite(write_opt(volume, tmp_path / "rgb.dcm"), to_rgb))
    np.testing.assert_array_equal(colour.bscans, volume.bscans)


def test_dicom_without_preamble_is_read_by_extension(tmp_path):
    path = write_opt(full_volume(n=2), tmp_path / "a.dcm")
    raw = tmp_path / "raw.dcm"
    raw.write_bytes(path.read_bytes()[132:])  # strip preamble + 'DICM' (old exports)
    (back,) = open_path(raw)
    np.testing.assert_array_equal(back.bscans, full_volume(n=2).bscans)


@pytest.mark.parametrize(
    "ref, why",
    [(["..", "secret.dcm"], "outside"), (["/etc", "passwd"], "absolute"), (["PT000000", "A\x00B"], "NUL byte")],
)
def test_dicomdir_entries_that_leave_its_folder_are_refused(tmp_path, ref, why):
    write_dicomdir([write_opt(full_volume(n=2, seed=i), tmp_path / f"v{i}.dcm") for i in range(2)], tmp_path / "media")
    secret = write_opt(full_volume(n=2, seed=2, laterality="OS"), tmp_path / "secret.dcm")
    dicomdir = tmp_path / "media" / "DICOMDIR"
    ds = pydicom.dcmread(dicomdir)
    image = [r for r in ds.DirectoryRecordSequence if "ReferencedFileID" in r][0]
    good = list(image.ReferencedFileID)
    image.ReferencedFileID = ref
    ds.save_as(dicomdir)
    errors: list[InputError] = []
    volumes = open_path(dicomdir, errors=errors)
    assert len(volumes) == 1 and len(errors) == 1  # the other member is read, the bad entry refused
    assert why in str(errors[0]) and "DICOMDIR" in str(errors[0])
    assert secret.exists() and good  # the outside file was never read as part of this DICOMDIR


@pytest.mark.parametrize("bits", [8, 16])
def test_jpeg2000_frames_decode_in_parallel_to_the_same_pixels(tmp_path, monkeypatch, bits):
    """Grey JPEG 2000 goes through imagecodecs on several threads; the pixels are pydicom's exactly."""
    import threading

    import core.io.dicom as dicom

    vol = full_volume(n=6, h=40, w=48, bits=bits)
    path = write_opt(vol, tmp_path / "j2k.dcm", transfer_syntax="JPEG2000Lossless")
    reference = pydicom.dcmread(path).pixel_array
    decode = dicom._imagecodecs_j2k()
    assert decode is not None  # imagecodecs is a dependency
    threads: set[int] = set()

    def counting(frame):
        threads.add(threading.get_ident())
        return decode(frame)

    monkeypatch.setattr(dicom, "_imagecodecs_j2k", lambda: counting)
    monkeypatch.setattr(dicom, "decode_workers", lambda: 2)
    (v,) = open_path(path)
    np.testing.assert_array_equal(v.bscans, reference)
    np.testing.assert_array_equal(v.bscans, vol.bscans)
    assert threading.get_ident() not in threads and len(threads) >= 1  # decoded on the pool's threads
    monkeypatch.setattr(dicom, "_imagecodecs_j2k", lambda: None)  # without imagecodecs: pydicom, same pixels
    (v2,) = open_path(path)
    np.testing.assert_array_equal(v2.bscans, vol.bscans)


def test_jpeg2000_frame_that_the_parallel_decoder_rejects_is_a_named_error(tmp_path, monkeypatch):
    import core.io.dicom as dicom

    path = write_opt(full_volume(n=3, h=40, w=48), tmp_path / "j2k.dcm", transfer_syntax="JPEG2000Lossless")

    def failing(frame):
        raise RuntimeError("opj_decode failed")  # what imagecodecs raises on damaged code blocks

    monkeypatch.setattr(dicom, "_imagecodecs_j2k", lambda: failing)
    with pytest.raises(InputError, match="damaged or truncated") as info:
        open_path(path)
    assert str(path) in str(info.value)
