"""Model files: weights as safetensors + a JSON model card, checked by sha256 on load.

A model directory holds ``<name>.json`` (the card), ``<name>.safetensors`` and optionally
``<name>.onnx`` (and ``<name>.int8.onnx``). The card says what the model is, how to feed it, how to
decide with it, what it was trained on and how well it did, and whether it is for clinical use.
Nothing here unpickles anything: a model file must not be able to run code.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors import SafetensorError

from core import limits
from core.errors import ModelCardError
from core.fileio import atomic_output, write_text_atomic
from core.tiers import resolve_tiers

__all__ = [
    "ModelCard",
    "Thresholds",
    "DEMO_WARNING",
    "RESEARCH_WARNING",
    "INTENDED_USE",
    "load_card",
    "save_card",
    "sha256_file",
    "save_weights",
    "load_weights",
    "CARD_FORMAT",
]

CARD_FORMAT = "octscreen-model-card/1"
DEMO_WARNING = "demonstration model \u2014 not for clinical use"
#: Shown with every result of a model trained on real data: no model of this project is a medical device.
RESEARCH_WARNING = "research model, not a medical device \u2014 not for clinical use"
INTENDED_USE = (
    "Research model for retinal OCT triage research: flags B-scans and eyes suggestive of CNV, DME or "
    "drusen for a clinician's review. Not a medical device and not for clinical use; not validated "
    "for any population, device or clinical decision."
)


@dataclass
class Thresholds:
    """Decision policy of ``core.aggregate`` (DESIGN.md, 'Aggregation'): which class refers at which
    tier and from which eye score, the evidence "no referral" needs, and (``tiers``) the card's own
    wording and time frames of the tiers (``core.tiers``; what it does not reword keeps the defaults).
    Cards written before the soon tier and the normal threshold existed get their defaults."""

    urgent: dict[str, float] = field(default_factory=lambda: {"cnv": 0.5})  # class -> eye-score threshold
    soon: dict[str, float] = field(default_factory=lambda: {"dme": 0.5})
    routine: dict[str, float] = field(default_factory=lambda: {"drusen": 0.5})
    normal: dict[str, float] = field(default_factory=lambda: {"normal": 0.5})  # "no referral" needs this score
    tiers: dict[str, dict[str, str]] = field(default_factory=dict)  # tier id -> {name, action, ...}
    review_margin: float = 0.1  # |score - threshold| < margin -> "review"
    top_k_fraction: float = 0.1  # k = max(1, ceil(fraction * n_gradable))
    min_gradable: int = 5  # fewer gradable B-scans -> "rescan"
    min_gradable_fraction: float = 0.5  # or fewer than this fraction of the volume


@dataclass
class ModelCard:
    name: str
    arch: str
    classes: list[str]
    input_size: tuple[int, int]  # (height, width) fed to the network
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    aspect: str = "squash"  # aspect-ratio policy of core.preprocess: squash | crop | letterbox
    version: str = "0.0.0"
    role: str = "student"  # student | teacher
    thresholds: Thresholds = field(default_factory=Thresholds)
    weights_file: str = ""  # relative to the card's folder
    weights_sha256: str = ""
    onnx_file: str = ""
    onnx_sha256: str = ""
    onnx_int8_file: str = ""
    onnx_int8_sha256: str = ""
    cam_layer: str = "forward_features"  # where CAMs are taken (GAP + linear head: CAM == Grad-CAM)
    training_data: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    split_hash: str = ""
    intended_use: str = ""
    demo: bool = False  # trained on synthetic data: show DEMO_WARNING everywhere
    reproduce: str = ""  # the command that rebuilds this model
    created: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    path: Path | None = field(default=None, compare=False)  # where the card was loaded from

    @property
    def warning(self) -> str:
        """The notice shown wherever this model's results are (GUI, report, CSV/JSON, DICOM): every
        model says it is not for clinical use."""
        return DEMO_WARNING if self.demo else RESEARCH_WARNING

    @property
    def trained_on(self) -> str:
        """A short 'trained on' line: the card's ``training_data.short`` or its description."""
        return str(self.training_data.get("short") or self.training_data.get("description") or "unknown data")

    @property
    def folder(self) -> Path:
        if self.path is None:
            raise ModelCardError(None, f"model card '{self.name}' has not been saved or loaded from a file")
        return self.path.parent

    def file(self, which: str = "weights") -> Path:
        """Absolute path of 'weights', 'onnx' or 'onnx_int8'."""
        rel = {"weights": self.weights_file, "onnx": self.onnx_file, "onnx_int8": self.onnx_int8_file}[which]
        if not rel:
            raise ModelCardError(self.path, f"the model card names no {which} file")
        p = self.folder / rel
        try:
            inside = p.resolve().is_relative_to(self.folder.resolve())
        except (OSError, ValueError):
            inside = False
        if Path(rel).is_absolute() or not inside:
            raise ModelCardError(self.path, f"{which}_file '{rel}' points outside the model card's folder; refusing it")
        return p

    def _checked(self, which: str) -> tuple[Path, str]:
        """The file's path and the card's sha256 for it, after the checks that need no reading."""
        p = self.file(which)
        expected = {"weights": self.weights_sha256, "onnx": self.onnx_sha256, "onnx_int8": self.onnx_int8_sha256}[which]
        if not p.is_file():
            raise ModelCardError(p, f"{which} file named by model card {self.path} is missing")
        if not expected:
            raise ModelCardError(
                self.path, f"{which}_sha256 is empty: the model card must carry the sha256 of every file it names"
            )
        return p, expected

    @staticmethod
    def _mismatch(p: Path, which: str) -> ModelCardError:
        return ModelCardError(
            p, f"{which} file does not match the sha256 in its model card (damaged or replaced); refusing to load it"
        )

    def verified_bytes(self, which: str = "weights") -> bytes:
        """The file's bytes, read and hashed once: what is checked is what is loaded (no window in
        which the file could be swapped), and a loader given bytes cannot pull in other, unhashed
        files (ONNX external data)."""
        p, expected = self._checked(which)
        data = p.read_bytes()
        if hashlib.sha256(data).hexdigest() != expected:
            raise self._mismatch(p, which)
        return data

    def verified_file(self, which: str = "weights") -> Path:
        """The file, after checking that it exists and matches the card's sha256 (streamed)."""
        p, expected = self._checked(which)
        if sha256_file(p) != expected:
            raise self._mismatch(p, which)
        return p

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("path")
        d["input_size"] = list(self.input_size)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return {"format": CARD_FORMAT, **d}

    def summary(self) -> str:
        """A few lines for the report and the About dialog."""
        lines = [
            f"{self.name} v{self.version} ({self.arch}, {self.role}), classes: {', '.join(self.classes)}",
            f"input {self.input_size[0]}x{self.input_size[1]}",
        ]
        if self.training_data.get("description"):
            lines.append(f"trained on: {self.training_data['description']}")
        acc = self.metrics.get("accuracy")
        if isinstance(acc, (int, float)):
            lines.append(f"test accuracy (per B-scan): {100 * acc:.1f} %")
        lines.append(self.warning.upper())
        return "\n".join(lines)


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _from_json(d: dict[str, Any], path: Path | None) -> ModelCard:
    if not isinstance(d, dict) or d.get("format") != CARD_FORMAT:
        raise ModelCardError(path, f'not an OCT Screen model card (expected "format": "{CARD_FORMAT}")')
    d = dict(d)
    d.pop("format")
    known = {f.name for f in dataclasses.fields(ModelCard)} - {"path"}
    unknown = set(d) - known
    if unknown:
        raise ModelCardError(path, f"unknown model card fields: {', '.join(sorted(unknown))}")
    for req in ("name", "arch", "classes", "input_size"):
        if req not in d:
            raise ModelCardError(path, f"model card lacks the required field '{req}'")
    try:
        d["thresholds"] = Thresholds(**d.get("thresholds", {}))
        d["input_size"] = tuple(int(v) for v in d["input_size"])
        d["mean"] = tuple(float(v) for v in d.get("mean", (0.485, 0.456, 0.406)))
        d["std"] = tuple(float(v) for v in d.get("std", (0.229, 0.224, 0.225)))
        d["classes"] = [str(c) for c in d["classes"]]
        card = ModelCard(**d, path=path)
    except (TypeError, ValueError) as e:
        raise ModelCardError(path, f"malformed model card: {e}") from None
    if len(card.input_size) != 2 or min(card.input_size) < 8:
        raise ModelCardError(path, f"input_size must be [height, width], got {list(card.input_size)}")
    top = limits.current().max_model_input
    if max(card.input_size) > top:
        raise ModelCardError(
            path, f"input_size {list(card.input_size)} exceeds the limit of {top} px per side (max_model_input)"
        )
    if len(card.classes) < 2 or len(set(card.classes)) != len(card.classes):
        raise ModelCardError(path, "classes must list at least two distinct names")
    from core.preprocess import ASPECT_POLICIES  # noqa: PLC0415 (heavy: numpy + OpenCV; the card reader stays light)

    try:
        resolve_tiers(card.thresholds.tiers)
    except ValueError as e:
        raise ModelCardError(path, f"thresholds.tiers: {e}") from None
    for tier in ("urgent", "soon", "routine", "normal"):
        value = getattr(card.thresholds, tier)
        if not isinstance(value, dict) or not all(
            isinstance(t, (int, float)) and 0.0 <= t <= 1.0 for t in value.values()
        ):
            raise ModelCardError(path, f"thresholds.{tier} must map class names to scores between 0 and 1")

    if card.aspect not in ASPECT_POLICIES:
        raise ModelCardError(path, f"aspect must be one of {', '.join(ASPECT_POLICIES)}, got {card.aspect!r}")
    if len(card.mean) != 3 or len(card.std) != 3 or min(card.std) <= 0:
        raise ModelCardError(path, "mean and std must have three values, std > 0")
    return card


SCHEMA_FILE = Path(__file__).parent / "schemas" / "model-card-1.schema.json"
"""The committed JSON schema of card format ``octscreen-model-card/1`` (a new format gets a new file)."""


@functools.lru_cache(maxsize=1)
def _validator():
    import jsonschema

    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema)


def check_schema(d: dict, path: Path | None = None) -> None:
    """Validate a card's JSON against :data:`SCHEMA_FILE`; the first problem (by field) is a
    ``ModelCardError`` naming the card and the field, e.g. ``field 'thresholds.urgent.cnv': 1.5 is
    greater than the maximum of 1``."""
    errors = sorted(_validator().iter_errors(d), key=lambda e: [str(x) for x in e.absolute_path])
    if not errors:
        return
    e = errors[0]
    where = ".".join(str(x) for x in e.absolute_path) or "(top level)"
    message = e.message if len(e.message) <= 200 else e.message[:199] + "\u2026"
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    raise ModelCardError(path, f"model card field '{where}': {message}{more} [schema {SCHEMA_FILE.name}]")


def load_card(path: str | Path) -> ModelCard:
    """Read a model card (the .json file, or a folder holding exactly one card)."""
    p = Path(path)
    if p.is_dir():
        cards = sorted(p.glob("*.json"))
        if len(cards) != 1:
            raise ModelCardError(p, f"expected one model card (*.json) in the folder, found {len(cards)}")
        p = cards[0]
    if not p.is_file():
        raise ModelCardError(p, "model card not found")
    top = limits.current().max_card_bytes
    if p.stat().st_size > top:
        raise ModelCardError(
            p, f"model card is {p.stat().st_size} bytes, more than the limit of {top} (max_card_bytes)"
        )
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelCardError(p, f"model card is not valid JSON ({e})") from None
    except RecursionError:
        raise ModelCardError(p, "model card is nested too deeply to be a model card") from None
    if not isinstance(d, dict):
        raise ModelCardError(p, f"model card must be a JSON object, not {type(d).__name__}")
    if d.get("format") == CARD_FORMAT:  # other formats get _from_json's message
        check_schema(d, p)
    return _from_json(d, p.resolve())


def save_card(card: ModelCard, path: str | Path) -> Path:
    """Write the card atomically (temp file + rename) and remember where it lives."""
    p = Path(path)
    write_text_atomic(p, json.dumps(card.to_json(), indent=2, ensure_ascii=False) + "\n", overwrite=True)
    card.path = p.resolve()
    return p


def save_weights(card: ModelCard, state_dict: dict, folder: str | Path) -> Path:
    """Write ``<name>.safetensors`` into ``folder``, fill in the card's file and sha256, save the card."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    wpath = folder / f"{card.name}.safetensors"
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    with atomic_output(wpath, overwrite=True) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", "model_card": f"{card.name}.json"})
    card.weights_file, card.weights_sha256 = wpath.name, sha256_file(wpath)
    save_card(card, folder / f"{card.name}.json")
    return wpath


def load_weights(card: ModelCard) -> dict:
    """The card's state dict, after the sha256 check (safetensors only; never a pickle)."""
    from safetensors.torch import load

    data = card.verified_bytes("weights")
    p = card.file("weights")
    try:
        return load(data)
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelCardError(p, f"weights file is not a readable safetensors file ({e})") from None
