"""CamNet: CAMs computed in the forward pass equal autograd Grad-CAM for GAP + linear heads."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from core.cam import CamHeadError, CamNet, gap_linear_head, gradcam, overlay


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.corrcoef(a.flatten().double().numpy(), b.flatten().double().numpy())[0, 1])


@pytest.fixture(scope="module")
def model():
    from core.models import build

    torch.manual_seed(1)
    m, _ = build("test_efficientnet", 3)
    # Random init leaves the head's bias at 0 and BN at identity; perturb so the test means something.
    with torch.no_grad():
        m.get_classifier().bias.copy_(torch.tensor([0.3, -0.2, 0.1]))
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
    return m.eval()


def test_logits_equal_model_output_and_gap_of_cams(model):
    x = torch.randn(3, 3, 96, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits, cams = CamNet(model)(x)
        ref = model(x)
    assert cams.shape == (3, 3, 3, 4)  # input / 32 for EfficientNet
    torch.testing.assert_close(logits, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cams.mean(dim=(2, 3)), logits, atol=1e-6, rtol=0)


@pytest.mark.parametrize("class_idx", [0, 1, 2])
def test_cams_match_autograd_gradcam(model, class_idx):
    x = torch.randn(2, 3, 160, 160, generator=torch.Generator().manual_seed(class_idx))
    with torch.no_grad():
        _, cams = CamNet(model)(x)
    g = gradcam(model, x, class_idx)
    assert g.shape == cams[:, class_idx].shape
    for b in range(2):
        r = _corr(cams[b, class_idx], g[b])
        assert r > 0.99, f"batch {b}: correlation {r:.4f}"
        # Grad-CAM is CAM scaled by 1/(h w) minus the bias share: check it exactly, not only correlated.
        h, w = g.shape[1:]
        expected = (cams[b, class_idx] - model.get_classifier().bias[class_idx]) / (h * w)
        torch.testing.assert_close(g[b], expected, atol=1e-5, rtol=1e-4)


def test_cams_localise_the_evidence(model):
    """A CAM is spatial: changing one region of the input changes the CAM mostly there."""
    torch.manual_seed(3)
    x = torch.randn(1, 3, 128, 128)
    y = x.clone()
    y[..., :, 96:] += 3.0  # change the right quarter only
    with torch.no_grad():
        _, a = CamNet(model)(x)
        _, b = CamNet(model)(y)
    diff = (a - b).abs().sum(dim=(0, 1))  # [fh, fw] = [4, 4]
    assert diff[:, 3].sum() > diff[:, 0].sum()


def test_convnext_head_is_refused_with_a_clear_message():
    from core.models import build

    m, _ = build("test_convnext", 3)
    with pytest.raises(CamHeadError, match="ConvNeXt.*average pool"):
        CamNet(m)


def test_head_that_transforms_pooled_features_is_refused(model):
    """Structure looks right but forward_head does more than GAP + linear: caught numerically."""
    import copy

    m = copy.deepcopy(model)
    m.forward_head = lambda f, pre_logits=False: torch.nn.functional.linear(
        torch.tanh(f.mean(dim=(2, 3))), m.get_classifier().weight, m.get_classifier().bias
    )
    with pytest.raises(CamHeadError, match="forward_head"):
        gap_linear_head(m)


def test_overlay_of_upsampled_cam_colours_only_where_the_cam_is_high():
    bscan = np.full((40, 60), 100, np.uint8)
    cam = np.zeros((4, 6), np.float32)
    cam[:, 5] = 1.0
    rgb = overlay(bscan, cam, alpha=0.5)
    assert rgb.shape == (40, 60, 3)
    assert (rgb[:, :20] == 100).all()  # low CAM: B-scan untouched
    assert not (rgb[:, -3:] == 100).all()  # high CAM: coloured


def test_overlay_strength_scales_with_the_class_probability():
    from core.cam import CAM_THRESHOLD, blend, cam_rgba, upsample_cam

    cam = np.zeros((7, 7), np.float32)
    cam[2:5, 2:5] = 1.0
    cam[0, 0] = 0.5
    full = cam_rgba(cam, 1.0, size=(70, 70), alpha=0.6)
    half = cam_rgba(cam, 0.5, size=(70, 70), alpha=0.6)
    none = cam_rgba(cam, 0.0, size=(70, 70), alpha=0.6)
    assert full.shape == (70, 70, 4) and full.dtype == np.uint8
    assert none[..., 3].max() == 0  # p = 0: fully transparent, however hot the (max-normalised) CAM
    assert full[35, 35, 3] == round(0.6 * 255)  # CAM 1, p 1: the full opacity
    np.testing.assert_allclose(half[..., 3].astype(float), full[..., 3] / 2.0, atol=1.0)  # half as strong
    assert (full[..., :3] == half[..., :3]).all()  # same colours: only the strength changes
    assert (full[..., 3][upsample_cam(cam, (70, 70)) <= CAM_THRESHOLD] == 0).all()  # weak evidence not coloured
    grey = np.full((70, 70), 90, np.uint8)
    assert (blend(grey, none) == 90).all()
    assert (overlay(grey, cam, alpha=0.6, probability=0.0) == 90).all()
    assert np.array_equal(overlay(grey, cam, alpha=0.6, probability=0.5), blend(grey, half))


def test_cam_is_upsampled_smoothly():
    from core.cam import upsample_cam

    cam = np.zeros((7, 7), np.float32)
    cam[3, 3] = 1.0
    smooth = upsample_cam(cam, (224, 224))
    bilinear = cv2.resize(cam, (224, 224), interpolation=cv2.INTER_LINEAR)
    assert smooth.shape == (224, 224) and 0.0 <= smooth.min() and smooth.max() <= 1.0

    def kinks(m: np.ndarray) -> float:  # the largest change of slope along a row: ridges and cell edges
        return float(np.abs(np.diff(m[112], n=2)).max())

    assert kinks(smooth) < 0.25 * kinks(bilinear)  # bilinear: a pyramid with sharp ridges; here a smooth bump
    assert abs(float(smooth[112, 112]) - 1.0) < 0.02  # the hot cell stays where it was, at its value
    assert smooth[:, :40].max() == 0.0  # no ringing far from it


def test_colour_bar_runs_from_weak_to_strong():
    from core.cam import CAM_THRESHOLD, colour_bar, heat_rgb

    bar = colour_bar(100, 6)
    assert bar.shape == (6, 100, 3) and bar.dtype == np.uint8
    assert (bar[0, 0] == heat_rgb(np.array([[CAM_THRESHOLD]]))[0, 0]).all()
    assert (bar[0, -1] == heat_rgb(np.array([[1.0]]))[0, 0]).all()
