"""Seeded simulator of macular OCT volumes: normal, drusen and CNV eyes with per-B-scan labels.

The eye is a small analytic 3-D model in millimetres: lateral ``x`` (across a B-scan, -3..3 mm),
slice position ``y`` (across the volume, -3..3 mm, first B-scan inferior) and depth. Layer
thicknesses (OCT_PRIMER.md table) are functions of ``(x, y)``, lesions are analytic 3-D shapes
(domes, lobes, ellipsoid cysts). Each B-scan samples that model at its ``y``: per-column boundary
curves are computed once, then the image is rendered with vectorised numpy in the dB domain
(layer reflectivity, choroid texture, shadows, attenuation), passed through a point-spread blur,
multiplicative speckle and an additive noise floor, log-compressed and mapped to grey levels.
Appearance (contrast, gamma, noise, grain, thickness, curvature, tilt, device look) is drawn per
volume so that models trained on it do not learn one rendering.

A B-scan is labelled diseased only when it actually cuts a lesion: lesion heights are rendered
minus a floor of ``LESION_FLOOR_UM`` (so a dome's faint rim is not drawn at all) and a B-scan whose
rendered lesion reaches ``LESION_MIN_UM`` (or that cuts a cyst) gets the eye's label.

The dataset writer (``write_dataset``: PNG or DICOM OPT files + manifest) is ``core.synthetic.dataset``.
Speed: about 0.02 s of one CPU core per 496 x 512 B-scan.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from core.volume import DeviceInfo, Laterality, OctVolume, PatientInfo, PixelSpacing, StudyInfo

__all__ = [
    "CLASSES",
    "LESION_FLOOR_UM",
    "LESION_MIN_UM",
    "DEVICE",
    "SimulatedBScan",
    "simulate_bscan",
    "simulate_volume",
    "simulate_patient",
    "patient_labels",
]

log = logging.getLogger("core.synthetic")

CLASSES: tuple[str, ...] = ("normal", "drusen", "cnv")
LESION_FLOOR_UM = 6.0  # lesion heights below this are not rendered (a dome's rim)
LESION_MIN_UM = 4.0  # a B-scan whose rendered lesion is lower than this is labelled normal
CYST_MIN_MM, CYST_MIN_UM = 0.04, 15.0  # smallest cyst cross-section drawn (half-width, half-height)
DEVICE = DeviceInfo(manufacturer="OCT Screen", model="simulator", software_version="1")
SCAN_MM = 6.0  # lateral extent of a B-scan and of the volume
DEPTH_MM = 1.93  # axial extent of a B-scan (Spectralis: 496 rows x 3.9 um)
_UID_ROOT = "1.2.826.0.1.3680043.8.498."  # pydicom's root, as used by generate_uid

# Layers from top to bottom. Index = number of boundaries above a pixel.
(VIT, NFL, GCL, IPL, INL, OPL, ONL, ELM, MYO, EZ, OS, IZ, SRF, SHRM, RPE, SUBRPE, BM, CHOROID, SCLERA) = range(19)
N_LAYERS = 19
# Reflectivity above the noise floor in dB (textbook order: NFL bright, INL/ONL dark, RPE brightest).
_BASE_DB = np.array([-60, 25, 15, 20, 10, 19, 8, 16, 9, 28, 12, 22, -8, 24, 35, 18, 23, 20, 6], np.float32)


# ----------------------------------------------------------------------------------------------
# The eye model


@dataclass
class _Dome:
    """A 3-D dome: height ``h_um * (1 - rho^2)^p`` inside the ellipse ``rho < 1`` around (x0, y0)."""

    x0: float
    y0: float
    ax: float  # semi-axis in x, mm
    ay: float  # semi-axis in y, mm
    h_um: float
    p: float = 0.8

    def profile(self, x: np.ndarray, y: float) -> np.ndarray:
        """Height in um along the B-scan at slice position ``y``."""
        rho2 = ((x - self.x0) / self.ax) ** 2 + ((y - self.y0) / self.ay) ** 2
        return self.h_um * np.clip(1.0 - rho2, 0.0, None) ** self.p


@dataclass
class _Cyst:
    """An ellipsoidal intraretinal cyst centred in the INL or ONL."""

    x0: float
    y0: float
    rx: float  # mm
    ry: float  # mm
    rz_um: float
    layer: int  # INL or ONL
    frac: float  # where in the layer's depth the centre sits (0 = top, 1 = bottom)


@dataclass
class _Vessel:
    """A retinal vessel: a straight line in the (x, y) plane, seen in cross-section in each B-scan."""

    x0: float
    slope: float  # dx/dy
    width_um: float
    shadow_db: float


@dataclass
class _Eye:
    """Everything drawn once per volume: anatomy, lesions and the device's look."""

    label: str
    nasal_sign: float  # +1: nasal side on the right of the B-scan (OD)
    fovea: tuple[float, float]
    base_mm: float  # Bruch's membrane depth at the fovea, mm from the top
    tilt: tuple[float, float]  # mm depth per mm in x, y
    curvature: float  # mm depth per mm^2 (positive: edges higher, a bowl)
    wave: tuple[float, float, float]  # low-frequency waviness: amplitude mm, frequency, phase
    thick: dict[str, float]  # layer thicknesses, um
    pit_depth: float  # fraction of the inner retina missing at the foveal centre
    pit_sigma: float  # mm
    choroid_um: float
    layer_db: np.ndarray  # reflectivity per layer (dB), jittered
    drusen: list[_Dome] = field(default_factory=list)
    ped: list[_Dome] = field(default_factory=list)
    shrm: list[_Dome] = field(default_factory=list)
    srf: list[_Dome] = field(default_factory=list)
    cysts: list[_Cyst] = field(default_factory=list)
    vessels: list[_Vessel] = field(default_factory=list)
    drusen_db: float = 17.0
    tissue_texture_db: float = 1.5  # slow reflectivity variation inside layers
    drusen_absorb: float = 0.6  # fraction of a druse's height taken from the ONL
    # image formation / device
    gain_db: float = 0.0
    psf: tuple[float, float] = (0.8, 1.2)  # blur sigma rows, cols
    looks: float = 4.0  # speckle: frames averaged (std 1/sqrt(looks))
    grain: tuple[float, float] = (0.6, 0.9)  # speckle correlation sigma rows, cols
    retina_att: float = 8.0  # dB per mm below the ILM
    choroid_att: float = 30.0  # extra dB per mm below Bruch's membrane
    rolloff_db: float = 3.0  # sensitivity roll-off top to bottom of the frame
    vignette_db: float = 2.0
    lo_db: float = -8.0  # display window
    hi_db: float = 33.0
    gamma: float = 1.0
    border: str = "none"  # registration border: none / white / black
    rot_deg: float = 0.0
    motion_px: float = 2.0  # axial motion between B-scans, px std
    low_signal: dict[int, float] = field(default_factory=dict)  # frame index -> dB lost


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _draw_eye(label: str, laterality: Laterality, rng: np.random.Generator, n_bscans: int) -> _Eye:
    """Draw anatomy, lesions and the device look of one eye."""
    # the operator centres the cube on the fovea (fixation): small offsets, smaller across slices
    fovea = (float(np.clip(rng.normal(0.0, 0.25), -0.6, 0.6)), float(np.clip(rng.normal(0.0, 0.05), -0.1, 0.1)))
    scale = _u(rng, 0.85, 1.15)
    thick = {
        "nfl": _u(rng, 18, 30),
        "nfl_nasal": _u(rng, 15, 35),
        "gcl": _u(rng, 35, 50),
        "ipl": _u(rng, 30, 40),
        "inl": _u(rng, 28, 40),
        "opl": _u(rng, 20, 30),
        "onl": _u(rng, 60, 90),
        "elm": _u(rng, 3, 6),
        "myo": _u(rng, 14, 22),
        "ez": _u(rng, 8, 14),
        "os": _u(rng, 12, 20),
        "iz": _u(rng, 6, 11),
        "rpe": _u(rng, 15, 25),
        "bm": _u(rng, 4, 8),
    }
    thick = {k: v * scale for k, v in thick.items()}
    layer_db = _BASE_DB + rng.normal(0.0, 1.2, N_LAYERS).astype(np.float32)
    layer_db[VIT] = -60.0
    layer_db[RPE] = max(layer_db[RPE], layer_db[EZ] + 4.0, layer_db[NFL] + 7.0)  # RPE: the brightest band
    eye = _Eye(
        label=label,
        nasal_sign=1.0 if laterality != Laterality.OS else -1.0,
        fovea=fovea,
        base_mm=_u(rng, 0.50, 0.66) * DEPTH_MM,
        tilt=(_u(rng, -0.06, 0.06), _u(rng, -0.03, 0.03)),
        curvature=_u(rng, -0.004, 0.016),
        wave=(_u(rng, 0.0, 0.015), _u(rng, 0.3, 1.0), _u(rng, 0, 2 * np.pi)),
        thick=thick,
        pit_depth=_u(rng, 0.88, 0.99),
        pit_sigma=_u(rng, 0.2, 0.32),
        choroid_um=_u(rng, 150, 350),
        layer_db=layer_db,
        gain_db=_u(rng, -4.0, 5.0),
        psf=(_u(rng, 0.5, 1.2), _u(rng, 0.6, 1.8)),
        looks=_u(rng, 1.3, 6.0),
        grain=(_u(rng, 0.4, 1.1), _u(rng, 0.5, 1.8)),
        retina_att=_u(rng, 3.0, 15.0),
        choroid_att=_u(rng, 30.0, 60.0),
        rolloff_db=_u(rng, 0.0, 6.0),
        vignette_db=_u(rng, 0.0, 6.0),
        lo_db=_u(rng, -7.0, 0.0),
        hi_db=_u(rng, 29.0, 36.0),
        gamma=_u(rng, 0.7, 1.4),
        border=str(rng.choice(["none", "white", "black"], p=[0.6, 0.25, 0.15])),
        rot_deg=_u(rng, -3.0, 3.0),
        motion_px=_u(rng, 0.0, 4.0),
        tissue_texture_db=_u(rng, 0.5, 2.5),
    )
    # Retinal vessels (avoid the foveal avascular zone), with their shadows.
    for _ in range(int(rng.integers(2, 7))):
        x0 = float(rng.choice([-1, 1])) * _u(rng, 0.6, 3.0) + fovea[0]
        eye.vessels.append(
            _Vessel(x0=x0, slope=_u(rng, -0.5, 0.5), width_um=_u(rng, 40, 120), shadow_db=_u(rng, 1.5, 6.0))
        )
    # Blinks / low-signal frames.
    if rng.random() < 0.3:
        for i in rng.choice(n_bscans, size=min(n_bscans, int(rng.integers(1, 3))), replace=False):
            eye.low_signal[int(i)] = _u(rng, 8.0, 22.0)
    if label == "drusen":
        _add_drusen(eye, rng)
    elif label == "cnv":
        _add_cnv(eye, rng)
    elif label != "normal":
        raise ValueError(f"unknown label {label!r}; expected one of {CLASSES}")
    return eye


def _add_drusen(eye: _Eye, rng: np.random.Generator) -> None:
    """Several to many drusen clustered near the fovea; one large druse guarantees a visible lesion."""
    fx, fy = eye.fovea
    n = int(rng.integers(8, 60))
    spread = _u(rng, 0.4, 1.1)
    for i in range(n):
        if i == 0:
            x0, y0 = fx + rng.normal(0, 0.3), fy + rng.normal(0, 0.2)
            diam = _u(rng, 0.3, 0.9)
        else:
            x0, y0 = fx + rng.normal(0, spread), fy + rng.normal(0, spread * 0.8)
            diam = float(np.clip(rng.lognormal(np.log(0.2), 0.6), 0.06, 1.0))
        height = float(np.clip(diam * _u(rng, 90, 220), 20, 150))
        ecc = _u(rng, 0.7, 1.4) if i else _u(rng, 0.8, 1.0)  # the first, large one spans several B-scans
        eye.drusen.append(_Dome(float(x0), float(y0), diam / 2 * ecc, diam / 2 / ecc, height, p=_u(rng, 0.5, 1.1)))
    eye.drusen_db = _u(rng, 18.0, 25.0)
    eye.drusen_absorb = _u(rng, 0.6, 0.95)


def _random_dome(
    rng: np.random.Generator,
    cx: float,
    cy: float,
    sd: tuple[float, float],
    rx: tuple[float, float],
    ry: tuple[float, float],
    height: tuple[float, float],
    p: tuple[float, float],
) -> _Dome:
    """A dome near (cx, cy) (normal offsets of sd mm), radii, height (um) and shape drawn uniformly
    from their ranges, in that order (the draws, and so every seeded volume, stay as they were)."""
    return _Dome(
        cx + rng.normal(0, sd[0]),
        cy + rng.normal(0, sd[1]),
        _u(rng, *rx),
        _u(rng, *ry),
        _u(rng, *height),
        p=_u(rng, *p),
    )


def _add_cnv(eye: _Eye, rng: np.random.Generator) -> None:
    """A fibrovascular PED (multi-lobed), often with SHRM, subretinal fluid and intraretinal cysts."""
    fx, fy = eye.fovea
    cx, cy = fx + rng.normal(0, 0.4), fy + rng.normal(0, 0.3)
    for _ in range(int(rng.integers(2, 6))):
        eye.ped.append(_random_dome(rng, cx, cy, (0.35, 0.3), (0.25, 0.8), (0.25, 0.7), (40, 200), (0.45, 0.9)))
    if rng.random() < 0.7:
        eye.shrm.append(_random_dome(rng, cx, cy, (0.2, 0.2), (0.25, 0.8), (0.25, 0.7), (25, 120), (0.4, 0.9)))
    if rng.random() < 0.8:
        eye.srf.append(_random_dome(rng, cx, cy, (0.3, 0.25), (0.6, 1.7), (0.5, 1.4), (40, 250), (0.7, 1.2)))
    if rng.random() < 0.65:
        for _ in range(int(rng.integers(2, 16))):
            layer = INL if rng.random() < 0.4 else ONL
            eye.cysts.append(
                _Cyst(
                    cx + rng.normal(0, 0.6),
                    cy + rng.normal(0, 0.45),
                    _u(rng, 0.05, 0.25),
                    _u(rng, 0.05, 0.25),
                    _u(rng, 25, 90) if layer == ONL else _u(rng, 18, 45),
                    layer,
                    _u(rng, 0.3, 0.7),
                )
            )


# ----------------------------------------------------------------------------------------------
# Rendering one B-scan


def _lesion_heights(domes: list[_Dome], x: np.ndarray, y: float, combine: str = "max") -> np.ndarray:
    """Height (um) of a set of domes along the B-scan at ``y``, less LESION_FLOOR_UM (not below 0)."""
    out = np.zeros_like(x)
    for d in domes:
        if abs(y - d.y0) >= d.ay:
            continue
        prof = d.profile(x, y)
        out = np.maximum(out, prof) if combine == "max" else out + prof
    return np.clip(out - LESION_FLOOR_UM, 0.0, None)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: tuple[float, float]) -> np.ndarray:
    """Unit-variance Gaussian noise smoothed with (row, col) sigmas."""
    white = rng.standard_normal(shape, dtype=np.float32)
    noise: np.ndarray = cv2.GaussianBlur(white, (0, 0), sigmaX=max(sigma[1], 0.3), sigmaY=max(sigma[0], 0.3))
    std = float(noise[::3, ::3].std()) if noise.size > 4096 else float(noise.std())
    if std > 0:
        noise *= 1.0 / std
    return noise


@dataclass
class SimulatedBScan:
    """One rendered B-scan before quantisation and registration (for tests and teaching)."""

    image: np.ndarray  # float32 [h, w] in [0, 1]
    layers: np.ndarray  # int8 [h, w]: layer index per pixel (VIT, NFL, ..., CHOROID, SCLERA)
    label: str  # 'normal' or the lesion this B-scan cuts


@dataclass
class _Lesions:
    """Lesion heights (um) along one B-scan, each less LESION_FLOOR_UM."""

    drusen: np.ndarray
    ped: np.ndarray  # fibrovascular pigment epithelial detachment (CNV)
    shrm: np.ndarray  # subretinal hyper-reflective material
    srf: np.ndarray  # subretinal fluid

    @property
    def cnv(self) -> np.ndarray:
        """Total CNV elevation of the neurosensory retina."""
        return self.ped + self.shrm + self.srf


def _lesions(eye: _Eye, x: np.ndarray, y: float) -> _Lesions:
    les = _Lesions(
        _lesion_heights(eye.drusen, x, y),
        _lesion_heights(eye.ped, x, y),
        _lesion_heights(eye.shrm, x, y),
        _lesion_heights(eye.srf, x, y),
    )
    if eye.ped:  # irregular lobes: slow ripples on top of the PED
        les.ped *= 1.0 + 0.15 * np.sin(x * 7.0 + y * 3.0) * np.sin(x * 2.7 - 3.0)
    if eye.srf and les.srf.any():
        # fluid fills the crevices between lobes: the detached retina lies on a smoother surface
        total = les.cnv
        smooth = cv2.GaussianBlur(total[None, :], (0, 0), sigmaX=0.12 / (SCAN_MM / x.size))[0]
        les.srf = les.srf + np.where(les.srf > 0, np.clip(smooth - total, 0.0, None), 0.0)
    return les


def _thickness(eye: _Eye, x: np.ndarray, r: np.ndarray, les: _Lesions) -> np.ndarray:
    """``th[k, col]``: thickness (um) of layer k (NFL..BM) along the B-scan: textbook values, the
    foveal pit (inner layers missing, ONL and outer segments longer), nasal NFL, lesions."""
    t = eye.thick
    pit = np.exp(-0.5 * (r / eye.pit_sigma) ** 2)
    rim = 1.0 + 0.25 * np.exp(-(((r - 1.0) / 0.5) ** 2))  # thickest ring around the pit
    inner = (1.0 - eye.pit_depth * pit) * rim
    nasal = 1.0 / (1.0 + np.exp(-eye.nasal_sign * (x - eye.fovea[0]) * 2.0))  # 0 temporal .. 1 nasal
    swell = 1.0 + 0.35 * np.clip(les.cnv / 80.0, 0.0, 1.0)  # thickening over a CNV
    th = np.zeros((N_LAYERS, x.size), np.float32)
    nfl_pit = 1.0 - 0.97 * np.exp(-0.5 * (r / (1.6 * eye.pit_sigma)) ** 2)  # no NFL over the foveola
    th[NFL] = (t["nfl"] + t["nfl_nasal"] * nasal) * nfl_pit
    th[GCL] = t["gcl"] * inner * 1.05
    th[IPL] = t["ipl"] * inner
    th[INL] = t["inl"] * inner * swell
    th[OPL] = t["opl"] * (1.0 - 0.8 * eye.pit_depth * pit)
    # the ONL absorbs most of a druse's height (the inner retina barely follows the RPE)
    th[ONL] = np.maximum(t["onl"] * (1.0 + 0.6 * pit) * swell - eye.drusen_absorb * les.drusen, 15.0)
    th[ELM] = t["elm"]
    th[MYO] = t["myo"] * (1.0 + 0.4 * pit)
    th[EZ] = t["ez"]
    th[OS] = t["os"] * (1.0 + 0.6 * pit)
    th[IZ] = t["iz"]
    th[SRF] = les.srf
    th[SHRM] = les.shrm
    th[RPE] = t["rpe"]
    th[SUBRPE] = les.drusen + les.ped
    th[BM] = t["bm"]
    return th


def _boundaries(
    eye: _Eye, x: np.ndarray, y: float, r: np.ndarray, th: np.ndarray, height: int, rng: np.random.Generator
) -> np.ndarray:
    """``bounds[j, col]``: the top row of layer j + 1 (NFL .. SCLERA), from Bruch's membrane (eye
    curvature, tilt, waviness, axial motion) up through the layer thicknesses and down through the
    choroid."""
    row_um = DEPTH_MM * 1000.0 / height
    bruch_mm = (
        eye.base_mm
        + eye.tilt[0] * x
        + eye.tilt[1] * y
        - eye.curvature * (x**2 + y**2)
        + eye.wave[0] * np.sin(eye.wave[1] * x * 2 * np.pi + eye.wave[2])
    )
    bruch = bruch_mm / DEPTH_MM * height + rng.normal(0.0, eye.motion_px)  # axial motion between frames
    above = np.cumsum(th[:CHOROID][::-1], axis=0)[::-1] / row_um  # rows from layer k's top to Bruch's
    choroid_rows = eye.choroid_um / row_um * (1.0 + 0.25 * np.exp(-0.5 * (r / 1.5) ** 2))
    bounds = np.concatenate([bruch[None, :] - above[1:], bruch[None], (bruch + choroid_rows)[None]], axis=0)
    # keep the retina inside the frame: shift the whole B-scan down if the ILM would leave it
    bounds += max(0.0, 0.04 * height - float(bounds[0].min()))
    return bounds


def _choroid_texture(eye: _Eye, n_rows: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Choroid reflectivity (dB) in flattened coordinates ``[depth below Bruch's, col]``: a bright
    choriocapillaris, vessel lumens growing with depth (Sattler, then Haller), fading into the sclera."""
    depth_w = np.linspace(0.0, 1.0, n_rows, dtype=np.float32)[:, None]
    fine = _smooth_noise(rng, (n_rows, width), (1.2, 2.5))
    coarse = _smooth_noise(rng, (n_rows, width), (3.5, 10.0))
    field_ = (1.0 - depth_w) * fine + depth_w * coarse
    lumen = 1.0 / (1.0 + np.exp(-(field_ - 0.5 + 0.9 * depth_w) * 3.5))  # 1 = vessel lumen
    lumen *= np.clip(depth_w * 8.0, 0.0, 1.0)  # choriocapillaris: no lumens
    return (
        eye.layer_db[CHOROID]
        + 3.0 * (1.0 - depth_w) ** 3
        - 14.0 * lumen
        - (eye.layer_db[CHOROID] - eye.layer_db[SCLERA]) * depth_w**3
    )


def _draw_cysts(
    eye: _Eye, db: np.ndarray, x: np.ndarray, y: float, bounds: np.ndarray, z: np.ndarray, row_um: float
) -> int:
    """Paint the intraretinal cysts this B-scan cuts into ``db`` (fluid: no signal); a cyst's pole
    (cross-section under CYST_MIN_MM x CYST_MIN_UM) is not drawn. Returns how many were drawn."""
    drawn = 0
    for c in eye.cysts:
        if abs(y - c.y0) >= c.ry:
            continue
        f = np.sqrt(1.0 - ((y - c.y0) / c.ry) ** 2)
        rx = c.rx * f
        sel = np.flatnonzero(np.abs(x - c.x0) < rx)
        if rx < CYST_MIN_MM or c.rz_um * f < CYST_MIN_UM or not sel.size:
            continue
        drawn += 1
        top, bot = bounds[c.layer - 1, sel], bounds[c.layer, sel]
        centre = top + c.frac * (bot - top)
        half = c.rz_um / row_um * f * np.sqrt(np.clip(1.0 - ((x[sel] - c.x0) / rx) ** 2, 0, 1))
        cyst = np.abs(z - centre[None, :]) < half[None, :]
        db[:, sel] = np.where(cyst, eye.layer_db[SRF], db[:, sel])
    return drawn


def _attenuate(
    eye: _Eye,
    db: np.ndarray,
    x: np.ndarray,
    y: float,
    bounds: np.ndarray,
    z: np.ndarray,
    les: _Lesions,
    row_um: float,
    rng: np.random.Generator,
) -> None:
    """Subtract (in place, dB) the losses: attenuation with depth in the retina and the choroid,
    shadows under dense lesions and retinal vessels (whose walls are bright), streaks, roll-off,
    vignetting."""
    height = db.shape[0]
    mm_per_row = row_um / 1000.0
    bruch = bounds[CHOROID - 1]
    att = (eye.retina_att * mm_per_row) * np.maximum(z - bounds[0][None, :], 0.0)
    att += (eye.choroid_att * mm_per_row) * np.maximum(z - bruch[None, :], 0.0)
    lesion_shadow = 0.06 * (les.ped + 0.5 * les.shrm)  # dB lost below dense material
    lesion_shadow += 2.0 * np.abs(_smooth_noise(rng, (1, x.size), (0.3, 1.5))[0])  # vertical streaks
    att += np.where(z > bruch[None, :], lesion_shadow[None, :], 0.0)
    vessel_row = bounds[NFL]  # vessels sit at the NFL/GCL junction
    vessel = np.zeros(x.size, np.float32)
    shadow = np.zeros(x.size, np.float32)
    for v in eye.vessels:
        prof = np.exp(-0.5 * ((x - (v.x0 + v.slope * (y - eye.fovea[1]))) / (v.width_um / 2000.0)) ** 2)
        vessel = np.maximum(vessel, prof)
        shadow += v.shadow_db * prof
    hit = np.flatnonzero(vessel > 0.01)
    if hit.size:
        wall = np.exp(-0.5 * ((z - vessel_row[None, hit]) / 2.5) ** 2)
        db[:, hit] += 6.0 * vessel[None, hit] * wall
        att[:, hit] += np.where(z > vessel_row[None, hit] + 3.0, shadow[None, hit], 0.0)
    att += (eye.rolloff_db / height) * z + (eye.vignette_db * (np.abs(x) / (SCAN_MM / 2)) ** 4)[None, :]
    db -= att


def _form_image(eye: _Eye, db: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Reflectivity (dB) to a displayed B-scan in [0, 1]: point-spread blur, speckle, noise floor,
    log compression and the device's display window and gamma."""
    lin = np.power(10.0, db / 10.0, dtype=np.float32)
    lin = cv2.GaussianBlur(lin, (0, 0), sigmaX=eye.psf[1], sigmaY=eye.psf[0])
    # fully developed speckle with a grain: |correlated complex Gaussian|^2 (exponential, mean 1),
    # then partly averaged as devices average frames (std 1/sqrt(looks))
    re = _smooth_noise(rng, db.shape, eye.grain)
    im = _smooth_noise(rng, db.shape, eye.grain)
    speckle = np.maximum(1.0 + (0.5 * (re * re + im * im) - 1.0) / np.sqrt(eye.looks), 0.02)
    noise = rng.exponential(1.0, size=db.shape).astype(np.float32)
    out_db = 10.0 * np.log10(lin * speckle + noise)
    return (np.clip((out_db - eye.lo_db) / (eye.hi_db - eye.lo_db), 0.0, 1.0) ** eye.gamma).astype(np.float32)


def _render_bscan(eye: _Eye, index: int, y: float, height: int, width: int, rng: np.random.Generator) -> SimulatedBScan:
    """Render B-scan ``index`` at slice position ``y`` (mm) of ``eye``."""
    row_um = DEPTH_MM * 1000.0 / height
    x = np.linspace(-SCAN_MM / 2, SCAN_MM / 2, width, dtype=np.float32)
    r = np.sqrt((x - eye.fovea[0]) ** 2 + (y - eye.fovea[1]) ** 2)
    les = _lesions(eye, x, y)
    bounds = _boundaries(eye, x, y, r, _thickness(eye, x, r, les), height, rng)
    z = np.arange(height, dtype=np.float32)[:, None]
    layer = np.zeros((height, width), np.int8)
    for b in bounds:
        layer += z >= b[None, :]

    # reflectivity per layer and column (dB): EZ lost over a CNV, drusen vs fibrovascular content
    col_db = np.repeat(eye.layer_db[:, None], width, axis=1)
    ez_loss = np.clip(les.cnv / 40.0, 0.0, 1.0)
    col_db[EZ] -= ez_loss * (col_db[EZ] - col_db[ONL])
    col_db[IZ] -= ez_loss * (col_db[IZ] - col_db[ONL])
    col_db[SUBRPE] = np.where(les.drusen >= les.ped, eye.drusen_db, eye.layer_db[SUBRPE] - 1.0)
    db = col_db[layer, np.arange(width)[None, :]]
    # textures: heterogeneous PED / SHRM content, slow variation inside the other tissue layers
    hetero = _smooth_noise(rng, (height, width), (1.5, 3.0))
    fibrovascular = (layer == SHRM) | ((layer == SUBRPE) & (les.ped > les.drusen)[None, :])
    db += np.where(
        fibrovascular, 7.0 * hetero, np.where((layer > VIT) & (layer < CHOROID), eye.tissue_texture_db * hetero, 0.0)
    )
    # the choroid, textured in flattened coordinates (depth below Bruch's membrane)
    bruch = bounds[CHOROID - 1]
    n_ch = int(np.ceil((bounds[-1] - bruch).max())) + 2
    tex = _choroid_texture(eye, n_ch, width, rng)
    r0, r1 = max(int(np.floor(bruch.min())), 0), min(int(np.ceil(bounds[-1].max())) + 1, height)
    if r1 > r0:
        below = np.clip(z[r0:r1] - bruch[None, :], 0, n_ch - 1).astype(np.intp)
        in_choroid = layer[r0:r1] == CHOROID
        db[r0:r1][in_choroid] = np.take_along_axis(tex, below, axis=0)[in_choroid]
    cysts = _draw_cysts(eye, db, x, y, bounds, z, row_um)
    _attenuate(eye, db, x, y, bounds, z, les, row_um, rng)
    db += eye.gain_db - eye.low_signal.get(index, 0.0)
    db[layer == VIT] = -60.0
    img = _form_image(eye, db, rng)

    label = "normal"
    if eye.label == "drusen" and les.drusen.max(initial=0.0) >= LESION_MIN_UM:
        label = "drusen"
    elif eye.label == "cnv" and (les.cnv.max(initial=0.0) >= LESION_MIN_UM or cysts):
        label = "cnv"
    return SimulatedBScan(img, layer, label)


# ----------------------------------------------------------------------------------------------
# Volumes, patients, datasets


def _seed_int(*parts: int) -> int:
    """A 63-bit integer seed derived from a tuple of integers (any sign or size; stable across platforms)."""
    words = np.random.SeedSequence([int(p) % (1 << 64) for p in parts]).generate_state(1, np.uint64)
    return int(words[0] >> np.uint64(1))


def _uid(*parts: object) -> str:
    """A deterministic DICOM UID under pydicom's root (at most 64 characters)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()
    return _UID_ROOT + str(int(digest[:28], 16))


def _synthetic_patient(index: int) -> PatientInfo:
    pid = f"P{index:04d}"
    return PatientInfo(patient_id=pid, name=f"SYNTH^{pid}", birth_date="", sex="")


def _synthetic_study(seed: int, patient_id: str) -> StudyInfo:
    rng = np.random.default_rng(_seed_int(seed, 0x57D))
    day = np.datetime64("2024-01-01") + int(rng.integers(0, 3 * 365))
    date = str(day).replace("-", "")
    time = f"{int(rng.integers(8, 18)):02d}{int(rng.integers(0, 60)):02d}{int(rng.integers(0, 60)):02d}"
    return StudyInfo(
        study_uid=_uid("study", seed, patient_id),
        study_date=date,
        study_time=time,
        study_id=f"S{seed % 100000:05d}",
        accession_number=f"SYN{seed % 1000000:06d}",
        description="Synthetic macular cube (OCT Screen simulator)",
    )


def _register(img: np.ndarray, eye: _Eye, rng: np.random.Generator) -> np.ndarray:
    """Device registration: slight rotation and shift with white or black padding."""
    if eye.border == "none":
        return img
    h, w = img.shape
    angle = eye.rot_deg + float(rng.normal(0.0, 0.5))
    m = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), angle, 1.0)
    m[0, 2] += float(rng.normal(0.0, 0.02 * w))
    m[1, 2] += float(rng.normal(0.0, 0.03 * h))
    value = 1.0 if eye.border == "white" else 0.0
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=value)


def _slice_positions(n_bscans: int) -> np.ndarray:
    """Slice positions (mm) of the B-scans, centred on the cube; spacing SCAN_MM / n_bscans."""
    return (np.arange(n_bscans) - (n_bscans - 1) / 2.0) * (SCAN_MM / n_bscans)


def _check_args(label: str, n_bscans: int, height: int, width: int, bit_depth: int = 8) -> None:
    if label not in CLASSES:
        raise ValueError(f"unknown label {label!r}; expected one of {CLASSES}")
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth}")
    if n_bscans < 1 or height < 32 or width < 32:
        raise ValueError(f"volume too small: {n_bscans} x {height} x {width} (at least 1 x 32 x 32)")


def simulate_bscan(
    label: str,
    index: int,
    *,
    n_bscans: int = 25,
    height: int = 496,
    width: int = 512,
    seed: int,
    laterality: str | Laterality = "OD",
) -> SimulatedBScan:
    """B-scan ``index`` of the volume ``simulate_volume`` makes with the same arguments, before
    quantisation and registration, with its per-pixel layer map (for tests and teaching)."""
    _check_args(label, n_bscans, height, width)
    eye = _draw_eye(label, Laterality.parse(laterality), np.random.default_rng(_seed_int(seed, 1)), n_bscans)
    y = float(_slice_positions(n_bscans)[index])
    return _render_bscan(eye, index, y, height, width, np.random.default_rng(_seed_int(seed, 3, index)))


def simulate_volume(
    label: str,
    *,
    n_bscans: int = 25,
    height: int = 496,
    width: int = 512,
    seed: int,
    laterality: str | Laterality = "OD",
    patient: PatientInfo | None = None,
    bit_depth: int = 8,
    study: StudyInfo | None = None,
) -> OctVolume:
    """Simulate one macular OCT volume of an eye with ``label`` ('normal', 'drusen' or 'cnv').

    Deterministic for a given seed. The same seed with another label gives the same anatomy and
    noise with different lesions. ``volume.frame_labels`` marks the B-scans that cut a lesion;
    ``volume.extra`` holds ``synthetic=True``, ``seed``, ``low_signal_frames`` (simulated blinks)
    and ``fovea_mm`` (x, y of the foveal centre, mm from the cube centre).
    Default patient: 'P<seed mod 10000>' named 'SYNTH^P....'; default study: derived from the seed.
    """
    _check_args(label, n_bscans, height, width, bit_depth)
    lat = Laterality.parse(laterality)
    eye = _draw_eye(label, lat, np.random.default_rng(_seed_int(seed, 1)), n_bscans)
    top = 255 if bit_depth == 8 else int(np.random.default_rng(_seed_int(seed, 2)).integers(4095, 65536))
    bscans = np.empty((n_bscans, height, width), np.uint8 if bit_depth == 8 else np.uint16)
    labels = []
    for i, y in enumerate(_slice_positions(n_bscans)):
        rng = np.random.default_rng(_seed_int(seed, 3, i))
        rendered = _render_bscan(eye, i, float(y), height, width, rng)
        bscans[i] = np.round(np.clip(_register(rendered.image, eye, rng), 0.0, 1.0) * top)
        labels.append(rendered.label)
    patient = patient or _synthetic_patient(seed % 10000)
    study = study or _synthetic_study(seed, patient.patient_id)
    study = dataclasses.replace(
        study, series_uid=_uid("series", study.study_uid, lat.value), series_number=1 if lat != Laterality.OS else 2
    )
    return OctVolume(
        bscans=bscans,
        laterality=lat,
        patient=patient,
        study=study,
        device=DEVICE,
        spacing=PixelSpacing(slice=SCAN_MM / n_bscans, row=DEPTH_MM / height, column=SCAN_MM / width),
        label=label,
        frame_labels=tuple(labels),
        extra={
            "synthetic": True,
            "seed": int(seed),
            "low_signal_frames": sorted(eye.low_signal),
            "fovea_mm": eye.fovea,
        },
    )


def patient_labels(patient_index: int, *, seed: int, classes: Sequence[str] = CLASSES) -> tuple[str, str]:
    """Eye labels (OD, OS) of a synthetic patient, drawn from the class mix.

    The patient's class cycles through ``classes`` with the index (balanced datasets); a diseased
    patient's fellow eye is, at random, the same disease, drusen (for CNV) or normal.
    """
    classes = tuple(classes)
    unknown = set(classes) - set(CLASSES)
    if not classes or unknown:
        raise ValueError(f"classes must be a non-empty subset of {CLASSES}, got {classes}")
    rng = np.random.default_rng(_seed_int(seed, 4, patient_index))
    main = classes[patient_index % len(classes)]
    if main == "normal":
        fellow = "normal"
    elif main == "drusen":
        fellow = "drusen" if rng.random() < 0.6 else "normal"
    else:
        fellow = str(rng.choice(["cnv", "drusen", "normal"], p=[0.2, 0.5, 0.3]))
    if fellow not in classes:
        fellow = main
    return (main, fellow) if rng.random() < 0.5 else (fellow, main)


def simulate_patient(
    patient_index: int,
    *,
    seed: int,
    labels: tuple[str, str] | None = None,
    n_bscans: int = 25,
    height: int = 496,
    width: int = 512,
    bit_depth: int = 8,
    classes: Sequence[str] = CLASSES,
    patient: PatientInfo | None = None,
) -> list[OctVolume]:
    """Both eyes of one synthetic patient: ``[OD, OS]``, same patient and study, seed-deterministic.

    ``labels`` = (OD label, OS label); by default drawn with :func:`patient_labels`.
    """
    labels = labels or patient_labels(patient_index, seed=seed, classes=classes)
    patient = patient or _synthetic_patient(patient_index)
    study = _synthetic_study(_seed_int(seed, 5, patient_index), patient.patient_id)
    return [
        simulate_volume(
            lab,
            n_bscans=n_bscans,
            height=height,
            width=width,
            seed=_seed_int(seed, 6, patient_index, k),
            laterality=lat,
            patient=patient,
            bit_depth=bit_depth,
            study=study,
        )
        for k, (lab, lat) in enumerate(zip(labels, ("OD", "OS")))
    ]
