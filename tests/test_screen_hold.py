"""`octscreen screen` holds a bounded amount of pixels between reading and screening
(core.screening.PixelHold, the max_held_bytes limit): past it, volumes read from a file give their
pixels back and are read again when their exam is screened, with the same results."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from app.cli import main
from core import limits
from core.errors import InputError
from core.io import open_path, write_opt
from core.screening import PixelHold, volume_identity


@pytest.fixture
def three_files(tmp_path, make_volume) -> list[Path]:
    d = tmp_path / "in"
    return [
        write_opt(make_volume(n=5, h=96, w=128, seed=s, laterality=eye, patient_id=pid, study_uid=uid), d / name)
        for s, eye, pid, uid, name in (
            (1, "OD", "P001", "1.2.3.1", "a.dcm"),
            (2, "OS", "P001", "1.2.3.1", "b.dcm"),
            (3, "OD", "P002", "1.2.3.2", "c.dcm"),
        )
    ]


def test_past_the_budget_a_volume_gives_its_pixels_back_and_gets_them_again(three_files):
    (a,), (b,) = open_path(three_files[0]), open_path(three_files[1])
    original = b.bscans.copy()
    hold = PixelHold(budget=a.bscans.nbytes)  # room for the first volume only
    hold.keep(a, volume_identity(a))
    hold.keep(b, volume_identity(b))
    assert hold.released == 1 and a.bscans.strides != (0, 0, 0) and a.bscans.any()  # a is kept
    assert b.bscans.shape == original.shape and b.bscans.dtype == original.dtype  # counts and grouping still work
    assert b.bscans.strides == (0, 0, 0) and not b.bscans.any()  # no pixels held
    hold.restore(b)
    np.testing.assert_array_equal(b.bscans, original)
    hold.release(b)
    assert b.bscans.strides == (0, 0, 0)
    hold.release(a)  # a kept volume is never dropped
    assert a.bscans.any()


def test_pixels_holds_them_for_the_block_only_however_it_ends(three_files, make_volume):
    (a,), (b,) = open_path(three_files[0]), open_path(three_files[1])
    original = a.bscans.copy()
    hold = PixelHold(budget=1)
    for v in (a, b):
        hold.keep(v, volume_identity(v))
    with hold.pixels([a, b]):
        np.testing.assert_array_equal(a.bscans, original)  # read again for the block
        assert b.bscans.any()
    assert a.bscans.strides == (0, 0, 0) and b.bscans.strides == (0, 0, 0)  # and given back after it
    with pytest.raises(RuntimeError), hold.pixels([a]):
        assert a.bscans.any()
        raise RuntimeError("the exam failed")
    assert a.bscans.strides == (0, 0, 0)  # given back when the block fails too
    # a file that changed: the block never runs, and what was restored before it goes again
    write_opt(make_volume(n=5, h=96, w=128, seed=9, laterality="OS", patient_id="P001"), three_files[1], overwrite=True)
    ran = []
    with pytest.raises(InputError, match="changed while screening"), hold.pixels([a, b]):
        ran.append(True)
    assert not ran and a.bscans.strides == (0, 0, 0)


def test_a_volume_from_a_folder_is_always_kept(tmp_path, make_volume):
    from PIL import Image

    folder = tmp_path / "stack"
    folder.mkdir()
    for i, frame in enumerate(make_volume(n=4, h=64, w=80, seed=4).bscans):
        Image.fromarray(frame).save(folder / f"bscan_{i:02d}.png")
    (vol,) = open_path(folder)
    assert vol.source is not None and not vol.source.is_file()
    hold = PixelHold(budget=1)
    hold.keep(vol, volume_identity(vol))
    assert hold.released == 0 and vol.bscans.any()


def test_a_file_that_changed_before_it_is_read_again_is_named(three_files, make_volume):
    (b,) = open_path(three_files[1])
    hold = PixelHold(budget=1)
    hold.keep(b, volume_identity(b))
    write_opt(make_volume(n=5, h=96, w=128, seed=9, laterality="OS", patient_id="P001"), three_files[1], overwrite=True)
    with pytest.raises(InputError, match="changed while screening") as err:
        hold.restore(b)
    assert err.value.path == three_files[1]


def _eyes(out: Path) -> list[tuple]:
    data = json.loads((out / "results.json").read_text())
    return [(e["patient_id"], e["eye"], e["tier"], e["label"], e["scores"], e["evidence_bscans"]) for e in data["eyes"]]


def test_cli_results_do_not_depend_on_the_hold(tiny_card_path, three_files, tmp_path, caplog):
    args = [*map(str, three_files), "--model", str(tiny_card_path)]
    assert main(["screen", *args, "--out", str(tmp_path / "held")]) == 0
    with limits.override(max_held_bytes=1), caplog.at_level("INFO"):
        assert main(["screen", *args, "--out", str(tmp_path / "streamed"), "--deidentify"]) == 0
        assert "3 volume(s) past the 0 MB hold are read again" in caplog.text
        caplog.clear()
        folder = [str(three_files[0].parent), "--model", str(tiny_card_path)]  # one folder: released as read
        assert main(["screen", *folder, "--out", str(tmp_path / "streamed-id")]) == 0
        assert "3 volume(s) past the 0 MB hold are read again" in caplog.text
    assert _eyes(tmp_path / "streamed-id") == _eyes(tmp_path / "held")
    deid = _eyes(tmp_path / "streamed")
    assert [e[1:] for e in deid] == [e[1:] for e in _eyes(tmp_path / "held")]  # same eyes, decisions, scores
    assert len(list((tmp_path / "streamed").glob("*.pdf"))) == 2


def test_cli_one_changed_file_fails_its_exam_only(
    tiny_card_path, three_files, tmp_path, make_volume, monkeypatch, capsys
):
    keep = PixelHold.keep

    def keep_then_change(self, volume, identity):  # the file changes after it was read
        keep(self, volume, identity)
        if volume.source == three_files[2]:
            write_opt(make_volume(n=5, h=96, w=128, seed=8, patient_id="P002"), three_files[2], overwrite=True)

    monkeypatch.setattr(PixelHold, "keep", keep_then_change)
    out = tmp_path / "out"
    with limits.override(max_held_bytes=1):
        rc = main(["screen", *map(str, three_files), "--out", str(out), "--model", str(tiny_card_path)])
    err = capsys.readouterr().err
    assert rc == 1 and "c.dcm" in err and "changed while screening" in err
    assert [(e[0], e[1]) for e in _eyes(out)] == [("P001", "OD"), ("P001", "OS")]  # the other exam is complete


def test_a_folder_s_files_give_their_pixels_back_as_they_are_read(tiny_card_path, three_files, tmp_path, monkeypatch):
    """The hold works while one folder is read (core.io.on_volume_read), not only after it: when the
    third file is decoded, the two volumes read before it hold no pixels."""
    import core.io.dicom as dicom

    made: list = []
    holding_at_each_read: list[int] = []
    original = dicom.volume_from_file

    def spy(f):
        holding_at_each_read.append(sum(v.bscans.strides != (0, 0, 0) for v in made))
        made.append(vol := original(f))
        return vol

    monkeypatch.setattr(dicom, "volume_from_file", spy)
    with limits.override(max_held_bytes=1):
        assert (
            main(["screen", str(three_files[0].parent), "--out", str(tmp_path / "o"), "--model", str(tiny_card_path)])
            == 0
        )
    assert holding_at_each_read[:3] == [0, 0, 0]
