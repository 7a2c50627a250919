"""OCT Screen core library: volumes, readers, simulator, models, screening, reports.
No Qt, no command-line parsing, no print: logging only."""

import os as _os

__version__ = "0.1.0"

# Privacy of the runtime: ONNX Runtime's telemetry writes a device id and an event store under the
# user's cache folder (~/.cache/Microsoft/DeveloperTools/.onnxruntime) as soon as it is imported,
# unless this is set before that first import. Everything in OCT Screen imports core first.
_os.environ["ORT_DISABLE_TELEMETRY"] = "1"
