"""Zeiss Cirrus ``.img`` exports (research/raw export): read with numpy, no extra needed.

A Cirrus ``.img`` is a bare dump of 8-bit samples with no header; its geometry is known only from
the scan protocol. The file name of a Cirrus export carries it, e.g.
``P0001_Macular Cube 512x128_11-22-2016_10-32-33_OD_sn12345_cube_z.img`` (patient id, protocol with
``<A-scans>x<B-scans>``, date ``MM-DD-YYYY``, time, eye, serial, ``cube_z``/``cube_raw``/``hidef``).

Geometry: from the protocol in the name when it is there (the file size must then agree), otherwise
from the file size among the known protocols (:data:`PROTOCOLS`); a size that fits none is refused.
Every B-scan is 1024 samples deep (2 mm). Layout (as the published Cirrus readers read it, e.g.
Lang et al.'s octCirrusReader): B-scan after B-scan, each row after row of ``A-scans`` bytes, stored
upside down, mirrored left-right and in reverse B-scan order; they are flipped back here.

Content check: a bare dump has no magic number, so any file of the right size would "fit". OCT
speckle and layers make neighbouring samples along an A-scan strongly correlated (r > 0.9 on real
B-scans); random or encrypted bytes give r ~ 0. Data below :data:`MIN_AXIAL_CORRELATION` is refused.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np

from core.errors import CorruptFileError, EmptyInputError, NotOctError
from core.io.common import check_size, stable_uid
from core.volume import DeviceInfo, Laterality, OctVolume, PatientInfo, PixelSpacing, StudyInfo

__all__ = ["PROTOCOLS", "CirrusGeometry", "read_cirrus", "geometry", "MIN_AXIAL_CORRELATION"]

DEPTH = 1024
"""Samples per A-scan in every Cirrus protocol (2 mm axial)."""
DEPTH_MM = 2.0
MIN_AXIAL_CORRELATION = 0.2


@dataclasses.dataclass(frozen=True)
class CirrusGeometry:
    protocol: str
    a_scans: int
    b_scans: int
    width_mm: float
    """Length of each B-scan."""
    height_mm: float | None
    """Extent of the cube across B-scans (None: lines, not a cube)."""

    @property
    def n_bytes(self) -> int:
        return self.a_scans * self.b_scans * DEPTH


PROTOCOLS: tuple[CirrusGeometry, ...] = (
    CirrusGeometry("Macular/Optic Disc Cube 512x128", 512, 128, 6.0, 6.0),
    CirrusGeometry("Macular/Optic Disc Cube 200x200", 200, 200, 6.0, 6.0),
    CirrusGeometry("5 Line Raster (1024 A-scans)", 1024, 5, 6.0, None),
    CirrusGeometry("5 Line Raster (512 A-scans)", 512, 5, 6.0, None),
)
"""The protocols recognised by file size alone (each size is distinct)."""

_PROTOCOL_IN_NAME = re.compile(r"(\d{2,4})\s*x\s*(\d{1,4})")
_DATE_IN_NAME = re.compile(r"(?<!\d)(\d{1,2})-(\d{1,2})-(\d{4})(?!\d)")
_EYE_IN_NAME = re.compile(r"(?:^|_)(OD|OS)(?:_|$)")


def geometry(path: Path, n_bytes: int) -> CirrusGeometry:
    """The scan geometry of a Cirrus file of ``n_bytes`` named ``path``; CorruptFileError when the
    name's protocol disagrees with the size, NotOctError when the size fits no known protocol."""
    if n_bytes == 0:
        raise EmptyInputError(path, "the file is empty (0 bytes)")
    name = path.stem
    named = _PROTOCOL_IN_NAME.search(name)
    if named and "hidef" not in name.lower():
        a, b = int(named.group(1)), int(named.group(2))
        expected = a * b * DEPTH
        if n_bytes != expected:
            raise CorruptFileError(
                path,
                f"its name says a {a}x{b} Cirrus scan ({expected:,} bytes at {DEPTH} samples per A-scan) "
                f"but the file has {n_bytes:,} bytes: truncated, or not a Cirrus .img",
            )
        return CirrusGeometry(f"{a}x{b} (from the file name)", a, b, 6.0, 6.0 if b > 5 else None)
    if "hidef" in name.lower():
        for a in (1024, 1000, 512):  # HD cross: 2 B-scans (macular 1024, optic disc 1000 A-scans)
            if n_bytes == a * 2 * DEPTH:
                return CirrusGeometry(f"HD cross {a}x2", a, 2, 6.0, None)
    for g in PROTOCOLS:
        if n_bytes == g.n_bytes:
            return g
    known = ", ".join(f"{g.protocol} = {g.n_bytes:,} bytes" for g in PROTOCOLS)
    raise NotOctError(
        path,
        f"{n_bytes:,} bytes fit no known Zeiss Cirrus protocol ({known}); if it is a Cirrus export, "
        "keep its original file name (it names the protocol), or export the exam as DICOM",
    )


def axial_correlation(bscans: np.ndarray, max_bscans: int = 8) -> float:
    """Correlation of neighbouring samples along the A-scans of up to ``max_bscans`` B-scans."""
    pick = np.linspace(0, len(bscans) - 1, min(max_bscans, len(bscans))).round().astype(int)
    x = bscans[pick].astype(np.float32)
    a, b = x[:, :-1, :].ravel(), x[:, 1:, :].ravel()
    a, b = a - a.mean(), b - b.mean()
    denom = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denom) if denom > 0 else 0.0


def read_cirrus(path: Path) -> OctVolume:
    """Read one Zeiss Cirrus ``.img`` export (see the module docstring)."""
    n_bytes = path.stat().st_size
    g = geometry(path, n_bytes)
    check_size(path, g.b_scans, DEPTH, g.a_scans, charge=True)
    raw = np.fromfile(path, dtype=np.uint8, count=g.n_bytes)
    if raw.size != g.n_bytes:  # the file shrank while being read
        raise CorruptFileError(path, f"could read only {raw.size:,} of {g.n_bytes:,} bytes")
    bscans = np.ascontiguousarray(raw.reshape(g.b_scans, DEPTH, g.a_scans)[::-1, ::-1, ::-1])
    if int(bscans.max()) == int(bscans.min()):
        raise EmptyInputError(path, f"every sample is {int(bscans.min())}: the file holds no image")
    r = axial_correlation(bscans)
    if r < MIN_AXIAL_CORRELATION:
        raise NotOctError(
            path,
            f"does not look like OCT: neighbouring samples along the A-scans are uncorrelated "
            f"(r = {r:.2f}, OCT has r > 0.9; below {MIN_AXIAL_CORRELATION} is refused): random, "
            "encrypted or another kind of data",
        )
    name = path.stem
    eye = _EYE_IN_NAME.search(name)
    date = _DATE_IN_NAME.search(name)
    study_date = f"{int(date.group(3)):04d}{int(date.group(1)):02d}{int(date.group(2)):02d}" if date else ""
    first = name.split("_", 1)[0] if "_" in name else ""
    return OctVolume(
        bscans,
        laterality=Laterality.parse(eye.group(1) if eye else None),
        patient=PatientInfo(patient_id=first),
        study=StudyInfo(
            study_uid=stable_uid("cirrus", path.resolve()),
            series_uid=stable_uid("cirrus", path.resolve(), 0),
            study_date=study_date,
            description=g.protocol,
        ),
        device=DeviceInfo(manufacturer="Carl Zeiss Meditec", model="Cirrus HD-OCT"),
        spacing=PixelSpacing(
            slice=(g.height_mm / g.b_scans) if g.height_mm else None,
            row=DEPTH_MM / DEPTH,
            column=g.width_mm / g.a_scans,
        ),
        source=path,
        source_files=(path,),
        extra={"format": "img", "cirrus_protocol": g.protocol, "axial_correlation": round(r, 3)},
    )
