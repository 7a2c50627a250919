"""Augmentations (torchvision v2) and the evaluation transform.

The evaluation transform *is* ``core.preprocess.preprocess_bscans``: what the model sees in
validation is exactly what it sees in the clinic. Training transforms start from the same grey
uint8 B-scan and end with the same normalisation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import cast

import numpy as np
import torch
from torchvision.transforms import v2

from core.preprocess import fit_aspect, preprocess_bscans

__all__ = ["eval_transform", "train_transform", "tta_views", "AUGMENT_LEVELS"]

AUGMENT_LEVELS = ("strong", "light", "none")


class _EvalTransform:
    """Picklable (DataLoader workers under 'spawn') wrapper of :func:`core.preprocess.preprocess_bscans`."""

    def __init__(self, size: tuple[int, int], mean: Sequence[float], std: Sequence[float], aspect: str = "squash"):
        self.size, self.mean, self.std = (int(size[0]), int(size[1])), tuple(mean), tuple(std)
        self.aspect = aspect

    def __call__(self, img: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(preprocess_bscans(img, self.size, self.mean, self.std, self.aspect)[0])


class _TrainTransform:
    """Picklable uint8 ``[h, w]`` -> float32 ``[3, H, W]`` through a torchvision v2 pipeline.

    Before the pipeline: with probability ``lateral_p`` a random horizontal window of
    ``lateral_scale`` (fractions of the width) is cut out, so that the lateral pixel scale varies
    within every class (OCT2017's image widths differ by class: without this the model can learn
    the width instead of the retina); then the aspect policy (as in the clinic).
    """

    def __init__(
        self,
        pipeline: v2.Compose,
        size: tuple[int, int] = (0, 0),
        aspect: str = "squash",
        lateral_scale: tuple[float, float] = (1.0, 1.0),
        lateral_p: float = 0.0,
    ):
        self.pipeline = pipeline
        self.size, self.aspect = size, aspect
        self.lateral_scale, self.lateral_p = lateral_scale, lateral_p

    def __call__(self, img: np.ndarray) -> torch.Tensor:
        a = np.asarray(img, dtype=np.uint8)
        if self.lateral_p > 0 and torch.rand(()) < self.lateral_p:
            lo, hi = self.lateral_scale
            f = lo + (hi - lo) * float(torch.rand(()))
            w = a.shape[1]
            cw = max(8, int(round(w * f)))
            x0 = int(torch.randint(0, max(1, w - cw + 1), ()))
            a = a[:, x0 : x0 + cw]
        if self.aspect != "squash":
            a = fit_aspect(a, self.size, self.aspect)
        return self.pipeline(np.array(a, dtype=np.uint8, copy=True)[..., None]).contiguous()


def eval_transform(
    input_size: tuple[int, int], mean: Sequence[float], std: Sequence[float], aspect: str = "squash"
) -> Callable[[np.ndarray], torch.Tensor]:
    """uint8 ``[h, w]`` -> float32 ``[3, H, W]``, identical to :func:`core.preprocess.preprocess_bscans`."""
    return _EvalTransform(input_size, mean, std, aspect)


class _GreyToRgb(torch.nn.Module):
    """``[1, H, W]`` -> ``[3, H, W]`` (a view, no copy)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.expand(3, -1, -1) if x.shape[-3] == 1 else x


def train_transform(
    input_size: tuple[int, int],
    mean: Sequence[float],
    std: Sequence[float],
    level: str = "strong",
    *,
    rand_magnitude: int = 9,
    vflip: float = 0.0,
    aspect: str = "squash",
    lateral_scale: tuple[float, float] = (1.0, 1.0),
    lateral_p: float = 0.0,
) -> Callable[[np.ndarray], torch.Tensor]:
    """The training augmentation: uint8 ``[h, w]`` -> float32 ``[3, H, W]``.

    ``strong`` (the KD-OCT recipe): resize to ~1.14x + random crop, RandAugment, rotation, affine
    (shear, scale), colour jitter, horizontal flip, blur, posterize, random erasing.
    ``light``: resize + random crop + horizontal flip. ``none``: the evaluation transform.
    ``aspect`` is the card's aspect policy (``core.preprocess``); ``lateral_scale`` / ``lateral_p``
    the random lateral window (see ``_TrainTransform``; off by default, and with ``none``).
    """
    if level not in AUGMENT_LEVELS:
        raise ValueError(f"augment must be one of {AUGMENT_LEVELS}, not {level!r}")
    if level == "none":
        return eval_transform(input_size, mean, std, aspect)
    h, w = int(input_size[0]), int(input_size[1])
    big = (round(h * 8 / 7), round(w * 8 / 7))
    ops: list = [v2.ToImage(), v2.Resize(big, antialias=True), v2.RandomCrop((h, w)), v2.RandomHorizontalFlip()]
    if vflip > 0:
        ops.append(v2.RandomVerticalFlip(vflip))
    if level == "strong":
        ops += [
            v2.RandomApply([v2.RandAugment(num_ops=2, magnitude=rand_magnitude)], p=0.5),
            v2.RandomApply([v2.RandomRotation(15)], p=0.5),
            v2.RandomApply([v2.RandomAffine(degrees=0, shear=10, scale=(0.9, 1.1))], p=0.5),
            v2.ColorJitter(brightness=0.2, contrast=0.2),
            v2.RandomApply([v2.GaussianBlur(5, sigma=(0.1, 1.5))], p=0.2),
            v2.RandomPosterize(bits=6, p=0.2),
        ]
    ops += [v2.ToDtype(torch.float32, scale=True), _GreyToRgb(), v2.Normalize(list(mean), list(std))]
    if level == "strong":
        ops.append(v2.RandomErasing(p=0.25, scale=(0.02, 0.15), value=0))
    # (a config from JSON gives a list; _TrainTransform unpacks it as (lo, hi))
    scale = cast(tuple[float, float], tuple(lateral_scale))
    return _TrainTransform(v2.Compose(ops), (h, w), aspect, scale, float(lateral_p))


def tta_views(x: torch.Tensor) -> list[torch.Tensor]:
    """Test-time views of a normalised batch ``[n, 3, H, W]``: original, horizontal flip, a small
    rescale (zoom in 8 %, crop back) and small rotations (+-5 degrees)."""
    h, w = x.shape[-2:]
    zoom = v2.functional.center_crop(
        v2.functional.resize(x, [round(h * 1.08), round(w * 1.08)], antialias=True), [h, w]
    )
    return [x, torch.flip(x, dims=[-1]), zoom, v2.functional.rotate(x, 5.0), v2.functional.rotate(x, -5.0)]
