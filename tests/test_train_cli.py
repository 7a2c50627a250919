"""`octscreen train ...` end to end with tiny models on synthetic data: crossval, split-hash refusal, export."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from app.cli import main
from core.modelcard import DEMO_WARNING, load_card
from training.config import config_dir, load_config, train_config

ROOT = Path(__file__).resolve().parents[1]

TINY = [
    "--set",
    "data.patients=6",
    "--set",
    "data.n_bscans=3",
    "--set",
    "data.height=64",
    "--set",
    "data.width=64",
    "--set",
    "teacher.arch=test_convnext",
    "--set",
    "student.arch=test_efficientnet",
    "--set",
    "teacher.input_size=64",
    "--set",
    "student.input_size=48",
    "--set",
    "teacher.epochs=1",
    "--set",
    "student.epochs=1",
    "--set",
    "teacher.batch_size=8",
    "--set",
    "student.batch_size=8",
    "--set",
    "teacher.pretrained=false",
    "--set",
    "student.pretrained=false",
    "--set",
    "runtime.progress=false",
    "--set",
    "split.folds=2",
    "--set",
    "split.val_fraction=0.34",
]


@pytest.fixture(scope="module")
def crossval_run(tmp_path_factory):
    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("cv")
    args = [
        "train",
        "crossval",
        "--config",
        "synthetic-cpu",
        "--out",
        str(root / "run"),
        "--set",
        f"data.cache_dir={root / 'cache'}",
        *TINY,
    ]
    return root, main(args)


def test_bundled_configs_are_valid():
    names = sorted(p.stem for p in config_dir().glob("*.json"))
    assert {"synthetic-cpu", "demo-student", "neh-teacher", "neh-student", "oct2017-teacher", "oct2017-student"} <= set(
        names
    )
    for n in names:
        cfg = load_config(n)
        for role in ("teacher", "student"):
            if cfg[role]:
                train_config(cfg, role)
    neh = load_config("neh-student")
    t, s = train_config(neh, "teacher"), train_config(neh, "student")
    assert (t.arch, t.size, t.loss, t.lr, t.lr_backbone, t.weight_decay, t.swa) == (
        "convnextv2_large",
        (384, 384),
        "focal",
        1e-4,
        2e-5,
        0.05,
        True,
    )
    assert (s.arch, s.lr, s.weight_decay, s.distill_alpha, s.distill_temperature) == (
        "efficientnet_b2",
        1e-3,
        0.01,
        0.3,
        4.0,
    )
    assert load_config("neh-teacher", ["teacher.epochs=2", "data.root=/x"])["teacher"]["epochs"] == 2


def test_crossval_end_to_end(crossval_run, capsys):
    root, rc = crossval_run
    assert rc == 0
    run = root / "run"
    res = json.loads((run / "crossval.json").read_text())
    assert set(res["per_fold"]) == {"teacher", "student (distilled)", "student (control)"}
    assert all(len(v) == 2 for v in res["per_fold"].values()) and res["demo"] is True
    s = res["summary"]["student (distilled)"]["accuracy"]
    accs = [m["accuracy"] for m in res["per_fold"]["student (distilled)"]]
    assert s["mean"] == pytest.approx(np.mean(accs)) and s["std"] == pytest.approx(np.std(accs, ddof=1))
    assert res["per_fold"]["teacher"][0]["per_eye"]["n"] > 0
    text = (run / "crossval.txt").read_text()
    assert "mean" in text and (run / "crossval.csv").is_file()
    per_eye = text.split("Per eye", 1)[1]  # the per-eye table follows the per-B-scan one
    eye_acc = 100 * res["per_eye_summary"]["teacher"]["accuracy"]["mean"]
    assert f"{eye_acc:.2f}" in per_eye.split("student")[0]
    for fold in (0, 1):
        for m in ("teacher", "student", "control"):
            card = load_card(run / f"fold{fold}" / m / f"{m}.json")
            assert card.split_hash == res["split_hash"] and card.demo and card.extra["fold"] == fold
            # each model's per-eye thresholds were calibrated on this fold's validation eyes
            assert f"fold {fold}" in card.metrics["threshold_calibration"]["data"]
    assert load_card(run / "fold0" / "student" / "student.json").extra["distilled"] is True


def test_crossval_of_the_control_alone_trains_no_teacher(tmp_path, capsys):
    """crossval.teacher=false: each fold trains only the control student (an ablation's CV), and the
    table has that one model; both false is refused before any training."""
    torch.set_num_threads(2)
    base = ["train", "crossval", "--config", "synthetic-cpu", "--set", f"data.cache_dir={tmp_path / 'cache'}", *TINY]
    assert main([*base, "--out", str(tmp_path / "run"), "--set", "crossval.teacher=false"]) == 0
    res = json.loads((tmp_path / "run" / "crossval.json").read_text())
    assert set(res["per_fold"]) == {"student (control)"} and len(res["per_fold"]["student (control)"]) == 2
    for fold in (0, 1):
        assert (tmp_path / "run" / f"fold{fold}" / "control" / "control.json").is_file()
        assert not (tmp_path / "run" / f"fold{fold}" / "teacher").exists()
    capsys.readouterr()
    none = ["--out", str(tmp_path / "none"), "--set", "crossval.teacher=false", "--set", "crossval.control=false"]
    assert main([*base, *none]) != 0
    assert "both false" in capsys.readouterr().err and not list((tmp_path / "none").glob("fold*"))


def test_crossval_can_distil_each_fold_from_its_own_control(tmp_path, capsys):
    """crossval.teacher=control: each fold trains the control, then the student distilled from it
    (no recipe teacher); the student's card names the fold's control as its teacher."""
    torch.set_num_threads(2)
    base = ["train", "crossval", "--config", "synthetic-cpu", "--set", f"data.cache_dir={tmp_path / 'cache'}", *TINY]
    assert main([*base, "--out", str(tmp_path / "run"), "--set", "crossval.teacher=control"]) == 0
    res = json.loads((tmp_path / "run" / "crossval.json").read_text())
    assert set(res["per_fold"]) == {"student (control)", "student (distilled)"}
    for fold in (0, 1):
        folder = tmp_path / "run" / f"fold{fold}"
        card = json.loads((folder / "student" / "student.json").read_text())
        assert card["extra"]["distilled"] and card["extra"]["teacher"] == str(folder / "control")
        assert "teacher_val" in card["extra"] and not (folder / "teacher").exists()
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "bad"), "--set", "crossval.teacher=mean"]) != 0
    assert "crossval.teacher is true, false, 'control' or 'ensemble'" in capsys.readouterr().err


def test_crossval_can_distil_each_fold_from_an_ensemble_of_controls(tmp_path, capsys):
    """crossval.teacher=ensemble: each fold trains the control and every crossval.ensemble member
    (another architecture or size; here a smaller input), distils the student from the mean of their logits, and reports
    the members, the ensemble teacher (thresholds from the validation eyes) and both students."""
    torch.set_num_threads(2)
    base = ["train", "crossval", "--config", "synthetic-cpu", "--set", f"data.cache_dir={tmp_path / 'cache'}", *TINY]
    member = '[{"name": "small-40", "input_size": 40}]'
    run = tmp_path / "run"
    sets = ["--set", "crossval.teacher=ensemble", "--set", f"crossval.ensemble={member}"]
    assert main([*base, "--out", str(run), *sets]) == 0
    res = json.loads((run / "crossval.json").read_text())
    want = {"student (control)", "member small-40", "teacher (ensemble)", "student (distilled)"}
    assert set(res["per_fold"]) == want and all(len(v) == 2 for v in res["per_fold"].values())
    for fold in (0, 1):
        folder = run / f"fold{fold}"
        m = load_card(folder / "control-small-40" / "control-small-40.json")
        assert (m.arch, tuple(m.input_size), m.extra["fold"]) == ("test_efficientnet", (40, 40), fold)
        assert f"fold {fold}" in m.metrics["threshold_calibration"]["data"]
        card = load_card(folder / "student" / "student.json")
        assert card.extra["teacher"] == f"{folder / 'control'} + {folder / 'control-small-40'}"
        assert card.extra["teacher_ensemble"] and "teacher_val" in card.extra
        # the teacher's test metrics are its own, not a member's
        t = json.loads((folder / "ensemble" / "test_metrics.json").read_text())
        assert t["per_eye"]["n"] > 0 and t == res["per_fold"]["teacher (ensemble)"][fold]
        assert all(t != res["per_fold"][k][fold] for k in ("student (control)", "member small-40"))
    assert "teacher (ensemble)" in (run / "crossval.txt").read_text()
    # the fold report (for runs still going) finds the ensemble and its member too
    report = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "crossval_report.py"), str(run)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = [line.split(" mean ")[0].strip() for line in report.splitlines() if " mean " in line]
    assert rows[:4] == ["teacher (ensemble)", "member small-40", "student (distilled)", "student (control)"]
    capsys.readouterr()
    bad = ["--set", "crossval.teacher=ensemble", "--set", 'crossval.ensemble=[{"arch": "resnet18"}]']
    assert main([*base, "--out", str(tmp_path / "bad"), *bad]) != 0
    assert "must be a dict of student options with a 'name'" in capsys.readouterr().err
    assert not list((tmp_path / "bad").glob("fold*"))


def test_distill_refuses_a_teacher_from_another_split(crossval_run, tmp_path, capsys):
    root, _ = crossval_run
    other = tmp_path / "other"
    rc = main(
        [
            "train",
            "distill",
            "--config",
            "synthetic-cpu",
            "--out",
            str(other),
            "--set",
            "split.seed=7",
            "--set",
            f"data.cache_dir={root / 'cache'}",
            "--teacher",
            str(root / "run" / "fold0" / "teacher"),
            *TINY,
        ]
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert "split" in err and "teacher" in err
    assert not (other / "fold0" / "student" / "student.json").exists()


def test_distill_from_an_ensemble_of_two_teachers(crossval_run, tmp_path):
    """Two --teacher options: the student learns from their mean logits; its card names both, the
    command that repeats the run, and the ensemble's accuracy on the validation B-scans."""
    from core.train.loop import load_model_from_card, predict
    from core.train.steps import TeacherInput
    from training.recipes import find_card, prepare

    root, _ = crossval_run
    run = root / "run"
    teachers = [run / "fold0" / "teacher", run / "fold0" / "control"]
    out = tmp_path / "ens"
    args = ["train", "distill", "--config", "synthetic-cpu", "--out", str(out), "--splits", str(run / "splits.json")]
    args += ["--set", f"data.cache_dir={root / 'cache'}", *TINY]
    for t in teachers:
        args += ["--teacher", str(t)]
    assert main(args) == 0
    card = load_card(out / "fold0" / "student" / "student.json")
    assert card.extra["distilled"] is True and card.extra["teacher_ensemble"]
    assert [t["path"] for t in card.extra["teachers"]] == [str(t) for t in teachers]
    assert [t["input_size"] for t in card.extra["teachers"]] == [[64, 64], [48, 48]]
    assert card.extra["reproduce"].count("--teacher") == 2 and str(teachers[1]) in card.extra["reproduce"]
    # the recorded teacher accuracy is the ensemble's: the mean of both teachers' logits, each fed
    # the validation B-scans at the distillation view (the larger teacher's 64 px) resized to its own size
    cfg = load_config("synthetic-cpu", [f"data.cache_dir={root / 'cache'}", *TINY[1::2]])
    ws = prepare(cfg, out)
    _, val = ws.train_val(0)
    tc = ws.train_config("student", input_size=64)
    logits = []
    for t in teachers:
        c = find_card(t)
        m = torch.nn.Sequential(TeacherInput((tc.mean, tc.std), tuple(c.input_size), (c.mean, c.std)))
        m.append(load_model_from_card(c).eval())
        logits.append(predict(m, val, tc, device=torch.device("cpu"))[0])
    y = np.array([tc.classes.index(s.label) for s in val])
    want = float((np.mean(logits, 0).argmax(1) == y).mean())
    assert card.extra["teacher_val"]["n"] == len(val) > 0
    assert card.extra["teacher_val"]["accuracy"] == pytest.approx(want)


def test_export_writes_card_weights_and_onnx(crossval_run, tmp_path):
    import onnxruntime as ort

    root, _ = crossval_run
    folder = tmp_path / "models"
    args = [
        "train",
        "export",
        "--config",
        "synthetic-cpu",
        "--out",
        str(root / "run"),
        "--folder",
        str(folder),
        "--name",
        "demo-x",
    ]
    assert main(args) == 0
    card = load_card(folder / "demo-x.json")
    assert card.demo and card.warning == DEMO_WARNING and card.intended_use == DEMO_WARNING
    assert card.role == "student" and card.input_size == (48, 48) and card.split_hash
    assert "test" in card.metrics and card.metrics["accuracy"] == card.metrics["test"]["accuracy"]
    assert card.reproduce.startswith("octscreen train distill")
    card.verified_file("weights"), card.verified_file("onnx")
    sess = ort.InferenceSession(str(card.file("onnx")))
    x = np.random.default_rng(0).standard_normal((2, 3, 48, 48)).astype(np.float32)
    logits = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    from core.train.loop import load_model_from_card

    ref = load_model_from_card(card)(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(logits, ref, atol=1e-4)
    # never overwrite without being asked
    assert main(args) == 2
    assert main(args + ["--overwrite"]) == 0


def test_existing_split_plan_with_other_settings_is_refused(crossval_run, capsys):
    root, _ = crossval_run
    rc = main(
        [
            "train",
            "teacher",
            "--config",
            "synthetic-cpu",
            "--out",
            str(root / "run"),
            "--set",
            "split.seed=7",
            "--set",
            f"data.cache_dir={root / 'cache'}",
            *TINY,
        ]
    )
    assert rc == 2 and "other split settings" in capsys.readouterr().err


def test_export_int8_is_calibrated_and_measured_on_the_fold(crossval_run, tmp_path, capsys):
    root, _ = crossval_run
    run, folder = root / "run", tmp_path / "models"
    capsys.readouterr()
    rc = main(
        [
            "train",
            "export",
            "--config",
            "synthetic-cpu",
            "--out",
            str(run),
            "--folder",
            str(folder),
            "--name",
            "q",
            "--int8",
            "--set",
            f"data.cache_dir={root / 'cache'}",
            *TINY,
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    card = load_card(folder / "q.json")
    for which in ("weights", "onnx", "onnx_int8"):
        card.verified_file(which)
    m = card.metrics["int8_vs_fp32"]
    # measured on fold 0's test B-scans: the same ones crossval evaluated the PyTorch student on (no TTA)
    tm = json.loads((run / "fold0" / "student" / "test_metrics.json").read_text())
    assert m["samples"] == "test" and m["n"] == tm["n"] > 0
    assert m["accuracy_fp32"] == pytest.approx(tm["accuracy"])
    assert m["calibration"]["source"] == "training B-scans" and m["calibration"]["n"] == card.training_data["n_train"]
    line = [ln for ln in out.splitlines() if ln.startswith("int8 vs fp32")]
    assert line == [
        f"int8 vs fp32 on {m['n']} test B-scans: accuracy {100 * m['accuracy_fp32']:.1f} % -> "
        f"{100 * m['accuracy_int8']:.1f} % ({m['accuracy_change_pp']:+.1f} pp), argmax agreement "
        f"{100 * m['agreement']:.1f} %, max |dp| {m['max_abs_dprob']:.2f}"
    ]


def test_export_int8_refuses_another_split_or_fold(crossval_run, tmp_path, capsys):
    from core.train.splits import load_splits, make_splits, save_splits

    root, _ = crossval_run
    run = root / "run"
    plan = load_splits(run / "splits.json")
    groups = sorted({g for f in plan.folds for g in (*f.train, *f.val, *f.test)})
    from core.train.data import Sample

    fake = [Sample(path=tmp_path / f"{g}.png", label="normal", group=g) for g in groups]
    other = make_splits(fake, 2, seed=7, val_fraction=0.34)
    assert other.hash != plan.hash
    save_splits(other, tmp_path / "other.json")
    base = [
        "train",
        "export",
        "--config",
        "synthetic-cpu",
        "--out",
        str(run),
        "--folder",
        str(tmp_path / "m"),
        "--name",
        "q",
        "--int8",
        "--set",
        f"data.cache_dir={root / 'cache'}",
        *TINY,
    ]
    assert main(base + ["--splits", str(tmp_path / "other.json")]) == 2
    assert f"trained on split {plan.hash}" in capsys.readouterr().err
    assert main(base + ["--model", str(run / "fold1" / "student")]) == 2  # a fold-1 model on fold 0's test set
    assert "trained on fold 1" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_calibrate_sets_thresholds_from_the_validation_eyes(crossval_run, tmp_path, capsys):
    from core.modelcard import Thresholds, load_weights
    from core.train.splits import load_splits

    root, _ = crossval_run
    run = tmp_path / "run"  # one fold, half the 12 patients for validation: enough diseased eyes
    base = [
        "--config",
        "synthetic-cpu",
        "--out",
        str(run),
        "--set",
        f"data.cache_dir={root / 'cache'}",
        *TINY,
        "--set",
        "data.patients=12",
        "--set",
        "split.folds=1",
        "--set",
        "split.val_fraction=0.5",
    ]
    assert main(["train", "student", *base]) == 0
    model = run / "fold0" / "control"
    before = load_card(model / "control.json")
    assert before.thresholds == Thresholds()  # fit leaves the default (uncalibrated) thresholds
    capsys.readouterr()
    assert main(["train", "calibrate", *base, "--model", str(model)]) == 0
    out = capsys.readouterr().out
    card = load_card(model / "control.json")
    cal = card.metrics["threshold_calibration"]
    val_patients = load_splits(run / "splits.json").folds[0].val
    assert f"{2 * len(val_patients)} eyes" in cal["data"] and "fold 0" in cal["data"]
    assert cal["per_class"], "no diseased validation eyes: the test data are too small"
    for cls, r in cal["per_class"].items():
        th = card.thresholds
        tier = next(t for t in (th.urgent, th.soon, th.routine, th.normal) if cls in t)
        assert tier[cls] == r["threshold"] and f"{cls}: threshold {r['threshold']:.4f}" in out
        # the rule it was calibrated with (unless the threshold hit its floor of 0.05)
        assert r["min_sensitivity"] >= 0.9 and (r["sensitivity"] >= r["min_sensitivity"] or r["threshold"] == 0.05)
    assert card.thresholds != before.thresholds
    assert load_weights(card)  # weights' checksum still valid
    # a model of another split is refused: its validation patients may be ones it trained on
    assert (
        main(
            [
                "train",
                "calibrate",
                "--config",
                "synthetic-cpu",
                "--out",
                str(root / "run"),
                "--set",
                f"data.cache_dir={root / 'cache'}",
                *TINY,
                "--model",
                str(model),
            ]
        )
        == 2
    )
    assert "split" in capsys.readouterr().err


@pytest.mark.parametrize(
    "key",
    [
        "data.patiens=100",
        "split.fold=3",
        "export.nmae=x",
        "crossval.controll=false",
        "teacher.epoch=1",
        "runtime.aspct=crop",
        "student.lr_head=0.1",
        "synthetic_mix.fracton=1",
    ],
)
def test_a_misspelt_recipe_key_is_refused(key, capsys):
    from training.config import load_config

    section, _, rest = key.partition(".")
    with pytest.raises(ValueError, match=f"unknown key\\(s\\) in section '{section}': {rest.split('=')[0]}"):
        load_config("synthetic-cpu", [key])
    assert main(["train", "teacher", "--config", "synthetic-cpu", "--set", key]) == 2
    assert f"section '{section}'" in capsys.readouterr().err


def test_every_bundled_recipe_is_valid():
    from training.config import config_dir, load_config

    names = sorted(p.stem for p in config_dir().glob("*.json"))
    assert "oct2017-real" in names and "oct2017-real-cv" in names
    for name in names:
        cfg = load_config(name)
        assert cfg["data"]["classes"]


def test_synthetic_mix_adds_synthetic_bscans_to_training_only(tmp_path):
    """``synthetic_mix`` adds core.synthetic B-scans to the training patients of a real-data recipe:
    never to validation, their patients can't meet a real id, and the card's training data counts them."""
    from pathlib import Path

    from training import recipes

    sample = Path(__file__).parent / "data" / "oct2017-sample"
    sets = [
        f"data.root={sample}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "synthetic_mix.fraction=0.5",
        "synthetic_mix.patients=2",
        "synthetic_mix.n_bscans=2",
        "split.val_fraction=0.3",
    ]
    ws = recipes.prepare(load_config("oct2017-real", sets), tmp_path / "run")
    train, val = ws.train_val(0)
    syn = [s for s in train if s.group.startswith("synthetic/")]
    real = [s for s in train if not s.group.startswith("synthetic/")]
    assert real and len(syn) == round(0.5 * len(real))
    assert {s.label for s in syn} <= {"normal", "drusen", "cnv"}
    assert all(Path(s.path).is_file() and Path(s.path).suffix == ".png" for s in syn)
    assert not any(s.group.startswith("synthetic/") for s in val)
    assert [s.path for s in ws.train_val(0)[0]] == [s.path for s in train]  # the same draw every call
    td = ws.training_data(0)
    assert td["n_train"] == len(real) and td["n_train_synthetic"] == len(syn)
    assert f"{len(syn)} synthetic" in td["short"]
    # fraction 0 (the default outside the bundled recipe) adds nothing
    ws0 = recipes.prepare(
        load_config("oct2017-real", sets[:2] + ["split.val_fraction=0.3", "synthetic_mix.fraction=0"]),
        tmp_path / "run0",
    )
    assert not any(s.group.startswith("synthetic/") for s in ws0.train_val(0)[0])
    with pytest.raises(ValueError, match="synthetic_mix.fraction"):
        load_config("oct2017-real", ["synthetic_mix.fraction=-1"])


def test_demo_can_ship_a_student_distilled_from_the_ensemble_of_controls(tmp_path, capsys):
    """export.teacher=ensemble: `train demo` trains fold 0's control and the crossval.ensemble members,
    distils the student from them and exports it, its card naming the ensemble it learnt from."""
    torch.set_num_threads(2)
    member = '[{"name": "small-40", "input_size": 40}]'
    args = ["train", "demo", "--config", "synthetic-cpu", "--set", f"data.cache_dir={tmp_path / 'cache'}", *TINY]
    args += ["--set", "export.teacher=ensemble", "--set", f"crossval.ensemble={member}", "--set", "export.seed=3"]
    args += ["--set", f"export.folder={tmp_path / 'models'}", "--set", "export.name=kd", "--out", str(tmp_path / "run")]
    assert main(args) == 0
    fold = tmp_path / "run" / "fold0"
    assert (fold / "control" / "control.json").is_file() and (
        fold / "control-small-40" / "control-small-40.json"
    ).is_file()
    assert not (fold / "teacher").exists()  # the recipe's teacher is not trained
    card = load_card(tmp_path / "models" / "kd.json")
    assert card.extra["distilled"] and card.extra["teacher"] == f"{fold / 'control'} + {fold / 'control-small-40'}"
    assert [t["input_size"] for t in card.extra["teachers"]] == [[48, 48], [40, 40]]
    # export.seed is the student's own; its teachers keep the runtime seed
    assert card.extra["reproduce"].endswith("--set student.seed=3")
    assert load_card(fold / "student" / "student.json").extra["config"]["seed"] == 3
    assert load_card(fold / "control" / "control.json").extra["config"]["seed"] == 0
    capsys.readouterr()
    assert main([*args[:-2], "--out", str(tmp_path / "bad"), "--set", "export.teacher=mean"]) != 0
    assert "export.teacher must be 'recipe' or 'ensemble'" in capsys.readouterr().err
