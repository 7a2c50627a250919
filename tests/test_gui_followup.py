"""Follow-up (issue 14 item 8): two visits of one patient's eye side by side with the B-scan position
synchronised, and each visit's eye scores as a trend (core.followup + app.widgets.followup)."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from app.widgets.followup import FollowUpWindow  # noqa: E402
from core.aggregate import decide  # noqa: E402
from core.followup import synced_index, visits_of  # noqa: E402
from core.io import write_opt  # noqa: E402
from core.results import VolumeResult  # noqa: E402
from core.screening import group_exams  # noqa: E402
from core.volume import Laterality, OctVolume, PatientInfo, StudyInfo  # noqa: E402
from tests.conftest import synthetic_bscans  # noqa: E402
from tests.gui_helpers import open_and_wait  # noqa: E402


def visit_volume(date: str, n: int, laterality: str = "OD", patient_id: str = "P042", seed: int = 0) -> OctVolume:
    return OctVolume(
        bscans=synthetic_bscans(n, 96, 128, seed),
        laterality=Laterality.parse(laterality),
        patient=PatientInfo(patient_id=patient_id, name="Follow^Up"),
        study=StudyInfo(study_uid=f"1.2.826.0.1.3680043.8.498.{date}", study_date=date, study_time="101500"),
    )


@pytest.fixture(scope="module")
def visits_dir(tmp_path_factory):
    """Patient P042: OD on three dates (10, 16 and 10 B-scans, written out of order), OS once, and
    another patient's OD on one of the dates."""
    folder = tmp_path_factory.mktemp("visits")
    write_opt(visit_volume("20260301", 10, seed=3), folder / "c_od_2026.dcm")
    write_opt(visit_volume("20240115", 10, seed=1), folder / "a_od_2024.dcm")
    write_opt(visit_volume("20250610", 16, seed=2), folder / "b_od_2025.dcm")
    write_opt(visit_volume("20250610", 10, laterality="OS", seed=4), folder / "b_os_2025.dcm")
    write_opt(visit_volume("20250610", 10, patient_id="P999", seed=5), folder / "other.dcm")
    return folder


def test_synced_index_maps_the_same_relative_position():
    assert [synced_index(i, 10, 16) for i in (0, 9)] == [0, 15]  # first to first, last to last
    assert synced_index(3, 10, 16) == round(3 * 15 / 9)
    assert synced_index(8, 16, 10) == round(8 * 9 / 15)
    assert synced_index(5, 10, 10) == 5
    assert synced_index(0, 1, 25) == 12 and synced_index(7, 25, 1) == 0  # a single B-scan: the centre
    assert synced_index(99, 10, 16) == 15  # out of range: clamped


def open_visits(qtbot, window, folder):
    open_and_wait(qtbot, window, sorted(folder.iterdir()))
    od = [e for le in window.state.exams for e in le.exam.eyes if e.eye.patient_id == "P042"]
    od = [e for e in od if e.eye.laterality is Laterality.OD]
    latest = max(od, key=lambda e: e.volume_result.volume.study.study_date)
    window.state.select_eye(latest)
    return latest


def test_visits_are_the_same_patient_and_eye_oldest_first(qtbot, window, visits_dir):
    latest = open_visits(qtbot, window, visits_dir)
    visits = visits_of(((le.exam, le.card) for le in window.state.exams), latest)
    assert [v.label for v in visits] == ["2024-01-15", "2025-06-10", "2026-03-01"]
    assert all(v.eye.eye.laterality is Laterality.OD and v.eye.eye.patient_id == "P042" for v in visits)
    assert visits[-1].eye is latest
    assert window.act_compare.isEnabled()
    os_eye = next(e for le in window.state.exams for e in le.exam.eyes if e.eye.laterality is Laterality.OS)
    window.state.select_eye(os_eye)  # one visit of OS: nothing to compare
    assert not window.act_compare.isEnabled()
    assert window.compare_visits() is None and "two visits" in window.dialogs.infos[-1][1]


def test_an_unnamed_eye_has_no_follow_up(make_volume):
    eyes = []
    for uid in ("1.2.3.1", "1.2.3.2"):
        vol = make_volume(n=4, laterality="unknown", study_uid=uid)
        vr = VolumeResult(vol, ["normal", "cnv"], np.full((4, 2), 0.5, np.float32), None, np.ones(4, bool), [""] * 4)
        eyes.append(decide(vr))
    exams = group_exams(eyes)
    assert len(exams) == 2
    assert visits_of(((x, None) for x in exams), eyes[0]) == []  # two unknown eyes are not assumed one eye


def test_compare_visits_syncs_the_bscan_position_and_plots_the_trend(qtbot, window, visits_dir):
    latest = open_visits(qtbot, window, visits_dir)
    fw = window.compare_visits()
    assert isinstance(fw, FollowUpWindow) and fw.isVisible()
    qtbot.addWidget(fw)
    # the current eye on the right, the visit before it on the left
    assert fw.right.state.current_eye is latest
    assert fw.left.visit.label == "2025-06-10" and fw.left.state.n_slices == 16
    assert "P042" in fw.banner.text() and "(OD)" in fw.banner.text()
    assert "NOT FOR CLINICAL USE" in fw.notice.text().upper()

    fw.right.state.set_slice(6)  # 10 B-scans on the right, 16 on the left
    assert fw.left.state.slice_index == synced_index(6, 10, 16) == 10
    fw.left.state.set_slice(15)
    assert fw.right.state.slice_index == 9
    fw.left.viewer.slider.setValue(1)  # through the viewer's own slider, as a user drags it
    assert fw.right.state.slice_index == 0

    fw.sync.setChecked(False)
    fw.right.state.set_slice(4)
    assert fw.left.state.slice_index == 0  # not synchronised any more
    fw.sync.setChecked(True)  # back on: the left follows the right at once
    assert fw.left.state.slice_index == synced_index(4, 10, 16)

    # the trend: one point per visit with that visit's eye scores, the compared visits highlighted
    points = fw.trend.points
    assert [p.label for p in points] == ["2024-01-15", "2025-06-10", "2026-03-01"]
    assert points[-1].scores == pytest.approx(latest.scores)
    assert points[-1].tier == latest.urgency.value
    assert fw.trend.highlight == (1, 2)
    fw.left.choice.setCurrentIndex(0)  # compare with the first visit instead
    assert fw.left.visit.label == "2024-01-15" and fw.left.state.n_slices == 10
    assert fw.trend.highlight == (0, 2)
    assert fw.left.state.slice_index == fw.right.state.slice_index  # same size: same index
    fw.resize(1200, 700)
    pic = fw.grab()
    assert pic.width() >= 1000
    assert fw.left.viewer.view.last_rgb is not None and fw.right.viewer.view.last_rgb is not None
