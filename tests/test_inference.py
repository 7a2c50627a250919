"""ONNX export (parity with PyTorch, model files + hashes) and the Screener (backends, batching,
progress, cancel, timings)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from core.cam import CamNet
from core.errors import Cancelled, ModelCardError
from core.inference import Screener, default_card_path, softmax
from core.modelcard import ModelCard, load_card, sha256_file
from core.onnx_export import export_model_files, export_onnx, quantize_int8
from core.preprocess import preprocess_bscans

log = logging.getLogger(__name__)


def _batch(n: int = 5, size: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, size, size)).astype(np.float32)


def test_export_model_files_writes_every_file_with_its_hash(tiny_card_path):
    folder = tiny_card_path.parent
    d = json.loads(tiny_card_path.read_text())
    assert d["weights_file"] == "tiny.safetensors" and d["onnx_file"] == "tiny.onnx"
    assert d["onnx_int8_file"] == ""  # int8 not requested
    assert d["weights_sha256"] == sha256_file(folder / "tiny.safetensors")
    assert d["onnx_sha256"] == sha256_file(folder / "tiny.onnx")
    assert d["demo"] is True and d["cam_layer"] == "forward_features"
    assert not [p.name for p in folder.iterdir() if "tmp" in p.name]  # no temp files left behind
    card = load_card(tiny_card_path)
    assert card.verified_file("onnx").is_file()


def test_onnx_matches_pytorch_logits_and_cams(tiny_model, tiny_card_path):
    import onnxruntime as ort

    x = _batch(7)  # a batch size never seen at export: dynamic batch
    sess = ort.InferenceSession(str(tiny_card_path.parent / "tiny.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["logits", "cams"]
    logits, cams = sess.run(None, {"input": x})
    with torch.no_grad():
        t_logits, t_cams = CamNet(tiny_model)(torch.from_numpy(x))
    d_logits = float(np.abs(logits - t_logits.numpy()).max())
    d_cams = float(np.abs(cams - t_cams.numpy()).max())
    log.warning("ONNX vs PyTorch max abs diff: logits %.2e, cams %.2e", d_logits, d_cams)
    assert cams.shape == (7, 3, 2, 2)
    assert d_logits < 1e-3 and d_cams < 1e-3


def test_export_refuses_convnext_head_and_writes_nothing(tmp_path):
    from core.cam import CamHeadError
    from core.models import build

    m, _ = build("test_convnext", 3)
    card = ModelCard(name="t", arch="test_convnext", classes=["a", "b", "c"], input_size=(64, 64))
    with pytest.raises(CamHeadError):
        export_onnx(m, card, tmp_path / "t.onnx")
    assert list(tmp_path.iterdir()) == []
    # export_model_files still writes the weights and card (teacher: PyTorch only, no ONNX).
    export_model_files(m, card, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.json", "t.safetensors"]
    assert load_card(tmp_path / "t.json").onnx_file == ""
    # ... and screens with PyTorch, without CAMs.
    s = Screener(tmp_path / "t.json")
    assert s.backend == "torch-cpu"
    probs, cams = s.predict(_batch(3))
    assert probs.shape == (3, 3) and cams is None
    with torch.no_grad():
        np.testing.assert_allclose(probs, torch.softmax(m.eval()(torch.from_numpy(_batch(3))), 1).numpy(), atol=1e-5)


def test_legacy_exporter_fallback(tiny_model, tiny_card, tmp_path, monkeypatch, caplog):
    """When the dynamo exporter fails, the TorchScript exporter writes an equivalent graph."""
    import onnxruntime as ort

    real_export = torch.onnx.export

    def no_dynamo(*args, **kwargs):
        if kwargs.get("dynamo", True):
            raise RuntimeError("simulated dynamo failure")
        return real_export(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", no_dynamo)
    with caplog.at_level(logging.WARNING, logger="core.onnx_export"):
        path = export_onnx(tiny_model, tiny_card, tmp_path / "legacy.onnx")
    assert "falling back" in caplog.text
    x = _batch(3, seed=5)
    logits, cams = ort.InferenceSession(str(path)).run(["logits", "cams"], {"input": x})
    with torch.no_grad():
        t_logits, t_cams = CamNet(tiny_model)(torch.from_numpy(x))
    assert np.abs(logits - t_logits.numpy()).max() < 1e-4 and np.abs(cams - t_cams.numpy()).max() < 1e-4
    assert [p.name for p in tmp_path.iterdir()] == ["legacy.onnx"]


def test_failed_export_leaves_no_file(tiny_model, tiny_card, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("exporter broken")

    monkeypatch.setattr(torch.onnx, "export", broken)
    with pytest.raises(RuntimeError, match="exporter broken"):
        export_onnx(tiny_model, tiny_card, tmp_path / "x.onnx")
    assert list(tmp_path.iterdir()) == []


def test_int8_quantization_stays_close(tiny_model, tiny_model_dir, tmp_path):
    import onnxruntime as ort

    src = tiny_model_dir / "tiny.onnx"
    x = _batch(4, seed=3)
    ref_logits, ref_cams = ort.InferenceSession(str(src)).run(["logits", "cams"], {"input": x})
    for method in ("static", "dynamic"):
        dst = quantize_int8(src, tmp_path / f"tiny.{method}.onnx", method=method)
        logits, cams = ort.InferenceSession(str(dst)).run(["logits", "cams"], {"input": x})
        dp = float(np.abs(softmax(logits) - softmax(ref_logits)).max())
        r = float(np.corrcoef(cams.ravel(), ref_cams.ravel())[0, 1])
        log.warning("int8 %s: max abs prob diff %.4f, CAM correlation %.4f", method, dp, r)
        assert dp < 0.05 and r > 0.9, method
        assert dst.stat().st_size < 0.6 * src.stat().st_size  # weights really are 8-bit
    with pytest.raises(ValueError, match="unknown quantization"):
        quantize_int8(src, tmp_path / "x.onnx", method="fp4")
    assert not (tmp_path / "x.onnx").exists()


def test_export_with_int8_and_screen_with_it(tiny_model, tmp_path, synthetic_volume):
    card = ModelCard(name="q", arch="test_efficientnet", classes=["normal", "drusen", "cnv"], input_size=(64, 64))
    path = export_model_files(tiny_model, card, tmp_path, int8=True)
    d = json.loads(path.read_text())
    assert d["onnx_int8_file"] == "q.int8.onnx" and d["onnx_int8_sha256"] == sha256_file(tmp_path / "q.int8.onnx")
    s8, s32 = Screener(path, int8=True), Screener(path)
    assert s8.backend == "onnx-cpu-int8"
    a, b = s8.screen(synthetic_volume), s32.screen(synthetic_volume)
    assert np.abs(a.probs - b.probs).max() < 0.05
    with pytest.raises(ValueError, match="int8"):
        Screener(path, backend="torch", int8=True)


@pytest.mark.parametrize("backend", ["onnx", "openvino", "torch"])
def test_predict_backends_agree_with_reference(tiny_model, tiny_card_path, backend):
    s = Screener(tiny_card_path, backend=backend, batch_size=3, threads=1)
    assert s.backend.startswith(backend)
    x = _batch(7, seed=1)
    probs, cams = s.predict(x)
    with torch.no_grad():
        logits, t_cams = CamNet(tiny_model)(torch.from_numpy(x))
    np.testing.assert_allclose(probs, torch.softmax(logits, 1).numpy(), atol=1e-5)
    np.testing.assert_allclose(cams, t_cams.numpy(), atol=1e-4)
    assert probs.dtype == np.float32 and np.allclose(probs.sum(1), 1, atol=1e-5)


def test_openvino_bf16_keeps_the_maps_and_roughly_the_numbers(tiny_model, tiny_card_path):
    s = Screener(tiny_card_path, backend="openvino-bf16", batch_size=4, threads=1)
    assert s.backend == "openvino-cpu-bf16"
    x = _batch(8, seed=2)
    probs, cams = s.predict(x)
    with torch.no_grad():
        logits, t_cams = CamNet(tiny_model)(torch.from_numpy(x))
    ref = torch.softmax(logits, 1).numpy()
    assert cams is not None and cams.shape == t_cams.shape  # the CAM output survives
    np.testing.assert_allclose(probs, ref, atol=0.1)  # bf16: close, not equal
    for a, b in zip(cams.reshape(len(cams), -1), t_cams.numpy().reshape(len(cams), -1), strict=True):
        assert np.corrcoef(a, b)[0, 1] > 0.9


def test_auto_prefers_onnx_and_falls_back_to_torch(tiny_card, tmp_path):
    assert Screener(tiny_card).backend == "onnx-cpu"
    tiny_card.onnx_file = ""  # a card without ONNX (e.g. a teacher)
    assert Screener(tiny_card).backend == "torch-cpu"
    with pytest.raises(ModelCardError, match="no ONNX file"):
        Screener(tiny_card, backend="onnx")
    with pytest.raises(ValueError, match="backend"):
        Screener(tiny_card, backend="tensorflow")


def test_tampered_model_file_is_refused(tiny_model_dir, tmp_path):
    import shutil

    for p in tiny_model_dir.iterdir():
        shutil.copy(p, tmp_path / p.name)
    data = bytearray((tmp_path / "tiny.onnx").read_bytes())
    data[-10] ^= 0xFF
    (tmp_path / "tiny.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelCardError, match="sha256"):
        Screener(tmp_path / "tiny.json", backend="onnx")


def test_predict_checks_the_input_shape(tiny_card_path):
    s = Screener(tiny_card_path)
    with pytest.raises(ValueError, match=r"\[n, 3, 64, 64\]"):
        s.predict(np.zeros((2, 3, 32, 32), np.float32))
    probs, cams = s.predict(np.zeros((0, 3, 64, 64), np.float32))
    assert probs.shape == (0, 3) and cams is None


def test_screen_volume_result(tiny_card_path, synthetic_volume):
    s = Screener(tiny_card_path, batch_size=5)
    calls = []
    vr = s.screen(synthetic_volume, progress=lambda d, t, m: calls.append((d, t)))
    assert calls == [(5, 12), (10, 12), (12, 12)]
    assert vr.probs.shape == (12, 3) and vr.cams.shape == (12, 3, 2, 2)
    assert vr.gradable.dtype == bool and vr.gradable.all() and vr.quality_reasons == [""] * 12
    assert set(vr.timings) == {"quality", "preprocess", "model"} and all(v >= 0 for v in vr.timings.values())
    assert vr.model_name == "tiny" and vr.demo_model and vr.backend == "onnx-cpu"
    # Same numbers as preprocessing + predict by hand (batching does not change results).
    card = s.card
    p, c = s.predict(preprocess_bscans(synthetic_volume.bscans, card.input_size, card.mean, card.std))
    np.testing.assert_allclose(vr.probs, p, atol=1e-6)
    np.testing.assert_allclose(vr.cams, c, atol=1e-5)
    assert vr.cam(0, "cnv", size=(128, 160)).shape == (128, 160)


def test_screen_marks_bad_bscans_ungradable(tiny_card_path, synthetic_volume):
    b = synthetic_volume.bscans.copy()
    b[3] = 0
    vr = Screener(tiny_card_path).screen(synthetic_volume.with_bscans(b))
    assert vr.gradable.tolist() == [i != 3 for i in range(12)]
    assert "blank" in vr.quality_reasons[3]


def test_screen_cancel_between_batches(tiny_card_path, synthetic_volume):
    s = Screener(tiny_card_path, batch_size=4)
    seen = []
    with pytest.raises(Cancelled):
        s.screen(synthetic_volume, progress=lambda d, t, m: seen.append(d), cancel=lambda: len(seen) >= 1)
    assert seen == [4]  # stopped after the first batch


def test_default_card_path_points_into_resources():
    p = default_card_path()
    assert p.name == "octscreen-oct2017.json" and p.parent.name == "models" and p.parent.parent.name == "resources"


def test_exported_onnx_names_no_folder_of_this_machine(tiny_card_path):
    data = tiny_card_path.with_suffix(".onnx").read_bytes()
    root = str(Path(__file__).resolve().parents[1]).encode()
    assert root not in data and b"site-packages" not in data and b'File "' not in data


def test_quality_and_preprocessing_on_threads_give_the_same_result(tiny_card_path, synthetic_volume, monkeypatch):
    """Screener.screen measures quality and preprocesses on ``threads`` threads: the same probabilities,
    maps, gradability and reasons as one thread, in the volume's order, and the work really is spread."""
    import threading
    import time as _time

    from core import quality

    vol = synthetic_volume
    vol.bscans[3] = 0  # one ungradable B-scan, so the reasons differ along the volume
    one = Screener(tiny_card_path, threads=1, batch_size=5).screen(vol)
    seen: set[str] = set()
    measure = quality.measure

    def measure_and_note(b, limits=quality.DEFAULT_LIMITS):
        seen.add(threading.current_thread().name)
        _time.sleep(0.005)  # long enough that both threads take B-scans
        return measure(b, limits)

    monkeypatch.setattr(quality, "measure", measure_and_note)
    two = Screener(tiny_card_path, threads=2, batch_size=5).screen(vol)
    assert len(seen) == 2 and threading.current_thread().name not in seen
    assert one.quality_reasons == two.quality_reasons and one.quality_reasons[3]
    np.testing.assert_array_equal(one.gradable, two.gradable)
    np.testing.assert_allclose(one.probs, two.probs, rtol=0, atol=1e-6)
    np.testing.assert_allclose(one.cams, two.cams, rtol=0, atol=1e-6)
