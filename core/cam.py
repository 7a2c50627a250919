"""Class activation maps and their overlays.

One overlay for the GUI viewer, its thumbnails, the PDF report and the DICOM Secondary Capture
export, so they all look the same: :func:`cam_rgba` turns a CAM into RGBA (heat colour; opacity =
``alpha`` x the class probability x the CAM, nothing below ``threshold``), :func:`blend` lays it on
the B-scan, :func:`overlay` does both. A class the model gives p ~ 0 on a B-scan is therefore not
painted at all, however its (max-normalised) CAM looks. :func:`upsample_cam` brings the coarse map
(input / 32) to the B-scan's size smoothly (bicubic, no blocks or diamond-shaped ridges);
:func:`colour_bar` is the legend's colour ramp.
(The CAM network wrapper and its equivalence to Grad-CAM live below the overlay helpers.)
"""

from __future__ import annotations

import cv2
import numpy as np

from core.preprocess import to_uint8

__all__ = [
    "CAM_THRESHOLD",
    "DEFAULT_ALPHA",
    "blend",
    "cam_rgba",
    "colour_bar",
    "heat_rgb",
    "overlay",
    "upsample_cam",
]

#: The overlay's opacity at p = 1 and CAM = 1 (the GUI's default opacity, the report's and the exports').
DEFAULT_ALPHA = 0.6
#: CAM values below this fraction of the B-scan's strongest evidence are not coloured.
CAM_THRESHOLD = 0.2


def heat_rgb(cam: np.ndarray) -> np.ndarray:
    """CAM in [0, 1] ``[h, w]`` to an RGB uint8 heat map (OpenCV 'turbo': perceptually ordered)."""
    c = np.clip(np.nan_to_num(cam.astype(np.float32)), 0.0, 1.0)
    bgr = cv2.applyColorMap(np.round(c * 255).astype(np.uint8), cv2.COLORMAP_TURBO)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


_SPLINE_STEPS = 15  # odd: a centred box filter


def upsample_cam(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A CAM ``[fh, fw]`` in [0, 1] resized to ``size`` = (h, w), smoothly: bilinear, then two box
    filters one feature cell wide, which together make a cubic B-spline (continuous slope and
    curvature: no cell edges and no diamond-shaped ridges, as bilinear alone shows on a 7 x 7 map; no
    ringing, as bicubic interpolation has). The peak is scaled back to the map's own maximum."""
    c = np.clip(np.nan_to_num(np.asarray(cam, dtype=np.float32)), 0.0, None)
    h, w = int(size[0]), int(size[1])
    fh, fw = c.shape
    if (fh, fw) == (h, w):
        return np.clip(c, 0.0, 1.0)
    if h < fh or w < fw:
        return np.clip(cv2.resize(c, (w, h), interpolation=cv2.INTER_AREA), 0.0, 1.0)
    cell = (max(1, round(w / fw)), max(1, round(h / fh)))
    if min(cell) > 2 * _SPLINE_STEPS:
        # the same spline at _SPLINE_STEPS samples per cell, then bilinear to the full size: the
        # curve is already smooth at that scale, and 5-10x less work than filtering at full size
        mid = (fw * _SPLINE_STEPS, fh * _SPLINE_STEPS)
        up = cv2.resize(c, mid, interpolation=cv2.INTER_LINEAR)
        k = (_SPLINE_STEPS, _SPLINE_STEPS)
        up = cv2.blur(cv2.blur(up, k, borderType=cv2.BORDER_REPLICATE), k, borderType=cv2.BORDER_REPLICATE)
        up = cv2.resize(up, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    else:
        up = cv2.resize(c, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32)
        if cell != (1, 1):
            up = cv2.blur(cv2.blur(up, cell, borderType=cv2.BORDER_REPLICATE), cell, borderType=cv2.BORDER_REPLICATE)
    top, peak = float(c.max()), float(up.max())
    if top > 0 and peak > 0:
        up = up * np.float32(top / peak)
    return np.clip(up, 0.0, 1.0)


def cam_rgba(
    cam: np.ndarray,
    probability: float,
    *,
    size: tuple[int, int] | None = None,
    alpha: float = DEFAULT_ALPHA,
    threshold: float = CAM_THRESHOLD,
) -> np.ndarray:
    """CAM (any size, [0, 1]) to an RGBA uint8 overlay ``[h, w, 4]`` (``size`` default: the CAM's).

    Colour: the heat colour of the CAM value. Opacity: ``alpha * probability`` times the CAM's rise
    above ``threshold`` (0 at the threshold and below, 1 at CAM 1, so the heat fades in without a
    hard edge). The probability is the class's on this B-scan: at p = 0 the overlay is fully
    transparent, at p = 0.5 half as strong as at p = 1.
    """
    c = upsample_cam(cam, size if size is not None else cam.shape[:2])
    p = float(np.clip(np.nan_to_num(probability), 0.0, 1.0))
    rise = np.clip((c - threshold) / max(1.0 - threshold, 1e-6), 0.0, 1.0)
    a = float(alpha) * p * rise
    out = np.empty((*c.shape, 4), np.uint8)
    out[..., :3] = heat_rgb(c)
    out[..., 3] = np.round(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8)
    return out


def blend(base: np.ndarray, rgba: np.ndarray) -> np.ndarray:
    """Lay an RGBA overlay ``[h, w, 4]`` on a B-scan (grey uint8 ``[h, w]`` or RGB) -> RGB uint8."""
    rgb = base if base.ndim == 3 else np.repeat(base[..., None], 3, axis=2)
    a = rgba[..., 3:4].astype(np.float32) / 255.0
    out = rgb.astype(np.float32) * (1.0 - a) + rgba[..., :3].astype(np.float32) * a
    return np.round(out).astype(np.uint8)


def overlay(
    bscan: np.ndarray,
    cam: np.ndarray | None,
    alpha: float = DEFAULT_ALPHA,
    threshold: float = CAM_THRESHOLD,
    *,
    probability: float = 1.0,
) -> np.ndarray:
    """B-scan ``[h, w]`` (uint8/uint16) plus CAM (any size, [0, 1]) to RGB uint8 ``[h, w, 3]``:
    :func:`blend` of :func:`cam_rgba`. Pass the class's ``probability`` on this B-scan (the GUI and
    the report do); where the CAM is below ``threshold`` the B-scan shows through untouched, so the
    anatomy the model did not use stays readable."""
    grey = to_uint8(bscan)
    if cam is None or alpha <= 0:
        return np.repeat(grey[..., None], 3, axis=2)
    return blend(grey, cam_rgba(cam, probability, size=grey.shape, alpha=alpha, threshold=threshold))


def colour_bar(width: int, height: int, threshold: float = CAM_THRESHOLD) -> np.ndarray:
    """The legend's colour ramp, RGB uint8 ``[height, width, 3]``: left the weakest evidence that is
    coloured (``threshold``), right the strongest (CAM 1)."""
    ramp = np.linspace(threshold, 1.0, max(int(width), 2), dtype=np.float32)[None, :]
    return np.repeat(heat_rgb(ramp), max(int(height), 1), axis=0)


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
