"""The en-face view: core.enface (mean projection, physical aspect, per-B-scan colours) and the widget
beside the B-scan viewer (click selects the B-scan, the line follows the viewer, edge colours)."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PySide6.QtCore import QPoint, Qt  # noqa: E402

from app.widgets.bscan_viewer import ViewerPanel  # noqa: E402
from app.widgets.enface import LINE_COLOUR, EnFaceView  # noqa: E402
from app.widgets.state import ViewerState  # noqa: E402
from core.aggregate import decide  # noqa: E402
from core.enface import bscan_colours, enface, mean_projection, stretch_uint8  # noqa: E402
from core.modelcard import ModelCard  # noqa: E402
from core.screening import group_exams  # noqa: E402
from core.tiers import DEFAULT_TIERS, class_colour  # noqa: E402
from core.volume import PixelSpacing  # noqa: E402
from tests.test_gui_state import CLASSES, fake_result  # noqa: E402


def test_projection_is_the_mean_over_depth(make_volume):
    vol = make_volume(n=9, h=64, w=80, dtype=np.uint16)
    ref = vol.bscans.astype(np.float64).mean(axis=1)
    np.testing.assert_allclose(mean_projection(vol.bscans), ref, rtol=1e-6)
    ef = enface(vol)  # no spacing: one row per B-scan, the mean stretched to uint8
    assert not ef.physical and ef.size_mm is None
    assert ef.image.shape == (9, 80) and ef.image.dtype == np.uint8
    np.testing.assert_array_equal(ef.image, stretch_uint8(ref))
    assert np.corrcoef(ef.image.ravel().astype(float), ref.ravel())[0, 1] > 0.98


def test_stretch_maps_percentiles_to_black_and_white():
    v = np.linspace(10.0, 20.0, 1001, dtype=np.float32).reshape(7, 143)
    out = stretch_uint8(v)
    assert out.min() == 0 and out.max() == 255
    assert np.all(np.diff(out.ravel().astype(int)) >= 0)  # order kept
    assert np.all(stretch_uint8(np.full((3, 4), 7.0)) == 128)


@pytest.mark.parametrize(
    ("n", "w", "step", "col", "shape"),
    [
        (25, 512, 0.24, 0.01171875, (512, 512)),  # 6 x 6 mm cube: square
        (128, 512, 0.047, 0.01172, (513, 512)),  # Cirrus 6 x 6 mm, 128 B-scans
        (49, 100, 0.12, 0.06, (98, 100)),  # 5.9 x 6 mm: rows stretched x2
        (20, 40, 0.05, 0.15, (20, 120)),  # B-scans closer than A-scans: widened, none dropped
    ],
)
def test_enface_has_the_physical_aspect(make_volume, n, w, step, col, shape):
    vol = make_volume(n=n, h=16, w=w, spacing=PixelSpacing(slice=step, row=0.004, column=col))
    ef = enface(vol)
    assert ef.physical and ef.image.shape == shape
    h_mm, w_mm = ef.size_mm
    assert h_mm == pytest.approx(n * step) and w_mm == pytest.approx(w * col)
    assert ef.image.shape[0] / ef.image.shape[1] == pytest.approx(h_mm / w_mm, rel=0.02)
    # each B-scan's band is its own projection (middle row of band i ~ row i of the unscaled image)
    raw = stretch_uint8(mean_projection(vol.bscans))
    i = n // 2
    row = ef.image[int(ef.row_of(i))]
    resized = np.interp(np.linspace(0, w - 1, row.size), np.arange(w), raw[i].astype(float))
    assert np.corrcoef(row.astype(float), resized)[0, 1] > 0.9
    assert ef.bscan_at(ef.row_of(i)) == i and ef.bscan_at(-5) == 0 and ef.bscan_at(1e9) == n - 1


def test_bscan_colours_follow_each_bscans_decision(make_volume):
    vr = fake_result(make_volume(n=12), cnv_slices=(4, 5, 6), ungradable=(0,))
    colours = bscan_colours(vr)
    grey, normal, cnv = DEFAULT_TIERS["rescan"].colour, class_colour("normal", 0), class_colour("cnv", 2)
    assert colours == [grey] + [normal] * 3 + [cnv] * 3 + [normal] * 5
    assert len({grey, normal, cnv}) == 3


# -- the widget ------------------------------------------------------------------------------


@pytest.fixture
def state(make_volume) -> ViewerState:
    vol = make_volume(n=12, spacing=PixelSpacing(slice=0.5, row=0.004, column=6.0 / 160))
    eye = decide(fake_result(vol, cnv_slices=(4, 5, 6), ungradable=(0,)))
    s = ViewerState()
    card = ModelCard(name="fake", arch="test_efficientnet", classes=list(CLASSES), input_size=(64, 64), demo=True)
    s.add_exams(group_exams([eye]), card)
    return s


def _pixel(widget, x: float, y: float) -> str:
    return widget.grab().toImage().pixelColor(round(x), round(y)).name()


def _line_at(widget, x: float, y: float) -> bool:
    """The current-B-scan line crosses (x, y) (within a pixel of it)."""
    img = widget.grab().toImage()
    return any(img.pixelColor(round(x), round(y) + d).name() == LINE_COLOUR for d in (-1, 0, 1))


@pytest.fixture
def views(qtbot, state):
    viewer, ef = ViewerPanel(state), EnFaceView(state)
    for w in (viewer, ef):
        qtbot.addWidget(w)
    ef.resize(300, 360)
    viewer.resize(500, 400)
    return viewer, ef


def test_widget_shows_the_projection_at_its_aspect(views, state):
    _viewer, ef = views
    assert ef.enface is not None and ef.enface.physical
    r = ef.image_rect()
    assert r.height() / r.width() == pytest.approx(6.0 / 6.0, rel=0.02)  # 12 x 0.5 mm by 160 x 0.0375 mm


def test_click_selects_that_bscan_in_the_viewer(qtbot, views, state):
    viewer, ef = views
    assert state.slice_index == state.current_eye.evidence[0]
    for target in (9, 0, 11, 2, 5):
        qtbot.mouseClick(
            ef, Qt.MouseButton.LeftButton, pos=QPoint(round(ef.image_rect().center().x()), round(ef.y_of(target)))
        )
        assert state.slice_index == target
        assert viewer.position.text().startswith(f"B-scan {target + 1} of 12")
        assert viewer.slider.value() == target + 1


def test_the_line_follows_the_viewer(qtbot, views, state):
    viewer, ef = views
    x = ef.image_rect().center().x()
    start = state.slice_index
    assert _line_at(ef, x, ef.y_of(start))
    assert not _line_at(ef, x, ef.y_of(start + 3))
    viewer.view.setFocus()
    for _ in range(3):
        qtbot.keyClick(viewer.view, Qt.Key.Key_Down)  # the viewer's own keys
    assert state.slice_index == start + 3
    assert _line_at(ef, x, ef.y_of(start + 3))
    assert not _line_at(ef, x, ef.y_of(start))
    viewer.slider.setValue(2)  # the viewer's slider: B-scan 2
    assert _line_at(ef, x, ef.y_of(1)) and not _line_at(ef, x, ef.y_of(start + 3))


def test_edge_colours_follow_the_per_bscan_decisions(views, state):
    _viewer, ef = views
    want = bscan_colours(state.volume_result)
    got = [_pixel(ef, ef.edge_x(), ef.y_of(i)) for i in range(12)]
    assert got == want
    assert got[0] == DEFAULT_TIERS["rescan"].colour and got[5] == class_colour("cnv", 2)


def test_empty_state_and_a_single_bscan_paint_a_note(qtbot, make_volume):
    s = ViewerState()
    ef = EnFaceView(s)
    qtbot.addWidget(ef)
    ef.resize(200, 200)
    ef.grab()  # paints without a volume
    assert ef.enface is None
    card = ModelCard(name="fake", arch="test_efficientnet", classes=list(CLASSES), input_size=(64, 64), demo=True)
    s.add_exams(group_exams([decide(fake_result(make_volume(n=1), cnv_slices=(), ungradable=()))]), card)
    assert s.n_slices == 1 and ef.enface is None  # one row would be a barcode, not a picture
    qtbot.mouseClick(ef, Qt.MouseButton.LeftButton, pos=QPoint(100, 100))
    assert s.slice_index == 0


# -- the device's own fundus / SLO image -------------------------------------------------------


def test_heidelberg_vol_keeps_its_localizer_with_the_bscan_positions(tmp_path):
    pytest.importorskip("eyepy")
    from core.deid import Deidentifier
    from core.enface import device_fundus
    from core.io.reader import open_path
    from tests.test_io_vendor import _real_cube, _vol_bytes

    path = tmp_path / "scan.vol"
    path.write_bytes(_vol_bytes(_real_cube(3, 64, 40)))  # a 32 x 32 localizer at 0.02 mm per pixel
    (vol,) = open_path(path)
    fundus = device_fundus(vol)
    assert fundus is not None and fundus.image.shape == (32, 32) and fundus.image.dtype == np.uint8
    # each B-scan from (0, 0.12 i) mm to (6, 0.12 i) mm: in localizer pixels / 0.02
    np.testing.assert_allclose(fundus.lines, [(0.0, 6.0 * i, 300.0, 6.0 * i) for i in range(3)], atol=1e-9)
    assert fundus.modality == "NIR"
    assert device_fundus(Deidentifier().volume(vol)) is None  # a picture of the retina is not kept


def test_the_projection_has_no_device_image(make_volume):
    from core.enface import device_fundus

    assert device_fundus(make_volume(n=4)) is None


@pytest.fixture
def fundus_state(make_volume) -> ViewerState:
    from core.enface import FUNDUS, Fundus

    vol = make_volume(n=6, spacing=PixelSpacing(slice=0.5, row=0.004, column=3.0 / 160))
    image = np.full((120, 160), 200, np.uint8)
    # six B-scans over the middle of the picture, slightly slanted (a rotated raster)
    lines = tuple((20.0, 30.0 + 12 * i, 140.0, 34.0 + 12 * i) for i in range(6))
    vol.extra[FUNDUS] = Fundus(image, lines, "NIR")
    eye = decide(fake_result(vol, cnv_slices=(2, 3), ungradable=()))
    s = ViewerState()
    card = ModelCard(name="fake", arch="test_efficientnet", classes=list(CLASSES), input_size=(64, 64), demo=True)
    s.add_exams(group_exams([eye]), card)
    return s


def test_device_image_toggle_shows_it_with_the_bscan_line(qtbot, fundus_state, state):
    from app.widgets.enface import EnFacePanel

    panel = EnFacePanel(fundus_state)
    qtbot.addWidget(panel)
    panel.resize(320, 320)
    ef = panel.view
    assert panel.device.isEnabled() and not ef.showing_device
    r = ef.image_rect()
    assert r.height() / r.width() == pytest.approx(1.0, rel=0.02)  # the projection: 6 x 3 mm by 160 x 3/160 mm
    panel.device.setChecked(True)
    assert ef.showing_device
    r = ef.image_rect()
    assert r.height() / r.width() == pytest.approx(120 / 160, rel=0.02)  # the device picture's aspect
    assert _pixel(ef, r.left() + 0.1 * r.width(), r.top() + 0.1 * r.height()) == "#c8c8c8"  # its grey 200
    # the line is where the file says B-scan i lies; a click on another line selects that B-scan
    a, b = ef.line_of(fundus_state.slice_index)
    mid = QPoint(round((a.x() + b.x()) / 2), round((a.y() + b.y()) / 2))
    assert _line_at(ef, mid.x(), mid.y())
    for target in (0, 5, 3):
        a, b = ef.line_of(target)
        qtbot.mouseClick(
            ef,
            Qt.MouseButton.LeftButton,
            pos=QPoint(round(0.75 * a.x() + 0.25 * b.x()), round(0.75 * a.y() + 0.25 * b.y())),
        )
        assert fundus_state.slice_index == target
        assert _line_at(ef, (a.x() + b.x()) / 2, (a.y() + b.y()) / 2)
    panel.device.setChecked(False)
    assert not ef.showing_device
    # a volume without a device picture: the toggle is off and says why
    other = EnFacePanel(state)
    qtbot.addWidget(other)
    assert not other.device.isEnabled() and "no fundus" in other.device.toolTip()
    assert other.device.text() == "Device image: none in this file" and panel.device.text() == "Device image (NIR)"
    empty = EnFacePanel(ViewerState())
    qtbot.addWidget(empty)
    assert empty.device.text() == "Device image" and not empty.device.isEnabled()
