"""Synthetic OCT data: the seeded macular OCT simulator and the dataset writer.

``core.synthetic.simulator``: normal, drusen and CNV eyes as B-scan volumes with per-B-scan labels
(:func:`simulate_volume`, :func:`simulate_patient`, :func:`patient_labels`; for tests and teaching,
:func:`simulate_bscan`, one B-scan with its per-pixel layer map, layer indices ``VIT`` .. ``SCLERA``).
``core.synthetic.dataset``: :func:`write_dataset`, a folder of PNG or DICOM OPT files with a
``manifest.csv`` (:data:`MANIFEST_COLUMNS`). Both are importable from here.
"""

from __future__ import annotations

from core.synthetic.dataset import MANIFEST_COLUMNS, write_dataset

# the simulator's constants (layer indices, geometry), importable from here as before
from core.synthetic.simulator import (  # noqa: F401
    BM,
    CHOROID,
    CLASSES,
    CYST_MIN_MM,
    CYST_MIN_UM,
    DEPTH_MM,
    DEVICE,
    ELM,
    EZ,
    GCL,
    INL,
    IPL,
    IZ,
    LESION_FLOOR_UM,
    LESION_MIN_UM,
    MYO,
    N_LAYERS,
    NFL,
    ONL,
    OPL,
    OS,
    RPE,
    SCAN_MM,
    SCLERA,
    SHRM,
    SRF,
    SUBRPE,
    VIT,
    SimulatedBScan,
    patient_labels,
    simulate_bscan,
    simulate_patient,
    simulate_volume,
)

__all__ = [
    "CLASSES",
    "MANIFEST_COLUMNS",
    "LESION_FLOOR_UM",
    "LESION_MIN_UM",
    "DEVICE",
    "SimulatedBScan",
    "simulate_bscan",
    "simulate_volume",
    "simulate_patient",
    "patient_labels",
    "write_dataset",
]
