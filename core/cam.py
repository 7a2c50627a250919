"""Class activation maps and their overlays.

Overlay: a B-scan (grey) with a CAM in [0, 1] blended as a heat colour map; used by the GUI viewer,
the report and the DICOM Secondary Capture export, so the three look the same.
(The CAM network wrapper and its equivalence to Grad-CAM live below the overlay helpers.)
"""

from __future__ import annotations

import cv2
import numpy as np

from core.preprocess import to_uint8

__all__ = ["heat_rgb", "overlay"]


def heat_rgb(cam: np.ndarray) -> np.ndarray:
    """CAM in [0, 1] ``[h, w]`` to an RGB uint8 heat map (OpenCV 'turbo': perceptually ordered)."""
    c = np.clip(np.nan_to_num(cam.astype(np.float32)), 0.0, 1.0)
    bgr = cv2.applyColorMap(np.round(c * 255).astype(np.uint8), cv2.COLORMAP_TURBO)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def overlay(bscan: np.ndarray, cam: np.ndarray | None, alpha: float = 0.4, threshold: float = 0.2) -> np.ndarray:
    """B-scan ``[h, w]`` (uint8/uint16) plus CAM (any size, [0, 1]) to RGB uint8 ``[h, w, 3]``.

    Where the CAM is below ``threshold`` the B-scan shows through untouched, so the anatomy the
    model did not use stays readable; above it the heat colour is blended with weight
    ``alpha * cam``.
    """
    grey = to_uint8(bscan)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    if cam is None or alpha <= 0:
        return rgb
    h, w = grey.shape
    c: np.ndarray = cam.astype(np.float32)
    if c.shape != (h, w):
        c = cv2.resize(c, (w, h), interpolation=cv2.INTER_LINEAR)
    c = np.clip(c, 0.0, 1.0)
    weight = np.where(c >= threshold, alpha * c, 0.0)[..., None]
    out = rgb.astype(np.float32) * (1 - weight) + heat_rgb(c).astype(np.float32) * weight
    return np.round(out).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# CAM network: logits and class activation maps in one forward pass.
#
# For a network that ends in global average pooling followed by a linear layer,
#     logits[c] = sum_k W[c, k] * mean_hw F[k, h, w] + b[c],
# so the class activation map  cams[c, h, w] = sum_k W[c, k] * F[k, h, w] + b[c]  averages back to
# the logits exactly, and Grad-CAM at the last feature map (weights = spatial mean of
# d logit_c / dF = W[c, :] / (h w)) is the same map up to a positive factor and a constant.
# The exported ONNX graph therefore returns both, and every B-scan gets its heat map for free.
# --------------------------------------------------------------------------------------------

__all__ += ["CamNet", "CamHeadError", "gap_linear_head", "gradcam"]  # noqa: F822 (CamNet: module __getattr__)

# torch is imported only when the network part is used: the overlay helpers (GUI viewer, report)
# and an ONNX-only screening process never load it.


class CamHeadError(ValueError):
    """The model's head is not global-average-pool + linear, so CAM != Grad-CAM for it."""


def gap_linear_head(model):
    """The ``nn.Linear`` classifier of a timm model whose head is global average pooling + (dropout) + linear.

    Checks the structure (a ``global_pool`` doing plain average pooling, a ``nn.Linear`` classifier
    from ``get_classifier()``, no norm / MLP in between) and then numerically: ``forward_head`` on
    random features must equal ``Linear(mean_hw(features))``. Raises ``CamHeadError`` otherwise
    (e.g. ConvNeXt, whose head applies a LayerNorm after pooling).
    """
    import torch
    from torch import nn

    name = type(model).__name__
    if not (hasattr(model, "forward_features") and hasattr(model, "forward_head") and hasattr(model, "get_classifier")):
        raise CamHeadError(f"{name}: not a timm model (needs forward_features / forward_head / get_classifier)")
    fc = model.get_classifier()
    if not isinstance(fc, nn.Linear):
        raise CamHeadError(
            f"{name}: classifier is {type(fc).__name__}, not a single linear layer; "
            "CAMs need a global-average-pool + linear head"
        )
    pool = getattr(model, "global_pool", None)
    pool_type = getattr(pool, "pool_type", None)
    if pool is None or pool_type not in ("avg", "fast"):
        raise CamHeadError(
            f"{name}: head is not plain global average pooling + linear "
            f"(pool {pool_type or 'inside a head module'}); CAM would not equal Grad-CAM"
        )
    k = fc.in_features
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            f = torch.randn(2, k, 3, 4, generator=torch.Generator().manual_seed(0), dtype=fc.weight.dtype)
            f = f.to(fc.weight.device)
            ref = model.forward_head(f)
            mine = nn.functional.linear(f.mean(dim=(2, 3)), fc.weight, fc.bias)
    finally:
        model.train(was_training)
    if ref.shape != mine.shape or not torch.allclose(ref, mine, atol=1e-4, rtol=1e-4):
        raise CamHeadError(
            f"{name}: forward_head is not global-average-pool + linear "
            "(it transforms the pooled features); CAM would not equal Grad-CAM"
        )
    return fc


def _cam_net_class():
    """Define ``CamNet`` (an ``nn.Module``) on first use."""
    from torch import nn

    class CamNet(nn.Module):
        """Wraps a timm GAP + linear classifier; ``forward(x)`` returns ``(logits [b, C], cams [b, C, fh, fw])``.

        ``cams`` are raw (not ReLU'd, not normalised) at feature resolution (input / 32 for
        EfficientNet); ``logits == cams.mean((2, 3))`` by construction (the bias is spread evenly).
        Raises ``CamHeadError`` for other heads.
        """

        def __init__(self, model: nn.Module):
            super().__init__()
            fc = gap_linear_head(model)
            self.model = model
            self.num_classes = fc.out_features
            self._fc = fc  # the same module as inside ``model`` (shared weights)

        def forward(self, x):
            feats = self.model.forward_features(x)
            cams = nn.functional.conv2d(feats, self._fc.weight[:, :, None, None], self._fc.bias)
            return cams.mean(dim=(2, 3)), cams

    CamNet.__module__, CamNet.__qualname__ = __name__, "CamNet"
    return CamNet


def __getattr__(name: str):
    """Module attribute hook (PEP 562): ``core.cam.CamNet`` imports torch and defines the class once."""
    if name == "CamNet":
        cls = _cam_net_class()
        globals()["CamNet"] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def gradcam(model, x, class_idx: int):
    """Grad-CAM at the output of ``forward_features`` via autograd: ``[b, fh, fw]`` (no ReLU).

    weights_k = mean over (h, w) of d logit_c / d F_k;  map = sum_k weights_k * F_k. Used to check
    that ``CamNet``'s maps are Grad-CAM (tests); runs the model in eval mode.
    """
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            feats = model.forward_features(x.detach()).detach().requires_grad_(True)
            logits = model.forward_head(feats)
            (grads,) = torch.autograd.grad(logits[:, class_idx].sum(), feats)
    finally:
        model.train(was_training)
    weights = grads.mean(dim=(2, 3), keepdim=True)
    return (weights * feats).sum(dim=1).detach()
