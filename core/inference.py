"""The screening engine: a model card + a backend that turns B-scans into class probabilities and
class activation maps, batch by batch.

``Screener(card)`` runs the card's ONNX student with ONNX Runtime (CPU; CUDA when the provider is
installed) and falls back to PyTorch (safetensors weights + ``core.models.build``) when the card has
no ONNX file or ONNX Runtime is missing. ``screen(volume)`` does quality -> preprocess -> model for
one volume and returns a ``VolumeResult``; the per-eye decision is ``core.aggregate.decide``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from core.cam import CamHeadError
from core.choices import BACKENDS
from core.errors import Cancelled, ModelCardError
from core.limits import usable_cpus
from core.modelcard import ModelCard, load_card, load_weights
from core.models import build
from core.preprocess import preprocess_bscans
from core.quality import assess
from core.results import VolumeResult
from core.volume import OctVolume

__all__ = ["Screener", "default_card_path", "softmax", "BACKENDS"]

log = logging.getLogger(__name__)


#: The bundled model: the real-data student of training/configs/oct2017-real.json.
BUNDLED_MODEL = "octscreen-oct2017"


def default_card_path() -> Path:
    """The bundled model card: ``resources/models/octscreen-oct2017.json`` in the repo (a research
    model trained on real OCT2017 B-scans; not for clinical use)."""
    return Path(__file__).resolve().parents[1] / "resources" / "models" / f"{BUNDLED_MODEL}.json"


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float32 (numerically stable)."""
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime


class _OnnxBackend:
    """ONNX Runtime session over the card's (int8) ONNX file; outputs 'logits' and 'cams'."""

    def __init__(self, card: ModelCard, threads: int | None, int8: bool):
        ort = _onnxruntime()
        if ort is None:
            raise ModelCardError(card.path, "onnxruntime is not installed; use the torch backend")
        which = "onnx_int8" if int8 else "onnx"
        data = card.verified_bytes(which)  # the session gets the hashed bytes: no unhashed external data
        path = card.file(which)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.inter_op_num_threads = 1
        if threads:
            opts.intra_op_num_threads = int(threads)
        opts.log_severity_level = 3
        providers = ["CPUExecutionProvider"]
        if "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(data, sess_options=opts, providers=providers)
        except Exception as e:  # onnxruntime raises its own exception types for bad graphs
            if "external" in str(e).lower():
                raise ModelCardError(
                    path,
                    "the ONNX model keeps tensors in external data files, which its card cannot hash; "
                    "export it as one file",
                ) from None
            raise ModelCardError(path, f"ONNX Runtime cannot load the model ({str(e)[:300]})") from None
        outs = [o.name for o in self.session.get_outputs()]
        if "logits" not in outs:
            raise ModelCardError(path, f"ONNX model has no 'logits' output (outputs: {outs})")
        self.output_names = ["logits"] + (["cams"] if "cams" in outs else [])
        self.input_name = self.session.get_inputs()[0].name
        used = self.session.get_providers()[0]
        self.name = "onnx-" + ("cuda" if used.startswith("CUDA") else "cpu") + ("-int8" if int8 else "")

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        out = self.session.run(self.output_names, {self.input_name: x})
        return out[0], (out[1] if len(out) > 1 else None)


def _openvino():
    """openvino, imported with its telemetry off: OpenVINO imports the optional ``openvino_telemetry``
    package (which writes a client id and usage statistics under ~/intel) and falls back to its own
    no-op stub when that import fails; hiding the package selects the stub. Nothing else changes."""
    if "openvino" not in sys.modules and "openvino_telemetry" not in sys.modules:
        sys.modules["openvino_telemetry"] = None  # import fails -> OpenVINO's stub
        sys.modules["openvino_telemetry.backend"] = None
    try:
        import openvino
    except ImportError:
        return None
    return openvino


class _OpenVinoBackend:
    """OpenVINO on the CPU over the card's ONNX file (the hashed bytes, read in memory; nothing is
    cached on disk). ``precision``: 'f32' (the same numbers as ONNX Runtime), 'bf16' (faster where
    the CPU has native bf16, e.g. AVX512-BF16 or AMX; probabilities move by up to ~0.2, see
    benchmarks/bench_backends.py) or 'auto' (bf16 where the CPU has it, else f32)."""

    def __init__(self, card: ModelCard, threads: int | None, precision: str = "f32"):
        ov = _openvino()
        if ov is None:
            raise ModelCardError(card.path, "openvino is not installed (pip install openvino); use --backend onnx")
        data = card.verified_bytes("onnx")
        core = ov.Core()
        has_bf16 = "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        if precision not in ("auto", "bf16", "f32"):
            raise ValueError(f"precision must be auto, bf16 or f32, got {precision!r}")
        self.precision = ("bf16" if has_bf16 else "f32") if precision == "auto" else precision
        config: dict[str, str | int] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": self.precision}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            model = core.read_model(io.BytesIO(data))
            self.compiled = core.compile_model(model, "CPU", config)
        except Exception as e:  # OpenVINO raises its own exception types for bad graphs
            raise ModelCardError(card.file("onnx"), f"OpenVINO cannot load the model ({str(e)[:300]})") from None
        names = {o.get_any_name() for o in self.compiled.outputs}
        if "logits" not in names:
            raise ModelCardError(card.file("onnx"), f"ONNX model has no 'logits' output (outputs: {sorted(names)})")
        self.has_cams = "cams" in names
        self.request = self.compiled.create_infer_request()
        self.name = f"openvino-cpu-{self.precision}"

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        out = self.request.infer({0: x})
        logits = np.asarray(out[self.compiled.output("logits")], dtype=np.float32)
        cams = np.asarray(out[self.compiled.output("cams")], dtype=np.float32) if self.has_cams else None
        return logits.copy(), (None if cams is None else cams.copy())


class _TorchBackend:
    """PyTorch model rebuilt from the card's safetensors; CAMs through ``core.cam.CamNet`` when the
    head allows it (GAP + linear), otherwise logits only."""

    def __init__(self, card: ModelCard, threads: int | None):
        import torch

        from core.cam import CamNet  # noqa: PLC0415 (heavy: core.cam defines CamNet on first use, importing torch)

        if threads:
            torch.set_num_threads(int(threads))
        state = load_weights(card)
        model, _ = build(card.arch, len(card.classes))
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise ModelCardError(
                card.file("weights"),
                f"weights do not fit architecture '{card.arch}' "
                f"with {len(card.classes)} classes ({str(e).splitlines()[0]})",
            ) from None
        model.eval()
        try:
            self.net, self.has_cams = CamNet(model).eval(), True
        except CamHeadError as e:
            log.warning("no CAMs for this model: %s", e)
            self.net, self.has_cams = model, False
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.net.to(self.device)
        self.name = f"torch-{self.device.type}"

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        import torch

        with torch.inference_mode():
            out = self.net(torch.from_numpy(x).to(self.device))
        if self.has_cams:
            logits, cams = out
            return logits.float().cpu().numpy(), cams.float().cpu().numpy()
        return out.float().cpu().numpy(), None


class Screener:
    """Runs a model card on B-scans.

    card: a ``ModelCard`` (saved, so its files can be found) or the path of its JSON.
    backend: 'auto' (ONNX Runtime if the card has an ONNX file and onnxruntime is installed, else
    PyTorch), 'onnx', 'openvino' (f32: the same numbers; slower than ONNX Runtime on the reference
    machine), 'openvino-bf16' (1.7-2.2x faster where the CPU has bf16; the numbers change) or 'torch'.
    threads: CPU threads for the backend (None: the library default).
    batch_size: B-scans per forward pass. int8: use the card's int8 ONNX file.
    """

    def __init__(
        self,
        card: ModelCard | str | Path,
        backend: str = "auto",
        threads: int | None = None,
        batch_size: int = 16,
        *,
        int8: bool = False,
    ):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.card = card if isinstance(card, ModelCard) else load_card(card)
        self.batch_size = int(batch_size)
        self.threads = threads
        want_onnx = (
            backend == "onnx"
            or int8
            or (backend == "auto" and bool(self.card.onnx_file) and _onnxruntime() is not None)
        )
        if backend == "torch" and int8:
            raise ValueError("int8 models run only with the onnx backend")
        if backend.startswith("openvino"):
            if int8:
                raise ValueError("int8 models run only with the onnx backend")
            if not self.card.onnx_file:
                raise ModelCardError(self.card.path, "the model card names no ONNX file; use --backend torch")
            precision = "bf16" if backend == "openvino-bf16" else "f32"
            self._run: _OnnxBackend | _OpenVinoBackend | _TorchBackend = _OpenVinoBackend(self.card, threads, precision)
        elif want_onnx:
            if not (self.card.onnx_int8_file if int8 else self.card.onnx_file):
                raise ModelCardError(
                    self.card.path, f"the model card names no {'int8 ' if int8 else ''}ONNX file; use --backend torch"
                )
            self._run = _OnnxBackend(self.card, threads, int8)
        else:
            self._run = _TorchBackend(self.card, threads)
        self.backend: str = self._run.name
        log.info("model %s v%s on %s", self.card.name, self.card.version, self.backend)

    @property
    def classes(self) -> list[str]:
        return list(self.card.classes)

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Preprocessed batch float32 ``[n, 3, H, W]`` -> (probs ``[n, C]``, cams ``[n, C, fh, fw]`` or
        None when the model gives none), in chunks of ``batch_size``."""
        x = np.asarray(x, dtype=np.float32)
        h, w = self.card.input_size
        if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[2:]) != (h, w):
            raise ValueError(f"expected float32 [n, 3, {h}, {w}], got {list(x.shape)}")
        probs, cams = [], []
        for start in range(0, x.shape[0], self.batch_size):
            p, c = self._forward(x[start : start + self.batch_size])
            probs.append(p)
            cams.append(c)
        return self._stack(probs, cams, len(self.card.classes))

    def _forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        logits, cams = self._run(np.ascontiguousarray(x, dtype=np.float32))
        return softmax(logits), (None if cams is None else cams.astype(np.float32, copy=False))

    @staticmethod
    def _stack(probs: list[np.ndarray], cams: list[np.ndarray | None], n_classes: int):
        if not probs:
            return np.zeros((0, n_classes), np.float32), None
        p = np.concatenate(probs)
        given = [v for v in cams if v is not None]
        c = np.concatenate(given) if len(given) == len(cams) else None
        return p, c

    def cpu_workers(self) -> int:
        """Threads for the per-B-scan work around the model: ``threads``, else the usable CPUs (at most 8)."""
        if self.threads:
            return max(1, int(self.threads))
        return usable_cpus(8)

    def _preprocess(self, bscans: np.ndarray, pool: ThreadPoolExecutor | None, workers: int) -> np.ndarray:
        """``preprocess_bscans`` of one batch, split over ``pool``'s threads (the same numbers)."""
        card = self.card
        n = len(bscans)
        if pool is None or n < 2:
            return preprocess_bscans(bscans, card.input_size, card.mean, card.std, card.aspect)
        step = -(-n // min(workers, n))
        parts = pool.map(
            lambda i: preprocess_bscans(bscans[i : i + step], card.input_size, card.mean, card.std, card.aspect),
            range(0, n, step),
        )
        return np.concatenate(list(parts))

    def screen(
        self,
        volume: OctVolume,
        progress: Callable[[int, int, str], None] | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> VolumeResult:
        """Quality, preprocessing and the model on every B-scan of ``volume``.

        progress(done, total, message) is called after each batch; ``cancel()`` is polled between
        batches and raises ``core.errors.Cancelled`` when it returns True. Ungradable B-scans are
        run too (their probabilities and CAMs are shown, but ``core.aggregate`` ignores them).
        """
        timings = {"quality": 0.0, "preprocess": 0.0, "model": 0.0}
        n = volume.n_bscans
        if cancel is not None and cancel():
            raise Cancelled("screening cancelled")
        card = self.card
        probs, cams = [], []
        workers = self.cpu_workers()
        # quality and preprocessing are one B-scan at a time in OpenCV and numpy, which release the
        # GIL: on ``workers`` threads they run side by side (the model's runtime has its own threads)
        with ThreadPoolExecutor(workers) if workers > 1 else contextlib.nullcontext() as pool:
            t = time.perf_counter()
            gradable, reasons = assess(volume, map_fn=pool.map if pool is not None else None)
            timings["quality"] = time.perf_counter() - t
            for start in range(0, n, self.batch_size):
                if cancel is not None and cancel():
                    raise Cancelled("screening cancelled")
                stop = min(n, start + self.batch_size)
                t = time.perf_counter()
                x = self._preprocess(volume.bscans[start:stop], pool, workers)
                timings["preprocess"] += time.perf_counter() - t
                t = time.perf_counter()
                p, c = self._forward(x)
                timings["model"] += time.perf_counter() - t
                probs.append(p)
                cams.append(c)
                if progress is not None:
                    progress(stop, n, f"{volume.describe()}: B-scan {stop}/{n}")
        p, c = self._stack(probs, cams, len(card.classes))
        return VolumeResult(
            volume=volume,
            classes=list(card.classes),
            probs=p,
            cams=c,
            gradable=np.asarray(gradable, bool),
            quality_reasons=list(reasons),
            model_name=card.name,
            model_version=card.version,
            demo_model=bool(card.demo),
            model_notice=card.warning,
            backend=self.backend,
            timings=timings,
        )
