"""Model card + safetensors weights: round trip, sha256 verification, malformed cards."""

import json

import pytest
import torch

from core.errors import ModelCardError
from core.modelcard import (
    DEMO_WARNING,
    ModelCard,
    Thresholds,
    load_card,
    load_weights,
    save_card,
    save_weights,
    sha256_file,
)


def _card(**kw):
    return ModelCard(name="m", arch="test_efficientnet", classes=["normal", "drusen", "cnv"], input_size=(64, 64), **kw)


def test_round_trip_with_weights(tmp_path):
    card = _card(demo=True, thresholds=Thresholds(urgent={"cnv": 0.4}))
    sd = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}
    save_weights(card, sd, tmp_path)
    loaded = load_card(tmp_path / "m.json")
    assert loaded.thresholds.urgent == {"cnv": 0.4} and loaded.input_size == (64, 64) and loaded.demo
    assert loaded.warning == DEMO_WARNING and DEMO_WARNING.upper() in loaded.summary()
    torch.testing.assert_close(load_weights(loaded)["w"], sd["w"])
    assert load_card(tmp_path).name == "m"  # a folder with one card
    # model files get the same permissions as any file we write (the umask's), not 0600
    card_mode = (tmp_path / "m.json").stat().st_mode & 0o777
    assert (tmp_path / "m.safetensors").stat().st_mode & 0o777 == card_mode


def test_tampered_weights_are_refused(tmp_path):
    card = _card()
    save_weights(card, {"w": torch.zeros(3)}, tmp_path)
    p = tmp_path / "m.safetensors"
    data = bytearray(p.read_bytes())
    data[-1] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(ModelCardError, match="sha256"):
        load_weights(load_card(tmp_path / "m.json"))


def test_pickle_disguised_as_safetensors_is_refused(tmp_path):
    card = _card()
    save_weights(card, {"w": torch.zeros(3)}, tmp_path)
    torch.save({"w": torch.zeros(3)}, tmp_path / "m.safetensors")  # a pickle with the right name
    c = load_card(tmp_path / "m.json")
    c.weights_sha256 = sha256_file(tmp_path / "m.safetensors")  # even with a matching checksum...
    with pytest.raises(ModelCardError, match="safetensors"):
        load_weights(c)  # ...it is never unpickled
    c.weights_sha256 = ""  # and without one, it is refused before being read at all
    with pytest.raises(ModelCardError, match="sha256 is empty"):
        load_weights(c)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.pop("format"), "not an OCT Screen model card"),
        (lambda d: d.pop("classes"), "field '\\(top level\\)': 'classes' is a required property"),
        (lambda d: d.update(classes=["a"]), "field 'classes': .* too short"),
        (lambda d: d.update(classes=["cnv", "cnv"]), "field 'classes': .* non-unique"),
        (lambda d: d.update(classes=["CNV disease", "normal"]), "field 'classes.0'"),
        (lambda d: d.update(input_size=[64]), "field 'input_size'"),
        (lambda d: d.update(input_size=[64, "x"]), "field 'input_size.1': 'x' is not of type 'integer'"),
        (lambda d: d.update(bogus=1), "Additional properties are not allowed \\('bogus'"),
        (lambda d: d.update(std=[0, 1, 1]), "field 'std.0'"),
        (lambda d: d.update(thresholds={"nope": 1}), "field 'thresholds'"),
        (lambda d: d.update(thresholds={"urgent": {"cnv": 1.5}}), "field 'thresholds.urgent.cnv': 1.5 is greater"),
        (lambda d: d.update(weights_sha256="abc"), "field 'weights_sha256'"),
        (lambda d: d.update(onnx_file="x" * 300), "field 'onnx_file'"),
        (lambda d: d.update(aspect="stretch"), "field 'aspect'"),
        (lambda d: d.update(demo="no"), "field 'demo'"),
        (lambda d: d.update(name=""), "field 'name'"),
    ],
)
def test_malformed_cards_name_the_file(tmp_path, mutate, message):
    save_card(_card(), tmp_path / "c.json")
    d = json.loads((tmp_path / "c.json").read_text())
    mutate(d)
    (tmp_path / "c.json").write_text(json.dumps(d))
    with pytest.raises(ModelCardError, match=message) as e:
        load_card(tmp_path / "c.json")
    assert "c.json" in str(e.value)


def test_the_committed_schema_is_valid_and_the_bundled_card_meets_it():
    import jsonschema

    from core.inference import default_card_path
    from core.modelcard import SCHEMA_FILE, check_schema

    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["properties"]["format"]["const"] == "octscreen-model-card/1"
    check_schema(json.loads(default_card_path().read_text()))  # no error


def test_not_json_and_missing(tmp_path):
    (tmp_path / "x.json").write_bytes(b"\x00\xff garbage")
    with pytest.raises(ModelCardError, match="not valid JSON"):
        load_card(tmp_path / "x.json")
    with pytest.raises(ModelCardError, match="not found"):
        load_card(tmp_path / "missing.json")


def test_card_refuses_empty_sha256_paths_outside_its_folder_and_unknown_archs(tmp_path):
    import json

    import pytest

    from core.errors import ModelCardError
    from core.modelcard import load_card
    from core.models import build

    (tmp_path / "m.safetensors").write_bytes(b"x")
    base = {
        "format": "octscreen-model-card/1",
        "name": "m",
        "arch": "test_efficientnet",
        "classes": ["a", "b"],
        "input_size": [64, 64],
        "weights_file": "m.safetensors",
        "weights_sha256": "",
    }
    (tmp_path / "m.json").write_text(json.dumps(base))
    with pytest.raises(ModelCardError, match="weights_sha256 is empty"):
        load_card(tmp_path / "m.json").verified_file("weights")
    outside = tmp_path.parent / "elsewhere.safetensors"
    outside.write_bytes(b"x")
    for rel in ("../elsewhere.safetensors", str(outside)):
        (tmp_path / "m.json").write_text(json.dumps({**base, "weights_file": rel, "weights_sha256": "0" * 64}))
        with pytest.raises(ModelCardError, match="outside the model card's folder"):
            load_card(tmp_path / "m.json").verified_file("weights")
    with pytest.raises(ValueError, match="unknown architecture 'no_such_net'"):
        build("no_such_net", 2)


def test_onnx_with_unhashed_external_data_is_refused(tiny_card_path, tmp_path):
    """ONNX Runtime would load external data files beside the model that the card never hashed: the
    session only ever gets the hashed bytes, so such a model is refused with a clear message."""
    import shutil

    import onnx

    from core.inference import Screener

    folder = tmp_path / "m"
    shutil.copytree(tiny_card_path.parent, folder)
    card = json.loads((folder / "tiny.json").read_text())
    model = onnx.load(str(folder / card["onnx_file"]))
    onnx.save_model(
        model, str(folder / card["onnx_file"]), save_as_external_data=True, location="w.data", size_threshold=0
    )
    assert (folder / "w.data").stat().st_size > 0
    card["onnx_sha256"] = sha256_file(folder / card["onnx_file"])
    (folder / "tiny.json").write_text(json.dumps(card))
    with pytest.raises(ModelCardError, match="external data") as e:
        Screener(folder / "tiny.json", backend="onnx")
    assert card["onnx_file"] in str(e.value)
    Screener(tiny_card_path, backend="onnx")  # the one-file export loads
