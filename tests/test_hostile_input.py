"""Hostile and unlucky input (issue 11): resource exhaustion from small files, special files, link
loops, unreadable folders, page-chain loops, run budgets, model-card bombs.

Every case is built at test time in tmp_path and must end, within a few seconds, in the right
``InputError`` class with a message that names the file (and the limit, where one was hit). A case
that hung would fail on the alarm instead of blocking the suite.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
from pathlib import Path

import numpy as np
import pydicom
import pytest
import tifffile
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import JPEG2000, JPEG2000Lossless

from core import errors as E
from core import limits
from core.io import open_path, write_opt
from core.io.dicom import j2k_frame_size
from core.io.images import tiff_page_count
from tests.fixtures.oct_io import full_volume

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@contextlib.contextmanager
def deadline(seconds: int = 20):
    """Fail (instead of hanging the suite) when the block runs longer than ``seconds``."""

    def expire(*_):
        raise TimeoutError(f"took more than {seconds} s: the reader hangs")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def expect(given: Path, kind: type, named: Path | None = None, *, also: str = "") -> E.InputError:
    with deadline(), pytest.raises(E.InputError) as info:
        open_path(given)
    err = info.value
    assert type(err) is kind, f"{type(err).__name__}: {err}"
    assert str(named or given) in str(err)
    if also:
        assert also in str(err), str(err)
    return err


# ------------------------------------------------------------------------ JPEG 2000 codestream bombs
def _j2k_file(tmp: Path, name: str = "j2k.dcm", n: int = 3, syntax=JPEG2000Lossless) -> Path:
    path = write_opt(full_volume(n=n), tmp / name, transfer_syntax=JPEG2000Lossless)
    if syntax != JPEG2000Lossless:  # a lossless codestream is valid under the lossy UID too
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = syntax
        ds.save_as(path, enforce_file_format=True)
    return path


def _patch_siz(path: Path, sizes: dict[int, tuple[int, int]]) -> Path:
    """Rewrite the SIZ marker (Xsiz, Ysiz) of the given frames: tiny frames that claim other sizes."""
    ds = pydicom.dcmread(path)
    frames = [bytearray(f) for f in generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames))]
    for i, (w, h) in sizes.items():
        at = frames[i].find(b"\xff\x4f\xff\x51")
        frames[i][at + 8 : at + 16] = struct.pack(">II", w, h)
    ds.PixelData = encapsulate([bytes(f) for f in frames])
    ds.save_as(path, enforce_file_format=True)
    return path


BOMBS = {
    "60000 x 60000": ((60000, 60000), E.ImageTooLargeError, "max_side"),
    "wider than max_side": ((8193, 32), E.ImageTooLargeError, "max_side"),
    "deeper than max_side": ((40, 9000), E.ImageTooLargeError, "max_side"),
    "6000 x 6000 (frame pixels)": ((6000, 6000), E.ImageTooLargeError, "max_frame_pixels"),
    "smaller than the header": ((20, 16), E.CorruptFileError, "DICOM header says 40 x 32"),
    "one pixel wider": ((41, 32), E.CorruptFileError, "declares 41 x 32"),
    "zero size": ((0, 0), E.EmptyInputError, "holds no pixels"),
}


@pytest.mark.parametrize("frame", [0, 2])
@pytest.mark.parametrize("case", list(BOMBS))
def test_j2k_frame_that_claims_another_size_is_refused_before_decoding(tmp_path, case, frame):
    size, kind, text = BOMBS[case]
    path = _patch_siz(_j2k_file(tmp_path), {frame: size})
    err = expect(path, kind, also=text)
    if kind is E.CorruptFileError:
        assert f"frame {frame + 1}" in str(err)


@pytest.mark.parametrize("syntax", [JPEG2000Lossless, JPEG2000], ids=["lossless", "lossy"])
def test_j2k_bomb_is_refused_for_both_j2k_syntaxes_and_in_a_folder(tmp_path, syntax):
    folder = tmp_path / "exam"
    good = write_opt(full_volume(n=2, seed=3), folder / "good.dcm")
    bad = _patch_siz(_j2k_file(folder, "bomb.dcm", syntax=syntax), {1: (60000, 60000)})
    errors: list[E.InputError] = []
    with deadline():
        volumes = open_path(folder, errors=errors)
    assert [v.source for v in volumes] == [good]
    assert [(type(e), e.path) for e in errors] == [(E.ImageTooLargeError, bad)]


def test_j2k_frame_without_a_codestream_header_is_refused(tmp_path):
    path = _j2k_file(tmp_path)
    ds = pydicom.dcmread(path)
    frames = list(generate_frames(ds.PixelData, number_of_frames=3))
    frames[1] = b"\x00" * 600
    ds.PixelData = encapsulate(frames)
    ds.save_as(path, enforce_file_format=True)
    expect(path, E.CorruptFileError, also="no codestream header")


def test_j2k_frame_size_reads_the_siz_marker_only():
    siz = b"\xff\x4f\xff\x51" + b"\x00\x29\x00\x00" + struct.pack(">IIII", 1000, 500, 100, 50)
    assert j2k_frame_size(siz + b"\x00" * 30) == (900, 450)
    assert j2k_frame_size(b"\x00\x00\x00\x0cjP  " + siz + b"\x00" * 30) == (900, 450)  # JP2 boxes first
    assert j2k_frame_size(b"\x00" * 100) is None
    assert j2k_frame_size(siz[:10]) is None


# ------------------------------------------------------------------------------ DICOM header claims
HEADER_CLAIMS = {
    "rows 65535": (65535, 40, 2, E.ImageTooLargeError, "max_side"),
    "columns 9000": (32, 9000, 2, E.ImageTooLargeError, "max_side"),
    "frame pixels": (8000, 8000, 1, E.ImageTooLargeError, "max_frame_pixels"),
    "5000 frames": (32, 40, 5000, E.ImageTooLargeError, "max_bscans"),
    "volume pixels": (2048, 2048, 100, E.ImageTooLargeError, "max_volume_pixels"),
    "zero rows": (0, 40, 2, E.EmptyInputError, "holds no pixels"),
    "zero frames": (32, 40, 0, E.CorruptFileError, ""),
}


@pytest.mark.parametrize("case", list(HEADER_CLAIMS))
def test_dicom_header_claims_are_checked_before_decoding(tmp_path, case):
    rows, cols, frames, kind, text = HEADER_CLAIMS[case]
    path = write_opt(full_volume(n=2), tmp_path / "claim.dcm")
    ds = pydicom.dcmread(path)
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, cols, frames
    ds.save_as(path, enforce_file_format=True)
    if frames == 0:  # 0 frames reads as one (NumberOfFrames 0 is invalid): then the pixel data is short
        with deadline(), pytest.raises(E.InputError) as info:
            open_path(path)
        assert str(path) in str(info.value)
        return
    expect(path, kind, also=text)


# ------------------------------------------------------------------------------------------- TIFF
def _tiff(path: Path, pages: int = 3, *, bigtiff: bool = False, byteorder: str = "<") -> Path:
    data = np.random.default_rng(0).integers(0, 255, (pages, 24, 32), dtype=np.uint8)
    tifffile.imwrite(path, data, bigtiff=bigtiff, byteorder=byteorder, photometric="minisblack")
    return path


def _last_ifd_next_offset(path: Path) -> tuple[int, int, bool, str]:
    """(position of the last IFD's next-offset field, first IFD offset, bigtiff, byte order)."""
    raw = path.read_bytes()
    order = "little" if raw[:2] == b"II" else "big"
    big = int.from_bytes(raw[2:4], order) == 43
    first = offset = int.from_bytes(raw[8:16] if big else raw[4:8], order)
    while True:
        n = int.from_bytes(raw[offset : offset + (8 if big else 2)], order)
        at = offset + (8 if big else 2) + n * (20 if big else 12)
        nxt = int.from_bytes(raw[at : at + (8 if big else 4)], order)
        if not nxt:
            return at, first, big, order
        offset = nxt


@pytest.mark.parametrize("target", ["first", "self"])
@pytest.mark.parametrize(
    "flavour", [dict(), dict(byteorder=">"), dict(bigtiff=True), dict(bigtiff=True, byteorder=">")]
)
def test_tiff_page_chain_that_loops_is_refused(tmp_path, flavour, target):
    path = _tiff(tmp_path / "loop.tif", **flavour)
    at, first, big, order = _last_ifd_next_offset(path)
    raw = bytearray(path.read_bytes())
    if target == "first":
        loop_to = first
    else:  # the last IFD points at itself
        loop_to = _last_ifd_start(raw, first, big, order)
    raw[at : at + (8 if big else 4)] = loop_to.to_bytes(8 if big else 4, order)
    path.write_bytes(bytes(raw))
    expect(path, E.CorruptFileError, also="loops back")


def _last_ifd_start(raw: bytes, first: int, big: bool, order: str) -> int:
    offset = first
    while True:
        n = int.from_bytes(raw[offset : offset + (8 if big else 2)], order)
        at = offset + (8 if big else 2) + n * (20 if big else 12)
        nxt = int.from_bytes(raw[at : at + (8 if big else 4)], order)
        if not nxt:
            return offset
        offset = nxt


def test_tiff_with_more_pages_than_the_limit_is_refused_quickly(tmp_path):
    path = tmp_path / "flood.tif"
    with tifffile.TiffWriter(path) as tif:
        for _ in range(300):
            tif.write(np.zeros((1, 1), np.uint8), photometric="minisblack", contiguous=False)
    with limits.override(max_bscans=200):
        expect(path, E.ImageTooLargeError, also="more than 200 pages")
        assert tiff_page_count(tmp_path / "ok.tif" if False else _tiff(tmp_path / "ok.tif", 5)) == 5
    with limits.override(max_bscans=300):
        assert open_path(path)[0].n_bscans == 300


# --------------------------------------------------------------------------- special files, links
def test_fifo_in_a_folder_is_reported_and_never_opened(tmp_path):
    folder = tmp_path / "exam"
    good = write_opt(full_volume(n=2), folder / "good.dcm")
    os.mkfifo(folder / "pipe.dcm")
    errors: list[E.InputError] = []
    with deadline(10):
        volumes = open_path(folder, errors=errors)
    assert [v.source for v in volumes] == [good]
    assert [(type(e), e.path.name) for e in errors] == [(E.UnsupportedFormatError, "pipe.dcm")]
    assert "named pipe" in str(errors[0])


def test_fifo_given_directly_is_refused(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    expect(tmp_path / "pipe", E.FileMissingError, also="neither a file nor a folder")


def test_socket_and_device_links_in_a_folder_are_not_opened(tmp_path):
    folder = tmp_path / "exam"
    good = write_opt(full_volume(n=2), folder / "good.dcm")
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(folder / "s.sock"))
        (folder / "zero.dcm").symlink_to("/dev/zero")  # reading it never ends
        errors: list[E.InputError] = []
        with deadline(10):
            volumes = open_path(folder, errors=errors)
    finally:
        sock.close()
    assert [v.source for v in volumes] == [good]
    got = {e.path.name: str(e) for e in errors}
    assert set(got) == {"s.sock", "zero.dcm"}
    assert "a socket" in got["s.sock"] and "a device" in got["zero.dcm"]


@pytest.mark.parametrize("kind", ["file loop", "self link", "folder loop", "folder link to parent"])
def test_symbolic_link_loops_do_not_trap_or_crash_the_scan(tmp_path, kind):
    folder = tmp_path / "exam"
    good = write_opt(full_volume(n=2), folder / "good.dcm")
    if kind == "file loop":
        (folder / "a.dcm").symlink_to(folder / "b.dcm")
        (folder / "b.dcm").symlink_to(folder / "a.dcm")
    elif kind == "self link":
        (folder / "me.dcm").symlink_to(folder / "me.dcm")
    elif kind == "folder loop":
        (folder / "sub").mkdir()
        (folder / "sub" / "up").symlink_to(folder, target_is_directory=True)
    else:
        (folder / "parent").symlink_to(tmp_path, target_is_directory=True)
    errors: list[E.InputError] = []
    with deadline(10):
        volumes = open_path(folder, errors=errors)
    assert [v.source for v in volumes] == [good]
    for e in errors:
        assert isinstance(e, E.FileMissingError) and "loop of symbolic links" in str(e)
    assert len(errors) == {"file loop": 2, "self link": 1}.get(kind, 0)


def test_dicomdir_entry_that_is_a_link_loop_is_refused_not_a_crash(tmp_path):
    from core.io import write_dicomdir

    src = write_opt(full_volume(n=2), tmp_path / "src" / "IMG1")
    dicomdir = write_dicomdir([src], tmp_path / "fs")
    member = next(p for p in dicomdir.parent.rglob("*") if p.is_file() and p.name != "DICOMDIR")
    member.unlink()
    member.symlink_to(member)  # the referenced file became a loop
    with deadline(10), pytest.raises(E.InputError) as info:
        open_path(dicomdir)
    assert member.name in str(info.value)


def test_an_unreadable_subfolder_is_reported_not_silently_missing(tmp_path, monkeypatch):
    folder = tmp_path / "exam"
    good = write_opt(full_volume(n=2), folder / "good.dcm")
    (folder / "locked").mkdir()
    write_opt(full_volume(n=2, seed=5), folder / "locked" / "hidden.dcm")
    real = os.scandir

    def scandir(path="."):
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    errors: list[E.InputError] = []
    volumes = open_path(folder, errors=errors)
    assert [v.source for v in volumes] == [good]
    assert [(type(e), e.path.name) for e in errors] == [(E.FileMissingError, "locked")]
    assert "cannot be read" in str(errors[0]) and "Permission denied" in str(errors[0])


def test_scan_depth_and_file_count_limits_are_reported(tmp_path):
    folder = tmp_path / "exam"
    deep = folder.joinpath(*[f"d{i}" for i in range(6)])
    write_opt(full_volume(n=2), deep / "deep.dcm")
    top = write_opt(full_volume(n=2, seed=1), folder / "top.dcm")
    errors: list[E.InputError] = []
    with limits.override(max_depth=3):
        volumes = open_path(folder, errors=errors)
    assert [v.source for v in volumes] == [top]
    assert len(errors) == 1 and "max_depth" in str(errors[0])
    for i in range(4):
        (folder / f"note{i}.txt").write_text("x")
    errors = []
    with limits.override(max_files=3):
        open_path(folder, errors=errors)
    assert any("max_files" in str(e) and e.path == folder for e in errors)


# --------------------------------------------------------------------------------- run pixel budget
def test_the_run_budget_stops_decoding_and_names_the_file(tmp_path):
    folder = tmp_path / "exam"
    paths = [write_opt(full_volume(n=4, seed=i), folder / f"v{i}.dcm") for i in range(3)]
    per_volume = 4 * 32 * 40
    errors: list[E.InputError] = []
    with limits.override(max_run_pixels=2 * per_volume):
        volumes = open_path(folder, errors=errors)
    assert [v.source for v in volumes] == paths[:2]
    assert [(type(e), e.path) for e in errors] == [(E.ImageTooLargeError, paths[2])]
    assert "max_run_pixels" in str(errors[0])
    # each open_path call has its own budget
    with limits.override(max_run_pixels=2 * per_volume):
        assert len(open_path(paths[0])) == 1 and len(open_path(paths[1])) == 1


def test_the_run_budget_counts_image_stacks_too(tmp_path):
    from PIL import Image

    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        for i in range(3):
            Image.fromarray(np.full((20, 30), 100 + i, np.uint8)).save(tmp_path / d / f"{i}.png")
    errors: list[E.InputError] = []
    with limits.override(max_run_pixels=3 * 20 * 30):
        volumes = open_path(tmp_path, errors=errors)
    assert len(volumes) == 1 and len(errors) == 1 and "max_run_pixels" in str(errors[0])


# ----------------------------------------------------------------------------------- the limits
def test_limits_parse_and_override():
    lim = limits.parse("max_bscans=8000, max_side=0x4000")
    assert (lim.max_bscans, lim.max_side) == (8000, 16384)
    assert lim.max_volume_pixels == limits.DEFAULT_LIMITS.max_volume_pixels
    for bad in ("max_bscan=1", "max_side", "max_side=big", "max_side=0", "max_side=-5"):
        with pytest.raises(ValueError):
            limits.parse(bad)
    before = limits.current()
    with limits.override(max_side=100) as inner:
        assert limits.current() is inner and inner.max_side == 100
    assert limits.current() == before


def test_limits_come_from_the_environment(monkeypatch, tmp_path):
    path = write_opt(full_volume(n=2), tmp_path / "v.dcm")
    monkeypatch.setenv(limits.ENV_VAR, "max_side=16")
    limits.set_limits(None)  # re-read the environment
    try:
        expect(path, E.ImageTooLargeError, also="16 pixels per side")
    finally:
        monkeypatch.delenv(limits.ENV_VAR)
        limits.set_limits(None)
    assert open_path(path)[0].n_bscans == 2


# ------------------------------------------------------------------------------- model card bombs
def _card(tmp_path: Path, change) -> Path:
    from core.inference import default_card_path

    d = json.loads(default_card_path().read_text())
    change(d)
    p = tmp_path / "card.json"
    p.write_text(json.dumps(d) if not isinstance(d, str) else d)
    return p


@pytest.mark.parametrize(
    "case,change,text",
    [
        ("30000 px input", lambda d: d.update(input_size=[30000, 30000]), "max_model_input"),
        ("input 4096 wide", lambda d: d.update(input_size=[224, 4096]), "max_model_input"),
        ("padding", lambda d: d.update(description="x" * (2 << 20)), "max_card_bytes"),
    ],
)
def test_model_card_bombs_are_refused_naming_card_and_field(tmp_path, case, change, text):
    from core.modelcard import load_card

    p = _card(tmp_path, change)
    with pytest.raises(E.ModelCardError) as info:
        load_card(p)
    assert str(p) in str(info.value) and text in str(info.value)


@pytest.mark.parametrize("payload", ["[" * 100_000 + "]" * 100_000, '{"a":' * 50_000 + "1" + "}" * 50_000, "[1, 2]"])
def test_deeply_nested_or_non_object_card_is_a_clean_error(tmp_path, payload):
    from core.modelcard import load_card

    p = tmp_path / "card.json"
    p.write_text(payload)
    with pytest.raises(E.ModelCardError) as info:
        load_card(p)
    assert str(p) in str(info.value)


# ----------------------------------------------------------------------------- silent wrong results
def _truncate_frame(path: Path, index: int, cut: int) -> Path:
    ds = pydicom.dcmread(path)
    frames = list(generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))
    frames[index] = frames[index][:-cut]
    ds.PixelData = encapsulate(frames)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize("cut", [2, 50, 300])
@pytest.mark.parametrize("index", [0, 2])
def test_truncated_j2k_frame_is_refused_not_screened(tmp_path, index, cut):
    path = _truncate_frame(_j2k_file(tmp_path), index, cut)
    err = expect(path, E.CorruptFileError, also="truncated")
    assert f"frame {index + 1} of 3" in str(err)


def _jpeg_dicom(tmp: Path, cut: int = 0) -> Path:
    import io

    from PIL import Image
    from pydicom.uid import JPEGBaseline8Bit

    vol = full_volume(n=2)
    frames = []
    for b in vol.bscans:
        buf = io.BytesIO()
        Image.fromarray(b).save(buf, format="JPEG", quality=95)
        frames.append(buf.getvalue())
    if cut:
        frames[1] = frames[1][:-cut]
    path = write_opt(vol, tmp / "jpeg.dcm")
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate(frames)
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_truncated_jpeg_baseline_frame_is_refused_and_a_whole_one_reads(tmp_path):
    good = _jpeg_dicom(tmp_path / "a")
    assert open_path(good)[0].n_bscans == 2
    expect(_jpeg_dicom(tmp_path / "b", cut=200), E.CorruptFileError, also="frame 2 of 2 is truncated")


@pytest.mark.parametrize("same", [True, False], ids=["identical copy", "different pixels"])
def test_duplicate_sop_instance_uid_is_reported_not_silently_dropped(tmp_path, same):
    from core.io.writer import build_opt_dataset

    folder = tmp_path / "series"
    folder.mkdir()
    vol = full_volume(n=1)
    datasets = [build_opt_dataset(vol) for _ in range(3)]
    for i, ds in enumerate(datasets):
        ds.InstanceNumber = i + 1
    third = datasets[2]  # reuses the second's SOPInstanceUID
    third.SOPInstanceUID = third.file_meta.MediaStorageSOPInstanceUID = datasets[1].SOPInstanceUID
    if not same:
        third.PixelData = bytes(255 - b for b in third.PixelData)
    paths = []
    for i, ds in enumerate(datasets):
        ds.save_as(folder / f"b{i}.dcm", enforce_file_format=True)
        paths.append(folder / f"b{i}.dcm")
    assert len({str(ds.SOPInstanceUID) for ds in datasets}) == 2
    errors: list[E.InputError] = []
    volumes = open_path(folder, errors=errors)
    assert len(volumes) == 1 and volumes[0].n_bscans == 2
    assert [e.path for e in errors] == [paths[2]]
    assert "b1.dcm" in str(errors[0])
    assert ("identical copy" in str(errors[0])) is same


SAMPLE_JPEG = sorted((Path(__file__).parent / "data" / "oct2017-sample").rglob("*.jpeg"))[0]


@pytest.mark.parametrize(
    "fmt,cut",
    # a PNG cut inside its IEND chunk still holds every pixel: only cuts into the image data count
    [("jpeg", 2), ("jpeg", 100), ("jpeg", 5000), ("jpeg", 20000), ("png", 100), ("png", 5000), ("png", 20000)],
)
def test_truncated_image_file_is_refused(tmp_path, fmt, cut):
    from PIL import Image

    path = tmp_path / f"CNV-1-1.{fmt}"
    if fmt == "jpeg":
        data = SAMPLE_JPEG.read_bytes()
    else:
        Image.open(SAMPLE_JPEG).save(path)
        data = path.read_bytes()
    path.write_bytes(data[:-cut])
    expect(path, E.CorruptFileError, also="truncated")


@pytest.mark.parametrize("name", ["dicomdir-typeerror", "dicomdir-notag", "dicomdir-badvr"])
def test_fuzz_found_damaged_dicomdirs_are_clean_errors(tmp_path, name):
    """Inputs benchmarks/fuzz_readers.py found: the directory records used to crash the folder scan."""
    path = tmp_path / "DICOMDIR"
    path.write_bytes((Path(__file__).parent / "data" / "fuzz-regressions" / name).read_bytes())
    expect(path, E.CorruptFileError, also="damaged DICOMDIR")


def test_fuzz_found_bad_series_uid_vr_is_a_clean_error_beside_good_files(tmp_path):
    folder = tmp_path / "exam"
    good = write_opt(full_volume(n=2), folder / "good.dcm")
    bad = folder / "bad.dcm"
    bad.write_bytes((Path(__file__).parent / "data" / "fuzz-regressions" / "opt-1frame-badvr-series.dcm").read_bytes())
    errors: list[E.InputError] = []
    volumes = open_path(folder, errors=errors)
    assert [v.source for v in volumes] == [good]
    assert [(type(e), e.path) for e in errors] == [(E.CorruptFileError, bad)]
    assert "damaged DICOM header" in str(errors[0])
    expect(bad, E.CorruptFileError, also="damaged DICOM header")


# ------------------------------------------------------------------- image headers that claim a size
def _png_claiming(w: int, h: int) -> bytes:
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _small_image(fmt: str) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((16, 24), 90, np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


def _jpeg_claiming(w: int, h: int) -> bytes:
    data = bytearray(_small_image("JPEG"))
    at = data.find(b"\xff\xc0")  # SOF0: length(2) precision(1) height(2) width(2)
    data[at + 5 : at + 9] = struct.pack(">HH", h, w)
    return bytes(data)


def _bmp_claiming(w: int, h: int) -> bytes:
    data = bytearray(_small_image("BMP"))
    data[18:26] = struct.pack("<ii", w, h)
    return bytes(data)


def _tiff_claiming(w: int, h: int) -> bytes:
    import io

    buf = io.BytesIO()
    tifffile.imwrite(buf, np.full((16, 24), 90, np.uint8), photometric="minisblack")
    data = bytearray(buf.getvalue())
    ifd = int.from_bytes(data[4:8], "little")
    n = int.from_bytes(data[ifd : ifd + 2], "little")
    for i in range(n):
        e = ifd + 2 + 12 * i
        tag, typ = struct.unpack("<HH", data[e : e + 4])
        if tag in (256, 257):
            value = w if tag == 256 else h
            data[e + 2 : e + 4] = struct.pack("<H", 4)  # LONG
            data[e + 8 : e + 12] = struct.pack("<I", value)
    return bytes(data)


CLAIMS = {"png": _png_claiming, "jpeg": _jpeg_claiming, "bmp": _bmp_claiming, "tif": _tiff_claiming}


@pytest.mark.parametrize("size", [(60000, 60000), (8193, 16), (16, 9000), (6000, 6000)], ids=str)
@pytest.mark.parametrize("fmt", list(CLAIMS))
def test_image_header_claiming_a_huge_size_is_refused_before_decoding(tmp_path, fmt, size):
    path = tmp_path / f"claim.{fmt}"
    path.write_bytes(CLAIMS[fmt](*size))
    expect(path, E.ImageTooLargeError)


@pytest.mark.parametrize("fmt", list(CLAIMS))
def test_image_header_claiming_zero_size_is_refused(tmp_path, fmt):
    path = tmp_path / f"zero.{fmt}"
    path.write_bytes(CLAIMS[fmt](0, 0))
    with deadline(), pytest.raises(E.InputError) as info:
        open_path(path)
    assert str(path) in str(info.value)
