"""Resource limits on what OCT Screen will decode or load: one place, documented, overridable.

A small hostile file can claim a huge image (a JPEG 2000 frame of 600 bytes that declares
60000 × 60000 pixels), a TIFF page chain can loop or hold 20,000 pages, a model card can ask for a
30000 px input. Every reader and loader checks these limits *before* it allocates, and a refusal is
an ``ImageTooLargeError`` (or another ``InputError``) naming the file and the limit.

Override for one process with the environment, e.g.::

    OCTSCREEN_LIMITS="max_bscans=8000,max_side=16384" octscreen screen big-archive/

or in code with :func:`override` (a context manager) or :func:`set_limits`. ``docs/LIMITS.md`` lists
them with their reasons.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from core.errors import ImageTooLargeError

__all__ = [
    "Limits",
    "DEFAULT_LIMITS",
    "ENV_VAR",
    "current",
    "set_limits",
    "override",
    "parse",
    "PixelBudget",
    "pixel_budget",
    "charge",
]

ENV_VAR = "OCTSCREEN_LIMITS"


@dataclass(frozen=True)
class Limits:
    """What one process decodes or loads at most (each field documented in docs/LIMITS.md)."""

    max_side: int = 8192
    """Pixels per B-scan side (real OCT B-scans are at most ~1536 wide, 1024–2048 deep)."""
    max_frame_pixels: int = 2**25
    """Pixels per decoded frame (32 Mi), checked against the file header and, for JPEG 2000, against
    the codestream's own SIZ header before the decoder runs."""
    max_bscans: int = 4096
    """B-scans (frames, pages, files) per volume; clinical cubes have 25–1024."""
    max_volume_pixels: int = 2**28
    """Pixels per volume (256 Mi: 0.5 GB as 16 bit)."""
    max_run_pixels: int = 2**31
    """Decoded pixels per ``open_path`` call (a folder, a DICOMDIR: 2 Gi, 4 GB as 16 bit)."""
    max_held_bytes: int = 1 << 29
    """Pixel bytes ``octscreen screen`` holds between reading and screening (512 MiB); past it, volumes
    read from a file are read again when their exam is screened (``core.screening.PixelHold``)."""
    max_files: int = 200_000
    """Files one folder scan looks at."""
    max_depth: int = 32
    """Folder levels one scan descends."""
    max_model_input: int = 2048
    """Model input side (px) a model card may ask for."""
    max_card_bytes: int = 1 << 20
    """Size of a model card JSON file (1 MiB)."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"limit {f.name} must be a positive integer, not {v!r}")


DEFAULT_LIMITS = Limits()


def parse(text: str, base: Limits = DEFAULT_LIMITS) -> Limits:
    """``"max_bscans=8000,max_side=16384"`` over ``base``; unknown names and bad values raise ValueError."""
    known = {f.name for f in dataclasses.fields(Limits)}
    changes: dict[str, int] = {}
    for item in filter(None, (p.strip() for p in text.replace(";", ",").split(","))):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in known:
            raise ValueError(f"{ENV_VAR}: '{item}' is not NAME=VALUE with a known limit ({', '.join(sorted(known))})")
        try:
            changes[key] = int(value.strip().replace("_", ""), 0)
        except ValueError:
            raise ValueError(f"{ENV_VAR}: {key} must be an integer, not {value.strip()!r}") from None
    return dataclasses.replace(base, **changes)


def _from_env() -> Limits:
    text = os.environ.get(ENV_VAR, "")
    return parse(text) if text.strip() else DEFAULT_LIMITS


_current: contextvars.ContextVar[Limits | None] = contextvars.ContextVar("octscreen_limits", default=None)
_process: Limits | None = None


def current() -> Limits:
    """The limits in force: an :func:`override`, else :func:`set_limits`, else ``$OCTSCREEN_LIMITS``
    over the defaults."""
    global _process
    lim = _current.get()
    if lim is not None:
        return lim
    if _process is None:
        _process = _from_env()
    return _process


def set_limits(limits: Limits | None) -> None:
    """Set the process-wide limits (None: back to ``$OCTSCREEN_LIMITS`` over the defaults)."""
    global _process
    _process = limits


@contextlib.contextmanager
def override(**changes: int) -> Iterator[Limits]:
    """Change some limits inside a ``with`` block (this thread / context only)."""
    lim = dataclasses.replace(current(), **changes)
    token = _current.set(lim)
    try:
        yield lim
    finally:
        _current.reset(token)


class PixelBudget:
    """Decoded pixels left to one ``open_path`` call (``max_run_pixels``)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.used = 0

    def charge(self, path: Path, pixels: int) -> None:
        if self.used + pixels > self.total:
            raise ImageTooLargeError(
                path,
                f"decoding its {pixels} pixels would take this scan past its limit of {self.total} decoded "
                f"pixels (max_run_pixels; {self.used} used); open the folder in parts or raise the limit "
                f"with {ENV_VAR}",
            )
        self.used += pixels


_budget: contextvars.ContextVar[PixelBudget | None] = contextvars.ContextVar("octscreen_budget", default=None)


@contextlib.contextmanager
def pixel_budget() -> Iterator[PixelBudget]:
    """A fresh ``max_run_pixels`` budget for the readers called inside (nested calls share the outer)."""
    outer = _budget.get()
    if outer is not None:
        yield outer
        return
    b = PixelBudget(current().max_run_pixels)
    token = _budget.set(b)
    try:
        yield b
    finally:
        _budget.reset(token)


def charge(path: Path, pixels: int) -> None:
    """Charge ``pixels`` about to be decoded from ``path`` to the current budget (none: no run limit)."""
    b = _budget.get()
    if b is not None:
        b.charge(path, pixels)


def usable_cpus(cap: int | None = None) -> int:
    """The CPUs this process may run on (its affinity where the OS says, else all), at most ``cap``."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        n = os.cpu_count() or 1
    return max(1, min(n, cap) if cap else n)
