"""Safe file output, shared by every writer (DICOM, PDF, model files, datasets, CSV/JSON):
write to a temporary file beside the target, then move it into place; on any error the temporary
file is removed, so a crash never leaves a half-written file; an existing target is never replaced
unless ``overwrite`` is asked for."""

from __future__ import annotations

import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "atomic_output",
    "atomic_folder",
    "write_bytes_atomic",
    "write_text_atomic",
    "clean_stale_temps",
    "next_free",
]


def _exists_message(target: Path) -> str:
    return f"{target}: file exists; not overwriting it (ask for overwrite to replace it)"


@contextmanager
def atomic_output(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temp path in ``path``'s folder; on success move it to ``path``, on error delete it.

    Refuses (``FileExistsError``) to replace an existing ``path`` unless ``overwrite``; without
    overwrite the final move is a hard link, so a file that appears meanwhile is not clobbered either.
    The temp file's permissions follow the umask (``tempfile.mkstemp`` would make it 0600).
    """
    target = Path(path)
    if target.exists() and not overwrite:
        raise FileExistsError(_exists_message(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp")
    tmp.touch(mode=0o666, exist_ok=False)
    mode = tmp.stat().st_mode & 0o777
    try:
        yield tmp
        if tmp.exists() and tmp.stat().st_mode & 0o777 != mode:
            os.chmod(tmp, mode)  # a writer that replaced the file (e.g. safetensors) made it 0600
        if overwrite:
            os.replace(tmp, target)
        else:
            try:
                os.link(tmp, target)
            except FileExistsError:
                raise FileExistsError(_exists_message(target)) from None
            except OSError:  # file system without hard links: check, then rename
                if target.exists():
                    raise FileExistsError(_exists_message(target)) from None
                os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_folder(path: str | Path, merge: bool = False) -> Iterator[Path]:
    """Yield a new temp folder beside ``path`` to fill; on success move it to ``path``, on error
    delete it with everything in it, so a failed or cancelled writer leaves nothing behind.

    ``path`` may be missing or an empty folder (replaced). A folder with files is refused
    (``FileExistsError``) unless ``merge``: then the temp folder's files are moved into it one by
    one, each replacing a file of the same name, and its other files are left alone.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp")
    tmp.mkdir()  # (mkdir honours the umask, mkdtemp would not)
    try:
        yield tmp
        if target.is_dir() and not any(target.iterdir()):
            target.rmdir()
        if not target.exists():
            os.replace(tmp, target)
        elif merge and target.is_dir():
            for p in sorted(tmp.rglob("*")):  # (parents sort before their children)
                q = target / p.relative_to(tmp)
                if p.is_dir():
                    q.mkdir(exist_ok=True)
                else:
                    os.replace(p, q)
        else:
            raise FileExistsError(f"{target}: exists and is not an empty folder; not replacing it")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_bytes_atomic(path: str | Path, data: bytes, overwrite: bool = False) -> Path:
    with atomic_output(path, overwrite) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | Path, text: str, overwrite: bool = False) -> Path:
    with atomic_output(path, overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


_TEMP_NAME = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp$")


def clean_stale_temps(folder: str | Path, older_than_s: float = 600.0) -> list[Path]:
    """Remove the temp files :func:`atomic_output` left in ``folder`` when a process was killed
    mid-write (they may hold patient data). Only our own name pattern, and only files older than
    ``older_than_s`` (a write takes well under a second, so a younger one may be another run's).
    Returns what was removed."""
    removed: list[Path] = []
    now = time.time()
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for p in entries:
        try:
            if _TEMP_NAME.match(p.name) and p.is_file() and now - p.stat().st_mtime > older_than_s:
                p.unlink()
                removed.append(p)
        except OSError:
            continue
    return removed


def next_free(path: str | Path, limit: int = 1000) -> Path:
    """``path``, or ``<stem>_2<suffix>``, ``_3``, ... : the first name not taken yet (another run may
    take it before we write: :func:`atomic_output` without overwrite then refuses, and the caller
    asks again)."""
    p = Path(path)
    if not p.exists():
        return p
    for n in range(2, limit):
        q = p.with_name(f"{p.stem}_{n}{p.suffix}")
        if not q.exists():
            return q
    raise FileExistsError(f"{p}: {limit} files of this name already exist")
