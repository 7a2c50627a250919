"""A guard against a reference-count bug of PySide6 6.12 on Python 3.11.

The PySide6 6.12 wheels are built for the stable ABI in the form of Python 3.12 and later, where
``None`` is immortal and a C function may return it without taking a reference. On Python 3.11 every
call that returns ``None`` (every setter, ``setText``, ``setPixmap``, an unset ``data()`` role ...) then
takes one reference away from ``None``; after some ten thousand such calls the interpreter aborts with
"Fatal Python error: none_dealloc: deallocating None". The app makes that many calls in minutes of
use (scrolling B-scans, a worklist filling up), so before any Qt widget exists :func:`guard` gives
``None`` a reserve of references it can never spend (2**40; it gains one per call anyway on any other
version). On Python 3.12 and later ``None`` is immortal and nothing is done.
"""

from __future__ import annotations

import ctypes
import sys

__all__ = ["RESERVE", "guard"]

RESERVE = 1 << 40


def guard() -> None:
    """Make ``None`` effectively immortal on Python < 3.12 (idempotent; called on import of the GUI)."""
    if sys.version_info >= (3, 12):
        return
    refcount = ctypes.c_ssize_t.from_address(id(None))  # PyObject.ob_refcnt is the first field
    if refcount.value < RESERVE:
        refcount.value += RESERVE


guard()
