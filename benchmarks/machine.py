"""What ran a benchmark: the CPU's name and the vector/matrix kernels it has (issue 12 asks every
benchmark output to say so). Shared by the benchmark scripts."""

from __future__ import annotations

import platform
from pathlib import Path

KERNEL_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def cpu() -> str:
    """'AMD EPYC [avx2 avx512f avx512_vnni avx512_bf16]' from /proc/cpuinfo (elsewhere: the platform's name)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        name = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
        have = set(next(line.split(":", 1)[1].split() for line in lines if line.startswith("flags")))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()
    return f"{name} [{' '.join(f for f in KERNEL_FLAGS if f in have)}]"
