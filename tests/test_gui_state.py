"""The GUI's Qt-free state object (app.widgets.state): selection, navigation, display, rendering."""

from __future__ import annotations

import numpy as np
import pytest

from app.widgets.state import Event, ViewerState, thumbnail, window_level
from core.aggregate import decide
from core.modelcard import ModelCard
from core.results import VolumeResult
from core.screening import group_exams
from core.volume import PixelSpacing

CLASSES = ["normal", "drusen", "cnv"]


def fake_result(volume, cnv_slices=(4, 5, 6), ungradable=(0,), fh=4, fw=5) -> VolumeResult:
    """A VolumeResult built with numpy: CNV on ``cnv_slices``, normal elsewhere; CAMs hot on the right."""
    n = volume.n_bscans
    probs = np.tile(np.array([0.9, 0.06, 0.04], np.float32), (n, 1))
    for i in cnv_slices:
        probs[i] = [0.05, 0.05, 0.9]
    cams = np.zeros((n, 3, fh, fw), np.float32)
    cams[:, :, :, -2:] = 1.0  # every class 'looks' at the right edge
    cams[:, 0, 0, 0] = 0.5  # normal also at the top left
    gradable = np.ones(n, bool)
    reasons = [""] * n
    for i in ungradable:
        gradable[i], reasons[i] = False, "low signal"
    return VolumeResult(
        volume=volume,
        classes=list(CLASSES),
        probs=probs,
        cams=cams,
        gradable=gradable,
        quality_reasons=reasons,
        model_name="fake",
        model_version="1",
        demo_model=True,
    )


@pytest.fixture
def card() -> ModelCard:
    return ModelCard(name="fake", arch="test_efficientnet", classes=list(CLASSES), input_size=(64, 64), demo=True)


@pytest.fixture
def state(make_volume, card) -> ViewerState:
    od = make_volume(n=12, laterality="OD", spacing=PixelSpacing(slice=0.25, row=0.004, column=0.012))
    os_ = make_volume(n=12, laterality="OS", seed=1)
    eyes = [decide(fake_result(od)), decide(fake_result(os_, cnv_slices=()))]
    s = ViewerState()
    s.add_exams(group_exams(eyes), card)
    return s


def test_event_calls_connected_callbacks_in_order_and_disconnects():
    ev, calls = Event(), []
    a, b = (lambda x: calls.append(("a", x))), (lambda x: calls.append(("b", x)))
    ev.connect(a)
    ev.connect(b)
    ev.connect(a)  # no duplicate
    ev.emit(1)
    ev.disconnect(a)
    ev.emit(2)
    assert calls == [("a", 1), ("b", 1), ("b", 2)]


def test_adding_exams_selects_first_eye_at_strongest_evidence(state):
    eye = state.current_eye
    assert (state.exam_index, state.eye_index) == (0, 0)
    assert eye.eye.laterality.value == "OD" and eye.label == "cnv"
    assert state.slice_index == eye.evidence[0]
    assert state.slice_index in (4, 5, 6)


def test_select_normal_eye_and_events(state):
    seen = []
    state.eye_changed.connect(lambda: seen.append("eye"))
    state.slice_changed.connect(lambda i: seen.append(i))
    state.select(0, 1)
    assert state.current_eye.eye.laterality.value == "OS"
    assert state.current_eye.label == "normal"
    assert seen[0] == "eye" and seen[1] == state.slice_index
    state.select(0, 1)  # no change: no events
    assert len(seen) == 2


def test_slice_navigation_is_clamped(state):
    state.set_slice(100)
    assert state.slice_index == 11
    state.step(-3)
    assert state.slice_index == 8
    state.set_slice(-5)
    assert state.slice_index == 0
    assert state.slice_text().startswith("B-scan 1 of 12")
    assert "ungradable (low signal)" in state.slice_text()
    state.set_slice(4)
    assert state.slice_text() == "B-scan 5 of 12 \u00b7 1.00 mm"


def test_render_shows_the_current_bscan_in_grey(state):
    rgb = state.render()
    grey = state.volume.bscans[state.slice_index]
    assert rgb.shape == grey.shape + (3,) and rgb.dtype == np.uint8
    assert np.array_equal(rgb[..., 0], grey) and np.array_equal(rgb[..., 2], grey)
    state.step(1)
    assert not np.array_equal(state.render(), rgb)


def test_overlay_changes_only_where_the_cam_is_hot(state):
    plain = state.render()
    state.toggle_overlay()
    hot = state.render()
    w = plain.shape[1]
    diff = np.abs(hot.astype(int) - plain.astype(int)).sum(axis=2)
    assert diff[:, int(0.95 * w) :].mean() > 20  # the hot right edge is coloured
    assert diff[:, : int(0.3 * w)].mean() < diff[:, int(0.95 * w) :].mean() / 5
    state.set_opacity(0.0)
    assert np.array_equal(state.render(), plain)  # opacity 0: the B-scan untouched


def test_cam_class_defaults_to_predicted_and_can_be_chosen(state):
    state.set_slice(5)
    assert state.shown_class() == "cnv"
    state.set_slice(9)
    assert state.shown_class() == "normal"
    state.set_overlay(True)
    auto = state.render()
    state.set_cam_class("cnv")
    assert state.shown_class() == "cnv"
    assert not np.array_equal(state.render(), auto)  # normal CAM has the extra top-left blob


def test_window_level():
    img = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert np.array_equal(window_level(img), img)
    narrow = window_level(img, window=0.5, level=0.5)
    assert narrow[0, 0] == 0 and narrow[-1, -1] == 255
    assert narrow.flat[63] == 0 and narrow.flat[192] == 255 and 120 < narrow.flat[128] < 136
    dark = window_level(img, window=1.0, level=0.8)
    assert dark.flat[128] < 100
    sixteen = (np.arange(256, dtype=np.uint16) * 16).reshape(16, 16)
    assert window_level(sixteen).dtype == np.uint8


def test_window_level_in_state_is_clamped_and_rendered(state):
    plain = state.render()
    state.set_window_level(0.3, 0.2)
    brighter = state.render()
    assert brighter.astype(int).mean() > plain.astype(int).mean()
    state.set_window_level(0.0, 2.0)
    assert (state.window, state.level) == (0.02, 1.0)
    state.reset_display()
    assert np.array_equal(state.render(), plain)


def test_thumbnail_is_small_rgb(state):
    vr = state.volume_result
    t = thumbnail(vr, 5, "cnv", width=80)
    assert t.shape == (64, 80, 3) and t.dtype == np.uint8


def test_remove_and_clear(state):
    state.remove_exam(0)
    assert state.current_eye is None and state.render() is None and state.n_slices == 0
    assert state.slice_text() == "No B-scan"


def test_add_eye_joins_its_exam_and_keeps_the_selection(make_volume, card):
    s = ViewerState()
    os_eye = decide(fake_result(make_volume(n=12, laterality="OS", seed=1)))
    s.add_eye(os_eye, card, "id-os")
    assert s.current_eye is os_eye  # nothing was selected: the first eye is
    s.set_slice(7)
    changed: list[str] = []
    s.eye_changed.connect(lambda: changed.append("eye"))
    od_eye = decide(fake_result(make_volume(n=12, laterality="OD")))
    s.add_eye(od_eye, card, "id-od")  # same patient and study: the same exam, sorted OD, OS
    assert len(s.exams) == 1 and s.current_exam.eyes == [od_eye, os_eye]
    assert s.current_eye is os_eye and (s.eye_index, s.slice_index) == (1, 7) and changed == []
    assert s.find_identity("id-od") is od_eye and s.find_identity("nope") is None
    other = ModelCard(name="other", arch="x", classes=list(CLASSES), input_size=(64, 64))
    s.add_eye(decide(fake_result(make_volume(n=12, laterality="OD"))), other)  # another model: another exam
    assert len(s.exams) == 2 and s.current_eye is os_eye
    s.remove_exam(0)
    assert s.find_identity("id-od") is None and len(s.exams) == 1


def test_heatmap_strength_follows_the_class_probability(state):
    from core.cam import overlay

    vr = state.volume_result
    state.set_slice(9)  # a normal B-scan; every class's CAM is hot on the right edge
    state.set_cam_class("cnv")
    state.set_overlay(True)
    plain = np.repeat(state.volume.bscans[9][..., None], 3, axis=2)
    vr.probs[9] = [1.0, 0.0, 0.0]  # p(cnv) = 0: its (max-normalised) CAM must not be painted
    assert state.heatmap_rgba()[..., 3].max() == 0
    assert np.array_equal(state.render(), plain)
    assert state.heatmap_text() == "cnv evidence \u00b7 p 0.00: not painted"
    strength = {}
    for p in (0.5, 1.0):
        vr.probs[9] = [1.0 - p, 0.0, p]
        strength[p] = np.abs(state.render().astype(int) - plain.astype(int)).sum()
        cam = vr.cam(9, "cnv", size=plain.shape[:2])  # the viewer and the report draw with one function
        assert np.array_equal(state.render(), overlay(plain[..., 0], cam, alpha=state.opacity, probability=p))
    assert strength[1.0] > 0 and 0.4 < strength[0.5] / strength[1.0] < 0.6
    assert state.heatmap_text() == "cnv evidence \u00b7 p 1.00: 100% strength"
    vr.probs[9] = [1.0, 0.0, 0.0]
    small = thumbnail(vr, 9, "cnv", width=64)  # evidence thumbnails too
    assert (small == small[..., :1]).all()  # grey: nothing painted
    vr.cams = None  # a backend without activation maps: nothing painted, no legend
    assert state.heatmap_text() == "" and np.array_equal(state.render(), plain)


def test_side_by_side_shows_the_bscan_without_and_with_the_heatmap(state):
    from app.widgets.state import SIDE_GAP

    state.set_slice(5)
    state.set_side_by_side(True)
    assert state.overlay_on  # side by side needs the heatmap
    rgb = state.render()
    h, w = state.volume.bscans.shape[1:]
    assert rgb.shape == (h, 2 * w + SIDE_GAP, 3)
    assert np.array_equal(rgb[:, :w, 0], state.volume.bscans[5]) and (rgb[:, :w] == rgb[:, :w, :1]).all()
    state.side_by_side = False
    assert np.array_equal(rgb[:, w + SIDE_GAP :], state.render())  # the right half is the overlay
    state.side_by_side = True
    state.set_overlay(False)  # no heatmap: no side by side
    assert not state.side_by_side and state.render().shape == (h, w, 3)
