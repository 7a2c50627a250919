"""The named choices the library accepts, in one place: inference backends and the date policies of
de-identification.

``core.inference`` (``BACKENDS``) and ``core.deid`` (``DATE_POLICIES``) own what they mean and
re-export them; this module imports nothing, so the command line builds its parsers' choices from it
and ``octscreen --help`` stays fast (no numpy, no pydicom).
"""

from __future__ import annotations

__all__ = ["BACKENDS", "DATE_POLICIES"]

#: ``core.inference.Screener(backend=...)``: auto (ONNX Runtime), onnx, openvino (f32), openvino-bf16, torch.
BACKENDS: tuple[str, ...] = ("auto", "onnx", "openvino", "openvino-bf16", "torch")
#: ``core.deid.Deidentifier(dates=...)``: remove the dates, shift them per patient, or retain them.
DATE_POLICIES: tuple[str, ...] = ("remove", "shift", "retain")
