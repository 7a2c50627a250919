"""write_opt: OPT IOD content, round trip through open_path, compression, atomic no-overwrite writes."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.io import open_path, write_opt
from core.io.writer import J2K_MIN_SIDE, OPT_SOP_CLASS
from core.volume import Laterality, OctVolume, PixelSpacing
from tests.conftest import run_tool
from tests.fixtures.oct_io import full_volume

SYNTAXES = [None, "JPEG2000Lossless", "RLELossless"]


@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("syntax", SYNTAXES)
def test_round_trip_pixels_and_metadata(tmp_path, bits, syntax):
    volume = full_volume(bits=bits)
    path = write_opt(volume, tmp_path / "exam.dcm", transfer_syntax=syntax)
    (back,) = open_path(path)
    assert back.bscans.dtype == volume.bscans.dtype
    np.testing.assert_array_equal(back.bscans, volume.bscans)
    assert back.patient == volume.patient
    assert back.study == volume.study
    assert back.device == volume.device
    assert back.spacing == volume.spacing
    assert back.laterality is Laterality.OS
    assert back.label == volume.label and back.frame_labels == volume.frame_labels
    assert back.source == path and back.source_files == (path,)
    expected_syntax = {
        None: pydicom.uid.ExplicitVRLittleEndian,
        "JPEG2000Lossless": pydicom.uid.JPEG2000Lossless,
        "RLELossless": pydicom.uid.RLELossless,
    }[syntax]
    assert back.extra["transfer_syntax"] == expected_syntax


def test_file_has_the_opt_iod_attributes(tmp_path):
    volume = full_volume(n=4)
    ds = pydicom.dcmread(write_opt(volume, tmp_path / "a.dcm"))
    assert ds.SOPClassUID == OPT_SOP_CLASS == ds.file_meta.MediaStorageSOPClassUID
    assert ds.Modality == "OPT" and ds.PhotometricInterpretation == "MONOCHROME2"
    assert ds.ImageLaterality == "L" and "Laterality" not in ds  # series Laterality: excluded by Image Laterality
    assert (ds.ConcatenationFrameOffsetNumber, ds.InConcatenationNumber, ds.InConcatenationTotalNumber) == (0, 1, 1)
    assert ds.AcquisitionDeviceTypeCodeSequence[0].CodingSchemeDesignator == "SCT"  # never the retired SRT
    assert int(ds.NumberOfFrames) == 4 and ds.BitsStored == 8
    for keyword in (
        "FrameOfReferenceUID",
        "Manufacturer",
        "ManufacturerModelName",
        "DeviceSerialNumber",
        "SoftwareVersions",
        "AcquisitionDateTime",
        "AcquisitionContextSequence",
        "ImageType",
        "AnatomicRegionSequence",
        "AcquisitionDeviceTypeCodeSequence",
        "DimensionIndexSequence",
        "PresentationLUTShape",
        "BurnedInAnnotation",
        "ContentDate",
        "InstanceNumber",
    ):
        assert keyword in ds, keyword
    shared = ds.SharedFunctionalGroupsSequence[0]
    assert [float(x) for x in shared.PixelMeasuresSequence[0].PixelSpacing] == [0.0039, 0.0114]
    assert float(shared.PixelMeasuresSequence[0].SliceThickness) == pytest.approx(0.1234)
    assert shared.FrameAnatomySequence[0].FrameLaterality == "L"
    frames = ds.PerFrameFunctionalGroupsSequence
    assert [f.FrameContentSequence[0].InStackPositionNumber for f in frames] == [1, 2, 3, 4]
    z = [float(f.PlanePositionSequence[0].ImagePositionPatient[2]) for f in frames]
    assert np.allclose(np.diff(z), 0.1234)


@pytest.mark.parametrize("syntax", SYNTAXES)
def test_dcmdump_parses_the_file(tmp_path, syntax):
    path = write_opt(full_volume(bits=16), tmp_path / "a.dcm", transfer_syntax=syntax)
    done = run_tool(["dcmdump", "-E", str(path)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "OphthalmicTomographyImageStorage" in done.stdout
    assert "InStackPositionNumber" in done.stdout
    assert "E:" not in done.stderr  # no parse errors


def test_refuses_to_overwrite_unless_asked(tmp_path):
    path = tmp_path / "a.dcm"
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="a.dcm"):
        write_opt(full_volume(), path)
    assert path.read_bytes() == b"precious"
    write_opt(full_volume(), path, overwrite=True)
    assert pydicom.dcmread(path).Modality == "OPT"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.dcm"]  # no temp file left behind


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pydicom.dataset.Dataset, "save_as", boom)
    with pytest.raises(OSError, match="disk full"):
        write_opt(full_volume(), tmp_path / "a.dcm")
    assert list(tmp_path.iterdir()) == []


def test_unknown_spacing_and_laterality_stay_unknown(tmp_path):
    volume = OctVolume(np.arange(2 * 8 * 8, dtype=np.uint8).reshape(2, 8, 8))
    (back,) = open_path(write_opt(volume, tmp_path / "a.dcm"))
    assert back.spacing == PixelSpacing()
    assert back.laterality is Laterality.UNKNOWN
    assert back.label is None and back.frame_labels is None
    np.testing.assert_array_equal(back.bscans, volume.bscans)


def test_rejects_unsupported_transfer_syntax(tmp_path):
    with pytest.raises(ValueError, match="not supported"):
        write_opt(full_volume(), tmp_path / "a.dcm", transfer_syntax="JPEGBaseline8Bit")
    assert not (tmp_path / "a.dcm").exists()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n=st.integers(1, 4),
    h=st.sampled_from([1, 7, 32, 33]),
    w=st.sampled_from([1, 6, 32, 35]),
    bits=st.sampled_from([8, 16]),
    side=st.sampled_from(["OD", "OS", "unknown"]),
    syntax=st.sampled_from(SYNTAXES),
    slice_mm=st.one_of(st.none(), st.floats(0.001, 5.0)),
    seed=st.integers(0, 2**16),
)
def test_round_trip_property(tmp_path, n, h, w, bits, side, syntax, slice_mm, seed):
    rng = np.random.default_rng(seed)
    dtype = np.uint8 if bits == 8 else np.uint16
    pixels = rng.integers(0, np.iinfo(dtype).max + 1, size=(n, h, w), dtype=dtype)
    volume = OctVolume(pixels, laterality=Laterality.parse(side), spacing=PixelSpacing(slice=slice_mm))
    path = tmp_path / f"p{seed}_{n}_{h}_{w}_{bits}.dcm"
    if syntax == "JPEG2000Lossless" and min(h, w) < J2K_MIN_SIDE:
        with pytest.raises(ValueError, match="at least 32"):
            write_opt(volume, path, transfer_syntax=syntax, overwrite=True)
        return
    write_opt(volume, path, transfer_syntax=syntax, overwrite=True)
    (back,) = open_path(path)
    np.testing.assert_array_equal(back.bscans, pixels)
    assert back.laterality is volume.laterality
    if slice_mm is None:
        assert back.spacing.slice is None
    else:
        assert back.spacing.slice == pytest.approx(slice_mm, rel=1e-9)
