"""Tests of the shared contracts: OctVolume, Laterality, preprocessing, CAM overlay, model registry."""

import numpy as np
import pytest
import torch

from core.cam import heat_rgb, overlay
from core.models import build, spec
from core.preprocess import preprocess_bscans, to_uint8, to_unit
from core.volume import EyeKey, Laterality, OctVolume, PatientInfo, StudyInfo


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("R", Laterality.OD),
        ("l", Laterality.OS),
        ("OD", Laterality.OD),
        ("left", Laterality.OS),
        ("", Laterality.UNKNOWN),
        (None, Laterality.UNKNOWN),
        ("B", Laterality.UNKNOWN),
    ],
)
def test_laterality_parse(raw, expected):
    assert Laterality.parse(raw) is expected


def test_laterality_dicom_codes():
    assert (Laterality.OD.dicom, Laterality.OS.dicom, Laterality.UNKNOWN.dicom) == ("R", "L", "")


def test_volume_accepts_single_bscan_and_checks_types():
    v = OctVolume(np.zeros((10, 12), np.uint8), laterality="L")
    assert v.shape == (1, 10, 12) and v.laterality is Laterality.OS and v.bit_depth == 8
    with pytest.raises(ValueError, match="uint8 or uint16"):
        OctVolume(np.zeros((2, 4, 4), np.float32))
    with pytest.raises(ValueError, match="one entry per B-scan"):
        OctVolume(np.zeros((2, 4, 4), np.uint16), frame_labels=("normal",))
    with pytest.raises(ValueError, match="at least one"):
        OctVolume(np.zeros((0, 4, 4), np.uint8))


def test_volume_describe_and_eye_key():
    v = OctVolume(
        np.zeros((25, 496, 512), np.uint8),
        laterality="OD",
        patient=PatientInfo(patient_id="P7"),
        study=StudyInfo(study_uid="1.2", study_date="20260131"),
    )
    assert v.describe() == "P7 OD 2026-01-31, 25 x 496 x 512"
    assert v.eye == EyeKey("P7", "1.2", Laterality.OD)
    assert v.patient.deidentified("X1") == PatientInfo(patient_id="X1")


def test_to_unit_scales_by_dtype():
    assert to_unit(np.array([[0, 255]], np.uint8)).tolist() == [[0.0, 1.0]]
    a16 = np.linspace(0, 4000, 1000).astype(np.uint16).reshape(10, 100)
    u = to_unit(a16)
    assert u.dtype == np.float32 and u.max() == 1.0 and 0.99 < np.percentile(u, 99.9) <= 1.0
    assert to_uint8(a16).max() == 255


def test_preprocess_shape_and_normalisation():
    b = np.full((3, 496, 512), 255, np.uint8)
    x = preprocess_bscans(b, (64, 96), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert x.shape == (3, 3, 64, 96) and x.dtype == np.float32
    np.testing.assert_allclose(x, 2.0, rtol=1e-6)  # (1 - 0.5) / 0.25


def test_overlay_leaves_cold_regions_untouched_and_colours_hot_ones():
    b = np.full((40, 60), 100, np.uint8)
    cam = np.zeros((4, 6), np.float32)
    cam[1:3, 2:4] = 1.0
    rgb = overlay(b, cam, alpha=0.5)
    assert rgb.shape == (40, 60, 3) and rgb.dtype == np.uint8
    assert (rgb[0, 0] == 100).all()  # far from the hot spot: grey untouched
    centre = rgb[20, 30].astype(int)
    assert not (centre == 100).all()  # hot spot: coloured
    assert (overlay(b, cam, alpha=0.0) == 100).all()
    assert heat_rgb(np.array([[0.0, 1.0]])).shape == (1, 2, 3)


def test_registry_and_build_without_downloads():
    assert spec("efficientnet_b2").input_size == 384
    assert spec("convnextv2_large").kwargs["drop_path_rate"] == 0.3
    model, status = build("test_efficientnet", 3, pretrained=True)  # nothing cached: from scratch, no network
    assert not status.loaded and "from scratch" in str(status)
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 3)


def test_build_refuses_pickled_pretrained_file(tmp_path):
    f = tmp_path / "w.pth"
    f.write_bytes(b"not really")
    with pytest.raises(ValueError, match="pickles are refused"):
        build("test_efficientnet", 3, pretrained_file=f)


def test_build_loads_local_safetensors_backbone(tmp_path):
    from safetensors.torch import save_file

    src, _ = build("test_efficientnet", 1000)
    sd = {k: v.contiguous() for k, v in src.state_dict().items()}
    save_file(sd, str(tmp_path / "w.safetensors"))
    model, status = build("test_efficientnet", 3, pretrained_file=tmp_path / "w.safetensors")
    assert status.loaded
    torch.testing.assert_close(model.conv_stem.weight, src.conv_stem.weight)  # backbone copied
    assert model.classifier.out_features == 3  # new head
