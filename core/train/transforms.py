"""Augmentations (torchvision v2) and the evaluation transform.

The evaluation transform *is* ``core.preprocess.preprocess_bscans``: what the model sees in
validation is exactly what it sees in the clinic. Training transforms start from the same grey
uint8 B-scan and end with the same normalisation.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torchvision.transforms import v2

from core.preprocess import preprocess_bscans

__all__ = ["eval_transform", "train_transform", "tta_views", "AUGMENT_LEVELS"]

AUGMENT_LEVELS = ("strong", "light", "none")


class _EvalTransform:
    """Picklable (DataLoader workers under 'spawn') wrapper of :func:`core.preprocess.preprocess_bscans`."""

    def __init__(self, size: tuple[int, int], mean: Sequence[float], std: Sequence[float]):
        self.size, self.mean, self.std = (int(size[0]), int(size[1])), tuple(mean), tuple(std)

    def __call__(self, img: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(preprocess_bscans(img, self.size, self.mean, self.std)[0])


class _TrainTransform:
    """Picklable uint8 ``[h, w]`` -> float32 ``[3, H, W]`` through a torchvision v2 pipeline."""

    def __init__(self, pipeline: v2.Compose):
        self.pipeline = pipeline

    def __call__(self, img: np.ndarray) -> torch.Tensor:
        return self.pipeline(np.array(img, dtype=np.uint8, copy=True)[..., None]).contiguous()


def eval_transform(input_size: tuple[int, int], mean: Sequence[float], std: Sequence[float]
                   ) -> Callable[[np.ndarray], torch.Tensor]:
    """uint8 ``[h, w]`` -> float32 ``[3, H, W]``, identical to :func:`core.preprocess.preprocess_bscans`."""
    return _EvalTransform(input_size, mean, std)


class _GreyToRgb(torch.nn.Module):
    """``[1, H, W]`` -> ``[3, H, W]`` (a view, no copy)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.expand(3, -1, -1) if x.shape[-3] == 1 else x


def train_transform(input_size: tuple[int, int], mean: Sequence[float], std: Sequence[float],
                    level: str = "strong", *, rand_magnitude: int = 9, vflip: float = 0.0
                    ) -> Callable[[np.ndarray], torch.Tensor]:
    """The training augmentation: uint8 ``[h, w]`` -> float32 ``[3, H, W]``.

    ``strong`` (the KD-OCT recipe): resize to ~1.14x + random crop, RandAugment, rotation, affine
    (shear, scale), colour jitter, horizontal flip, blur, posterize, random erasing.
    ``light``: resize + random crop + horizontal flip. ``none``: the evaluation transform.
    """
    if level not in AUGMENT_LEVELS:
        raise ValueError(f"augment must be one of {AUGMENT_LEVELS}, not {level!r}")
    if level == "none":
        return eval_transform(input_size, mean, std)
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
    return _TrainTransform(v2.Compose(ops))


def tta_views(x: torch.Tensor) -> list[torch.Tensor]:
    """Test-time views of a normalised batch ``[n, 3, H, W]``: original, horizontal flip, a small
    rescale (zoom in 8 %, crop back) and small rotations (+-5 degrees)."""
    h, w = x.shape[-2:]
    zoom = v2.functional.center_crop(v2.functional.resize(x, [round(h * 1.08), round(w * 1.08)], antialias=True),
                                     [h, w])
    return [x, torch.flip(x, dims=[-1]), zoom, v2.functional.rotate(x, 5.0), v2.functional.rotate(x, -5.0)]
