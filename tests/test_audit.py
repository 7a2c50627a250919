"""The sign-off audit trail (core.audit): append-only, every record chained by SHA-256, the newest
sign-off of an eye counts, bad files give a message naming them."""

from __future__ import annotations

import datetime as dt
import sqlite3
from dataclasses import replace

import numpy as np
import pytest

from core.audit import AuditError, AuditTrail, SignOff, eye_record_key, signoff_for

CET = dt.timezone(dt.timedelta(hours=1), "CET")


def make_signoff(**kw) -> SignOff:
    base = dict(
        patient_id="P001",
        study_uid="1.2.3",
        series_uid="1.2.3.4",
        laterality="OD",
        model_tier="urgent",
        model_label="cnv",
        model_name="octscreen-test",
        model_version="1.0.0",
        model_sha256="ab" * 32,
        decision="confirmed",
        clinician="Dr Ada Retina",
        finding="Subretinal fluid at the fovea",
        model_scores={"normal": 0.01, "cnv": 0.93},
        signed_at=dt.datetime(2026, 12, 2, 17, 5, 0, tzinfo=CET),
    )
    base.update(kw)
    return SignOff(**base)


@pytest.fixture
def trail(tmp_path):
    with AuditTrail(tmp_path / "data" / "audit.sqlite") as t:
        yield t


def test_a_signoff_round_trips_and_the_newest_counts(trail):
    first = trail.append(make_signoff())
    assert first.record_id == 1
    assert trail.latest(first.key) == first  # every field read back as written, the time zone too
    assert trail.latest(first.key).signed_at.utcoffset() == dt.timedelta(hours=1)
    second = trail.append(make_signoff(decision="soon", finding="Fluid is intraretinal: DME"))
    other_eye = trail.append(make_signoff(laterality="OS", decision="confirmed"))
    assert trail.latest(first.key) == second  # signing again adds a record; the newest counts
    assert [s.decision for s in trail.history(first.key)] == ["confirmed", "soon"]
    assert trail.latest(other_eye.key) == other_eye
    assert trail.latest(("P001", "1.2.3", "1.2.3.4", "unknown")) is None
    assert [s.record_id for s in trail.records()] == [1, 2, 3]
    assert trail.verify() == 3


def test_the_trail_survives_reopening(tmp_path):
    path = tmp_path / "audit.sqlite"
    with AuditTrail(path) as t:
        stored = t.append(make_signoff())
    with AuditTrail(path) as again:
        assert again.records() == [stored]
        assert again.verify() == 1


def test_the_database_refuses_updates_and_deletes(trail):
    trail.append(make_signoff())
    for sql in ("UPDATE signoff SET decision='none'", "DELETE FROM signoff"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            trail._db.execute(sql)
    assert trail.records()[0].decision == "confirmed"


@pytest.mark.parametrize("attack", ["change", "remove"])
def test_verify_finds_a_record_changed_or_removed_behind_the_apps_back(tmp_path, attack):
    path = tmp_path / "audit.sqlite"
    with AuditTrail(path) as t:
        for decision in ("confirmed", "soon", "routine"):
            t.append(make_signoff(decision=decision))
    db = sqlite3.connect(path)  # someone with the file and sqlite3, dropping the triggers first
    db.execute("DROP TRIGGER signoff_no_update")
    db.execute("DROP TRIGGER signoff_no_delete")
    if attack == "change":
        db.execute("UPDATE signoff SET decision='none' WHERE id=2")
    else:
        db.execute("DELETE FROM signoff WHERE id=2")
    db.commit()
    db.close()
    with AuditTrail(path) as t, pytest.raises(AuditError) as err:
        t.verify()
    assert str(path) in str(err.value)
    assert (
        ("record 2" in str(err.value) and "changed" in str(err.value))
        if attack == "change"
        else "removed" in str(err.value)
    )


def test_a_file_that_is_no_trail_is_refused_by_name(tmp_path):
    junk = tmp_path / "audit.sqlite"
    junk.write_bytes(b"not a database " * 400)
    with pytest.raises(AuditError, match="not a usable audit trail") as err:
        AuditTrail(junk)
    assert str(junk) in str(err.value)
    newer = tmp_path / "newer.sqlite"
    AuditTrail(newer).close()
    db = sqlite3.connect(newer)
    db.execute("UPDATE meta SET value='99' WHERE key='schema'")
    db.commit()
    db.close()
    with pytest.raises(AuditError, match="schema 99"):
        AuditTrail(newer)


def test_a_signoff_needs_a_name_a_known_decision_and_a_time_zone():
    with pytest.raises(ValueError, match="name"):
        make_signoff(clinician="  ")
    with pytest.raises(ValueError, match="decision"):
        make_signoff(decision="maybe")
    with pytest.raises(ValueError, match="time zone"):
        make_signoff(signed_at=dt.datetime(2026, 12, 2, 17, 5))


def test_changed_and_final_tier():
    assert not make_signoff().changed and make_signoff().final_tier == "urgent"
    soon = make_signoff(decision="soon")
    assert soon.changed and soon.final_tier == "soon"
    same = make_signoff(decision="urgent")  # choosing the model's own tier is no change
    assert not same.changed and same.final_tier == "urgent"


@pytest.mark.parametrize(
    ("zone", "shown"), [("Europe/Berlin", "2026-12-02 17:05 CET"), ("UTC", "2026-12-02 16:05 UTC")]
)
def test_signed_text_is_local_time_with_its_zone(monkeypatch, tmp_path, zone, shown):
    import time

    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        so = make_signoff()  # signed at 17:05 CET
        assert so.signed_text() == shown
        with AuditTrail(tmp_path / "a.sqlite") as t:  # read back: only the offset is stored
            assert t.append(so) and t.records()[0].signed_text() == shown
    finally:
        monkeypatch.undo()
        time.tzset()


def test_signoff_for_an_eye_records_the_model_and_the_exam_uids(tiny_card, make_volume):
    from core.aggregate import decide
    from core.results import VolumeResult

    vol = make_volume(n=4, laterality="OS")
    classes = tiny_card.classes
    probs = np.tile([[0.05, 0.05, 0.9]], (4, 1)).astype(np.float32)
    vr = VolumeResult(vol, classes, probs, None, np.ones(4, bool), [""] * 4)
    eye = decide(vr, tiny_card.thresholds)
    so = signoff_for(eye, tiny_card, decision="confirmed", clinician=" Dr B ", finding=" CNV ")
    assert so.key == eye_record_key(eye) == (vol.patient.patient_id, vol.study.study_uid, vol.study.series_uid, "OS")
    assert (so.model_name, so.model_version, so.model_sha256) == (
        tiny_card.name,
        tiny_card.version,
        tiny_card.weights_sha256,
    )
    assert so.model_tier == eye.urgency.value and so.model_label == eye.label
    assert so.model_scores == pytest.approx(eye.scores)
    assert (so.clinician, so.finding) == ("Dr B", "CNV")
    assert so.signed_at.tzinfo is not None
    assert replace(so, decision="routine").changed is (eye.urgency.value != "routine")


def test_a_copy_of_the_one_file_is_the_whole_trail_and_read_only_writes_nothing(tmp_path):
    import shutil

    path = tmp_path / "audit.sqlite"
    trail = AuditTrail(path)
    trail.append(make_signoff())
    trail.append(make_signoff(decision="soon"))
    shutil.copy(path, tmp_path / "backup.sqlite")  # while the app still has it open
    trail.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit.sqlite", "backup.sqlite"]  # no side files
    with AuditTrail(tmp_path / "backup.sqlite", read_only=True) as copy:
        assert [s.decision for s in copy.records()] == ["confirmed", "soon"] and copy.verify() == 2
        with pytest.raises(AuditError, match="cannot record"):
            copy.append(make_signoff())
    with pytest.raises(AuditError):
        AuditTrail(tmp_path / "absent.sqlite", read_only=True)  # read-only never creates a trail
    assert not (tmp_path / "absent.sqlite").exists()
