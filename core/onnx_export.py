"""Export a student to ONNX (logits + CAMs in one graph, dynamic batch), optionally int8, and write
the model files a card names (safetensors + ONNX [+ int8 ONNX]) with their sha256; ``compare_onnx``
measures what int8 costs against the fp32 graph.

The graph is ``CamNet(model)``: input ``input`` float32 ``[batch, 3, H, W]`` (H, W from the card),
outputs ``logits [batch, C]`` and ``cams [batch, C, fh, fw]``. Every file is written to a temporary
name in the target folder and renamed into place, so a crash never leaves half a model behind.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from core.cam import CamHeadError, gap_linear_head
from core.fileio import atomic_output
from core.modelcard import ModelCard, save_card, save_weights, sha256_file
from core.preprocess import normalise

__all__ = [
    "export_onnx",
    "quantize_int8",
    "export_model_files",
    "random_calibration",
    "compare_onnx",
    "INPUT_NAME",
    "OUTPUT_NAMES",
]

log = logging.getLogger(__name__)

INPUT_NAME = "input"
OUTPUT_NAMES = ("logits", "cams")


def _export_to(cam_net, dummy, tmp: Path, opset: int) -> None:
    """torch.onnx.export of ``cam_net`` into ``tmp``: the dynamo exporter first, TorchScript as fallback."""
    import torch

    try:
        batch = torch.export.Dim("batch", min=1, max=4096)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prog = torch.onnx.export(
                cam_net,
                (dummy,),
                None,
                dynamo=True,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=list(OUTPUT_NAMES),
                dynamic_shapes=({0: batch},),
                external_data=False,
                verbose=False,
                report=False,
            )
        assert prog is not None  # dynamo=True returns an ONNXProgram (an AssertionError falls back below)
        prog.save(str(tmp), external_data=False)
        return
    except Exception as e:  # the dynamo exporter still rejects some graphs; the legacy one is fine for CNNs
        log.warning(
            "dynamo ONNX export failed (%s: %s); falling back to the TorchScript exporter",
            type(e).__name__,
            str(e).splitlines()[0] if str(e) else "",
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            cam_net,
            (dummy,),
            str(tmp),
            dynamo=False,
            opset_version=min(opset, 17),
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes={INPUT_NAME: {0: "batch"}, "logits": {0: "batch"}, "cams": {0: "batch"}},
            do_constant_folding=True,
        )


def _strip_trace(m) -> None:
    """Drop what the exporter records about the machine that ran it (node doc strings and metadata
    hold Python stack traces with absolute source paths): a shipped model names no one's folders."""
    graphs = [m.graph]
    while graphs:
        g = graphs.pop()
        for node in g.node:
            node.doc_string = ""
            del node.metadata_props[:]
            for a in node.attribute:
                if a.HasField("g"):
                    graphs.append(a.g)
                graphs.extend(a.graphs)
        g.doc_string = ""
    del m.metadata_props[:]
    for f in m.functions:
        for node in f.node:
            node.doc_string = ""
            del node.metadata_props[:]


def export_onnx(model, card: ModelCard, path: str | Path, *, opset: int = 18) -> Path:
    """Export ``model`` (a timm GAP + linear classifier) as ONNX with outputs 'logits' and 'cams'.

    Input size comes from ``card.input_size``; the batch dimension is dynamic. The file is checked
    with ``onnx.checker`` and written atomically. Returns the path. Raises ``core.cam.CamHeadError``
    for heads that are not GAP + linear.
    """
    import onnx
    import torch

    from core.cam import CamNet  # noqa: PLC0415 (heavy: core.cam defines CamNet on first use, importing torch)

    path = Path(path)
    was_training = model.training
    model.eval()
    try:
        net = CamNet(model).eval()
        h, w = card.input_size
        param = next(model.parameters())
        dummy = torch.zeros(2, 3, int(h), int(w), dtype=torch.float32, device=param.device)
        with atomic_output(path, overwrite=True) as tmp:
            _export_to(net, dummy, tmp, opset)
            onnx.checker.check_model(str(tmp))
            m = onnx.load(str(tmp), load_external_data=False)
            outs = [o.name for o in m.graph.output]
            if outs != list(OUTPUT_NAMES):
                raise RuntimeError(f"{path}: exported graph has outputs {outs}, expected {list(OUTPUT_NAMES)}")
            _strip_trace(m)
            onnx.save(m, str(tmp))
    finally:
        model.train(was_training)
    log.info("exported %s (%.1f MB)", path, path.stat().st_size / 1e6)
    return path


def random_calibration(
    input_size: tuple[int, int],
    n_batches: int = 4,
    batch_size: int = 4,
    seed: int = 0,
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406),
    std: tuple[float, float, float] = (0.229, 0.224, 0.225),
) -> list[np.ndarray]:
    """Calibration batches for static quantization when no real B-scans are given: OCT-like
    images (a bright horizontal band over speckle on a dark background), standardised with
    ``mean`` / ``std`` like ``core.preprocess``."""
    rng = np.random.default_rng(seed)
    h, w = input_size
    rows = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
    out = []
    for _ in range(n_batches):
        batch = []
        for _ in range(batch_size):
            centre = rng.uniform(0.3, 0.7)
            band = np.exp(-(((rows - centre) / rng.uniform(0.03, 0.1)) ** 2))
            img = np.clip(band * rng.uniform(0.5, 1.0) + rng.gamma(2.0, 0.05, size=(h, w)), 0, 1)
            batch.append(img.astype(np.float32))
        out.append(normalise(np.stack(batch), mean, std))
    return out


def quantize_int8(
    src: str | Path,
    dst: str | Path,
    calibration: Iterable[np.ndarray] | None = None,
    *,
    method: str = "static",
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406),
    std: tuple[float, float, float] = (0.229, 0.224, 0.225),
) -> Path:
    """Quantize an exported ONNX model to int8 (onnxruntime.quantization); atomic write, returns ``dst``.

    method='static' (default): QDQ, per-channel int8 weights, uint8 activations calibrated on
    ``calibration`` batches (preprocessed float32 ``[b, 3, H, W]``, a list or a one-pass iterable;
    pass real B-scans when you have them, else OCT-like random batches standardised with ``mean`` /
    ``std`` are used).
    method='dynamic': int8 weights, activations quantized on the fly; for a CNN ONNX Runtime then
    runs ConvInteger, which measured ~8x *slower* than fp32 on an x86 CPU
    (benchmarks/bench_inference.py), so it is kept only for comparison.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, dst = Path(src), Path(dst)
    with tempfile.TemporaryDirectory(dir=dst.parent if dst.parent.exists() else None) as td:
        pre = Path(td) / "pre.onnx"
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        except Exception as e:  # pre-processing is an optimisation, not a requirement
            log.warning("ONNX quantization pre-processing skipped (%s)", e)
            pre = src
        with atomic_output(dst, overwrite=True) as tmp:
            if method == "dynamic":
                quantize_dynamic(str(pre), str(tmp), weight_type=QuantType.QInt8)
            elif method == "static":
                import onnx

                m = onnx.load(str(pre), load_external_data=False)
                dims = m.graph.input[0].type.tensor_type.shape.dim
                size = (int(dims[2].dim_value), int(dims[3].dim_value))
                batches = calibration if calibration is not None else random_calibration(size, mean=mean, std=std)

                class _Reader(CalibrationDataReader):
                    def __init__(self) -> None:
                        self._it = iter(batches)

                    def get_next(self):  # noqa: D401 - onnxruntime's interface
                        b = next(self._it, None)
                        return None if b is None else {INPUT_NAME: np.asarray(b, np.float32)}

                quantize_static(
                    str(pre),
                    str(tmp),
                    _Reader(),
                    quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    per_channel=True,
                )
            else:
                raise ValueError(f"unknown quantization method {method!r} (dynamic | static)")
    return dst


def export_model_files(
    model,
    card: ModelCard,
    folder: str | Path,
    int8: bool = False,
    *,
    opset: int = 18,
    int8_method: str = "static",
    calibration: Iterable[np.ndarray] | None = None,
) -> Path:
    """Write ``<name>.safetensors``, ``<name>.onnx`` (and ``<name>.int8.onnx`` with ``int8``) into
    ``folder``, fill in the card's file names and sha256, and save ``<name>.json``. Returns the card path.

    int8: also write a statically quantized model (``quantize_int8``; ``calibration`` = a few
    preprocessed batches of real training B-scans gives the best int8 accuracy).

    The card's ``cam_layer`` is set to 'forward_features'. For a model whose head is not GAP +
    linear (e.g. a ConvNeXt teacher) no ONNX is written (the card's onnx fields stay empty) and a
    warning is logged: such models run with the PyTorch backend, without CAMs.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    card.weights_file, card.weights_sha256 = "", ""
    card.onnx_file = card.onnx_sha256 = card.onnx_int8_file = card.onnx_int8_sha256 = ""
    card.cam_layer = "forward_features"
    try:
        gap_linear_head(model)
        cam_ok = True
    except CamHeadError as e:
        log.warning("no ONNX export: %s", e)
        cam_ok = False
    if cam_ok:
        onnx_path = export_onnx(model, card, folder / f"{card.name}.onnx", opset=opset)
        card.onnx_file, card.onnx_sha256 = onnx_path.name, sha256_file(onnx_path)
        if int8:
            q = quantize_int8(
                onnx_path,
                folder / f"{card.name}.int8.onnx",
                calibration,
                method=int8_method,
                mean=card.mean,
                std=card.std,
            )
            card.onnx_int8_file, card.onnx_int8_sha256 = q.name, sha256_file(q)
    # save_weights writes the safetensors and then the card (with every file name and hash filled).
    save_weights(card, model.state_dict(), folder)
    return save_card(card, folder / f"{card.name}.json")


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _batches(inputs: np.ndarray | Iterable[np.ndarray], batch: int) -> Iterable[np.ndarray]:
    if isinstance(inputs, np.ndarray):
        if inputs.ndim != 4:
            raise ValueError(f"inputs must be [n, 3, H, W], got shape {list(inputs.shape)}")
        for i in range(0, len(inputs), batch):
            yield inputs[i : i + batch]
    else:
        for b in inputs:
            b = np.asarray(b)
            if b.ndim != 4:
                raise ValueError(f"input batches must be [b, 3, H, W], got shape {list(b.shape)}")
            yield b


def compare_onnx(
    fp32_path: str | Path,
    int8_path: str | Path,
    inputs: np.ndarray | Iterable[np.ndarray],
    targets: np.ndarray | None = None,
    *,
    batch: int = 32,
) -> dict[str, Any]:
    """Run two ONNX models of the same classifier (fp32 and its int8 quantization) with ONNX Runtime
    (CPU provider) on the same preprocessed inputs and say how far apart they are.

    ``inputs``: float32 ``[n, 3, H, W]`` (run ``batch`` at a time), or an iterable of such batches
    (e.g. a generator, so a large test set never sits in memory at once). ``targets``: ``[n]``
    class indices, optional.

    Returns ``{"n", "agreement", "max_abs_dprob", "mean_abs_dprob"}`` and, with ``targets``,
    ``"accuracy_fp32"``, ``"accuracy_int8"`` and ``"accuracy_change_pp"`` (int8 - fp32, percentage
    points). ``agreement`` is the fraction of inputs with the same argmax; the probabilities are the
    softmax of the 'logits' output, ``max_abs_dprob`` the largest and ``mean_abs_dprob`` the mean
    of |p_int8 - p_fp32| over every input and class. Plain Python numbers (JSON-ready).
    """
    import onnxruntime as ort

    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    sessions = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (fp32_path, int8_path)]
    names = [s.get_inputs()[0].name for s in sessions]
    preds: list[list[np.ndarray]] = [[], []]
    max_d, sum_d, n_d, n = 0.0, 0.0, 0, 0
    for x in _batches(inputs, batch):
        x = np.ascontiguousarray(x, dtype=np.float32)
        if len(x) == 0:
            continue
        p32, p8 = (_softmax(s.run(["logits"], {name: x})[0]) for s, name in zip(sessions, names))
        if p32.shape != p8.shape:
            raise ValueError(
                f"{int8_path}: logits of shape {list(p8.shape)}, but {fp32_path} gives "
                f"{list(p32.shape)}; not the same classifier"
            )
        d = np.abs(p8 - p32)
        max_d, sum_d, n_d, n = max(max_d, float(d.max())), sum_d + float(d.sum()), n_d + d.size, n + len(x)
        preds[0].append(p32.argmax(1))
        preds[1].append(p8.argmax(1))
    if n == 0:
        raise ValueError("compare_onnx: no inputs to compare on")
    a32, a8 = np.concatenate(preds[0]), np.concatenate(preds[1])
    out: dict[str, Any] = {
        "n": n,
        "agreement": float(np.mean(a32 == a8)),
        "max_abs_dprob": max_d,
        "mean_abs_dprob": sum_d / n_d,
    }
    if targets is not None:
        t = np.asarray(targets).reshape(-1)
        if len(t) != n:
            raise ValueError(f"compare_onnx: {len(t)} targets for {n} inputs")
        acc32, acc8 = float(np.mean(a32 == t)), float(np.mean(a8 == t))
        out.update(accuracy_fp32=acc32, accuracy_int8=acc8, accuracy_change_pp=100.0 * (acc8 - acc32))
    log.info(
        "int8 vs fp32 on %d inputs: argmax agreement %.4f, max |dp| %.4f, mean |dp| %.5f%s",
        n,
        out["agreement"],
        max_d,
        out["mean_abs_dprob"],
        f", accuracy {out['accuracy_fp32']:.4f} -> {out['accuracy_int8']:.4f}" if targets is not None else "",
    )
    return out
