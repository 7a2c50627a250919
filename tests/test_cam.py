"""CamNet: CAMs computed in the forward pass equal autograd Grad-CAM for GAP + linear heads."""

from __future__ import annotations

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
