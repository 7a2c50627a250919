"""Patient-level splits: no leakage, stratification, the hash, and the teacher/student hash check."""

import json

import pytest

from core.errors import InputError
from core.train.data import read_manifest
from core.train.splits import SplitMismatchError, check_split_hash, load_splits, make_splits, samples_of, save_splits
from tests.fixtures.toy import write_toy_dataset


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    return read_manifest(write_toy_dataset(tmp_path_factory.mktemp("toy"), patients=15, n_bscans=3))


def test_no_patient_in_two_of_train_val_test(samples):
    plan = make_splits(samples, 3, seed=0, val_fraction=0.2)
    all_groups = {s.group for s in samples}
    tests = []
    for f in plan.folds:
        tr, va, te = set(f.train), set(f.val), set(f.test)
        assert tr and va and te
        assert not (tr & va) and not (tr & te) and not (va & te)
        assert tr | va | te == all_groups
        # and at the level of files: every B-scan of a patient lands on one side
        files = [{s.path for s in samples_of(samples, g)} for g in (tr, va, te)]
        assert not (files[0] & files[1]) and not (files[0] & files[2]) and not (files[1] & files[2])
        tests.append(te)
    # test folds partition the patients
    assert set().union(*tests) == all_groups and sum(len(t) for t in tests) == len(all_groups)
    # stratified: every test fold holds every class
    for f in plan.folds:
        assert {s.eye_label for s in samples_of(samples, f.test)} == {"normal", "drusen", "cnv"}


def test_one_fold_plan_has_no_test(samples):
    plan = make_splits(samples, 1, seed=0, val_fraction=0.2)
    f = plan.folds[0]
    assert not f.test and not (set(f.train) & set(f.val))
    assert 0.1 < len(f.val) / (len(f.train) + len(f.val)) < 0.4


def test_hash_is_deterministic_and_file_round_trip(samples, tmp_path):
    a, b = make_splits(samples, 3, seed=0), make_splits(samples, 3, seed=0)
    assert a.hash == b.hash
    assert make_splits(samples, 3, seed=1).hash != a.hash
    p = save_splits(a, tmp_path / "splits.json")
    assert load_splits(p).hash == a.hash
    with pytest.raises(FileExistsError):
        save_splits(a, p)
    d = json.loads(p.read_text())
    d["folds"][0]["test"].append(d["folds"][0]["train"].pop())  # move a patient by hand
    p.write_text(json.dumps(d))
    with pytest.raises(InputError, match="hash"):
        load_splits(p)


def test_split_hash_refusal():
    check_split_hash("abc", "abc")
    with pytest.raises(SplitMismatchError, match="abc"):
        check_split_hash("abc", "def")
    with pytest.raises(SplitMismatchError):
        check_split_hash("", "def")


def test_too_few_patients(samples):
    with pytest.raises(ValueError, match="patients"):
        make_splits(samples[:3], 5)
