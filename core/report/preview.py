"""A synthetic exam for layout previews (settings dialog, docs) and tests: the only report module
that uses the simulator (``core.synthetic``), and only when called."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from core.results import ExamResult, EyeResult, Urgency, VolumeResult
from core.volume import DeviceInfo, EyeKey, Laterality, OctVolume, PatientInfo, StudyInfo


def _preview_cams(
    volume: OctVolume, lesion_free: OctVolume | None, c: int, n_classes: int, grid: int = 16
) -> np.ndarray:
    """Made-up CAMs ``[n, C, grid, grid]``: for class ``c`` where the volume differs from its
    lesion-free twin (the lesion), or the bright retina for 'normal'; faint noise elsewhere."""
    rng = np.random.default_rng(0)
    n = volume.n_bscans
    cams = rng.random((n, n_classes, grid, grid)).astype(np.float32) * 0.1
    for i in range(n):
        img = volume.bscans[i].astype(np.float32)
        if lesion_free is not None:
            img = np.abs(img - lesion_free.bscans[i].astype(np.float32))
        img = cv2.GaussianBlur(img, (0, 0), 9)
        small = cv2.resize(img, (grid, grid), interpolation=cv2.INTER_AREA) / 255.0
        cams[i, c] = small if lesion_free is not None else small**3  # 'normal': brightest layers only
    return cams


def preview_exam(
    seed: int = 0,
    n: int = 25,
    size: tuple[int, int] = (496, 512),
    findings: tuple[str, str] = ("cnv", "normal"),
    demo: bool = True,
) -> ExamResult:
    """A made-up two-eye exam (OD, OS) with plausible results, to preview the report layout.

    The B-scans come from the simulator (``core.synthetic``); ``findings`` gives the lesion per
    eye ('cnv', 'drusen' or 'normal'). The probabilities and CAMs are invented from the simulator's
    ground truth, not a model's output.
    """
    from core.synthetic import simulate_volume  # noqa: PLC0415 (the simulator loads only for a preview)

    rng = np.random.default_rng(seed)
    classes = ["normal", "drusen", "cnv"]
    patient = PatientInfo("PID-0042-7", "Doe^Jane", "19510317", "F")
    study = StudyInfo(
        study_uid="1.2.826.0.1.3680043.8.498.1001",
        study_date="20261124",
        study_time="093000",
        accession_number="ACC-88121",
        description="Macula cube 25 lines",
    )
    device = DeviceInfo("Heidelberg Engineering", "Spectralis")
    eyes = []
    for k, (lat, finding) in enumerate(zip((Laterality.OD, Laterality.OS), findings)):
        sim: dict[str, Any] = dict(
            n_bscans=n, height=size[0], width=size[1], seed=seed * 2 + k, laterality=lat, patient=patient, study=study
        )
        vol = simulate_volume(finding, **sim)
        vol.device, vol.source = device, Path(f"/data/exports/{lat.value}_cube.dcm")
        assert vol.frame_labels is not None  # the simulator labels every B-scan
        twin = simulate_volume("normal", **sim) if finding != "normal" else None
        c = classes.index(finding)
        lesion_at = np.array([lab == finding for lab in vol.frame_labels]) if twin is not None else np.zeros(n, bool)
        probs = rng.dirichlet([6, 1, 1], size=n).astype(np.float32)
        strong = rng.dirichlet([1, 1, 1], size=n).astype(np.float32)
        strong[:, c] += 6
        probs[lesion_at] = (strong / strong.sum(1, keepdims=True))[lesion_at]
        gradable = np.ones(n, bool)
        ungradable = sorted(
            set(int(i) for i in vol.extra.get("low_signal_frames", [])) | {int(rng.integers(0, max(1, n // 5)))}
        )
        gradable[ungradable] = False
        reasons = ["" if g else "low signal" for g in gradable]
        vr = VolumeResult(
            vol,
            classes,
            probs,
            _preview_cams(vol, twin, c, len(classes)),
            gradable,
            reasons,
            model_name="kdoct-student-demo",
            model_version="0.1.0",
            demo_model=demo,
            backend="onnxruntime (CPU)",
        )
        k_top = max(1, math.ceil(0.1 * gradable.sum()))
        g_idx = np.flatnonzero(gradable)
        scores = {cl: float(np.sort(probs[g_idx, j])[::-1][:k_top].mean()) for j, cl in enumerate(classes)}
        evidence = [int(i) for i in g_idx[np.argsort(-probs[g_idx, c])][:k_top]]
        urgency = {"cnv": Urgency.URGENT, "drusen": Urgency.ROUTINE, "normal": Urgency.NONE}[finding]
        why = {
            "cnv": f"cnv score {scores['cnv']:.2f} \u2265 threshold 0.50",
            "drusen": f"drusen score {scores['drusen']:.2f} \u2265 threshold 0.50",
            "normal": "no disease score reaches its threshold",
        }[finding]
        eyes.append(
            EyeResult(
                EyeKey(patient.patient_id, study.study_uid, lat),
                finding,
                urgency,
                scores,
                scores[finding],
                needs_review=bool(0.4 < scores["drusen"] < 0.6),
                evidence=evidence,
                n_bscans=n,
                n_gradable=int(gradable.sum()),
                ungradable=ungradable,
                reasons=[why],
                volume_result=vr,
            )
        )
    return ExamResult(patient, study, device, eyes)
