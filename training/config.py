"""Recipe configs: JSON files with sections, plus ``--set key=value`` overrides (dotted keys).

Sections: ``data`` (source, root, classes, ...), ``split`` (folds, val_fraction, seed),
``runtime`` (training options shared by teacher and student: device, amp, workers, seed, ...),
``teacher`` and ``student`` (:class:`core.train.loop.TrainConfig` fields), ``test_data`` (a
separate test set when ``split.folds == 1``), ``synthetic_mix`` (synthetic B-scans added to the
training patients only: ``fraction`` of the real training B-scans, 0 = none), ``export`` (folder,
name, int8, version).
A recipe may start with ``"base": "<other recipe>"`` and override only what differs.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.train.loop import TrainConfig

__all__ = ["load_config", "apply_overrides", "train_config", "DEFAULTS", "config_dir"]

DEFAULTS: dict[str, Any] = {
    "name": "run",
    "description": "",
    "data": {
        "source": "synthetic",
        "root": None,
        "classes": ["normal", "drusen", "cnv"],
        "label_mode": "bscan",
        "split": "train",
        "cache_dir": "runs/cache",
        "patients": 30,
        "seed": 0,
        "n_bscans": 25,
        "height": 496,
        "width": 512,
    },
    "test_data": None,
    "split": {"folds": 5, "val_fraction": 0.15, "seed": 0},
    "runtime": {},
    "teacher": {},
    "student": {},
    "crossval": {
        "control": True,
        "teacher": True,
        "ensemble": [{"name": "lite0-224", "arch": "tf_efficientnet_lite0", "input_size": 224}],
    },
    "synthetic_mix": {"fraction": 0.0, "patients": 40, "n_bscans": 12, "seed": 1},
    "export": {"folder": "resources/models", "name": "octscreen-student", "int8": False, "version": "0.1.0"},
}


def config_dir() -> Path:
    """The folder of the bundled recipes (training/configs)."""
    return Path(__file__).resolve().parent / "configs"


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_overrides(cfg: dict, sets: Sequence[str]) -> dict:
    """Apply ``section.key=value`` overrides (value parsed as JSON, else kept as a string)."""
    out = copy.deepcopy(cfg)
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects key=value, got {item!r}")
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            if node.get(p) is None:
                node[p] = {}
            if not isinstance(node[p], dict):
                raise ValueError(f"--set {key}: '{p}' is not a section")
            node = node[p]
        node[parts[-1]] = _parse_value(value)
    return out


@dataclass
class DataConfig:
    """``data`` (and ``test_data``): where the B-scans come from (``core.train.data.load_samples``)."""

    source: str = "synthetic"  # oct2017 | neh | manifest | synthetic
    root: str | None = None
    classes: list[str] = field(default_factory=lambda: ["normal", "drusen", "cnv"])
    label_mode: str = "bscan"
    split: str = "train"
    cache_dir: str = "runs/cache"
    patients: int = 30
    seed: int = 0
    n_bscans: int = 25
    height: int = 496
    width: int = 512
    workers: int = 1
    neh_csv: str | bool | None = None
    worst_case: bool = False


@dataclass
class SplitConfig:
    """``split``: the patient-level plan (``core.train.splits.make_splits``)."""

    folds: int = 5
    val_fraction: float = 0.15
    seed: int = 0


@dataclass
class CrossvalConfig:
    """``crossval``: whether every fold also trains the student without its teacher (the control), and
    whether it trains the teacher and the distilled student (``teacher: false`` cross-validates the
    control alone: an ablation of the student at a third of the cost; ``teacher: "control"`` distils
    the student from the fold's own control, a teacher as strong as the control by construction
    ("born-again" self-distillation: KD against its control at two models per fold); ``teacher:
    "ensemble"`` distils it from the mean of the fold's control and the ``ensemble`` members' logits,
    each member another control (a dict of student options with a ``name``; default the Lite0 at
    224 px: two architectures make a stronger teacher than two seeds of one)."""

    control: bool = True
    teacher: bool | str = True
    ensemble: list[dict[str, Any]] = field(
        default_factory=lambda: [{"name": "lite0-224", "arch": "tf_efficientnet_lite0", "input_size": 224}]
    )


@dataclass
class SyntheticMixConfig:
    """``synthetic_mix``: core.synthetic B-scans added to each fold's *training* B-scans (never to its
    validation or test patients), ``fraction`` × the number of real training B-scans, drawn with
    ``seed`` from ``patients`` simulated patients of ``n_bscans`` B-scans per eye. Only the classes
    the simulator knows (normal, drusen, CNV) are added. 0 (the default) adds none."""

    fraction: float = 0.0
    patients: int = 40
    n_bscans: int = 12
    seed: int = 1

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.fraction) <= 4.0:
            raise ValueError(f"synthetic_mix.fraction must be between 0 and 4, not {self.fraction}")


@dataclass
class ExportConfig:
    """``export``: where and under which name a trained student is exported."""

    folder: str = "resources/models"
    name: str = "octscreen-student"
    int8: bool = False
    version: str = "0.1.0"
    model: str = "student"  # what `train demo` ships: the distilled "student" or the "control"
    # the student's teacher in `train demo`: the "recipe"'s teacher section, or the "ensemble" of the
    # control and the crossval.ensemble members (as crossval.teacher = "ensemble" trains them)
    teacher: str = "recipe"
    # with export.teacher "ensemble": the distilled student's seed (None: runtime.seed, as its teachers')
    seed: int | None = None


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "test_data": DataConfig,
    "split": SplitConfig,
    "crossval": CrossvalConfig,
    "synthetic_mix": SyntheticMixConfig,
    "export": ExportConfig,
}


def _check_keys(where: str, section: str, given: dict, known: set[str]) -> None:
    unknown = sorted(set(given) - known)
    if unknown:
        raise ValueError(
            f"{where}: unknown key(s) in section '{section}': {', '.join(unknown)} (known: {', '.join(sorted(known))})"
        )


def validate(cfg: dict, where: str = "config") -> dict:
    """Check every section against its dataclass (``data``, ``test_data``, ``split``, ``crossval``,
    ``synthetic_mix``, ``export``) or :class:`TrainConfig` (``runtime``, ``teacher``, ``student``): an
    unknown key (a typo such as ``data.patiens``) is an error naming the section, never silently
    ignored. Returns ``cfg``."""
    for name, kind in SECTIONS.items():
        section = cfg.get(name)
        if section is None:
            continue
        if not isinstance(section, dict):
            raise ValueError(f"{where}: section '{name}' must be an object")
        _check_keys(where, name, section, {f.name for f in dataclasses.fields(kind)})
        kind(**section)
    train_keys = {f.name for f in dataclasses.fields(TrainConfig)}
    for name in ("runtime", "teacher", "student"):
        section = cfg.get(name) or {}
        if not isinstance(section, dict):
            raise ValueError(f"{where}: section '{name}' must be an object")
        _check_keys(where, name, section, train_keys)
    return cfg


def load_config(path: str | Path, sets: Sequence[str] = ()) -> dict:
    """A recipe: the JSON file over :data:`DEFAULTS`, then the ``--set`` overrides.

    A bare name (``synthetic-cpu``) is looked up in the bundled configs folder.
    """
    p = Path(path)
    if not p.is_file() and (config_dir() / f"{p.name}.json").is_file():
        p = config_dir() / f"{p.name}.json"
    if not p.is_file():
        raise FileNotFoundError(f"{p}: config file not found")
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}: config is not valid JSON ({e})") from None
    base = raw.pop("base", None)
    unknown = set(raw) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"{p}: unknown config sections: {', '.join(sorted(unknown))}")
    parent = DEFAULTS
    if base:  # "base": another recipe (a path relative to this one, or a bundled name) this one extends
        bp = p.parent / base if (p.parent / base).is_file() else Path(base)
        parent = {k: v for k, v in load_config(bp).items() if not k.startswith("_")}
    cfg = apply_overrides(_merge(parent, raw), sets)
    validate(cfg, str(p) + (f" with --set {' '.join(sets)}" if sets else ""))
    cfg["_path"] = os.path.relpath(p) if not os.path.relpath(p).startswith("..") else str(p)
    return cfg


def train_config(cfg: dict, role: str, **extra: Any) -> TrainConfig:
    """The :class:`TrainConfig` of ``role`` (teacher | student): runtime options, then the role's section."""
    d = {**cfg.get("runtime", {}), **cfg.get(role, {}), **extra}
    d.setdefault("classes", list(cfg["data"]["classes"]))
    d.setdefault("role", "teacher" if role == "teacher" else "student")
    d.setdefault("name", role)
    return TrainConfig.from_dict(d)
