"""``octscreen screen PATH... --out DIR``: screen exams headless.

Reads every OCT volume found under the paths, screens each eye with the model card's student,
and writes into DIR one PDF report per exam (patient + study; with ``--dicom`` also the report as a
DICOM Encapsulated PDF and the result as a DICOM Comprehensive SR, ``<report>_sr.dcm``), plus
``results.csv`` and ``results.json`` with one row per eye.

Safety: all output names are worked out and checked before any screening starts; an existing file
is never replaced without ``--overwrite``. Every file is written to a temp name and renamed.
A bad input file is reported and skipped. Exit code: 0 all screened, 1 some input or output
failed, 2 nothing could be screened (or refused before starting).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json
import logging
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import core.outputs

# light imports only (numpy and the readers load when the command runs: `octscreen --help` stays fast)
from core.choices import BACKENDS, DATE_POLICIES
from core.errors import InputError, ModelCardError
from core.fileio import clean_stale_temps, write_text_atomic
from core.outputs import ExamJob, ExamOutputs, plan_jobs, sr_path, write_unique

__all__ = ["register", "run", "ExamJob", "plan_jobs", "eye_rows", "sr_path", "CSV_COLUMNS"]

log = logging.getLogger(__name__)

CSV_COLUMNS = [
    "patient_id",
    "eye",
    "study_date",
    "label",
    "urgency",
    "tier",
    "action",
    "time_frame",
    "needs_review",
    "confidence",
    "n_bscans",
    "n_gradable",
    "evidence_bscans",
    "model_name",
    "model_version",
    "demo_model",
    "model_notice",
    "backend",
    "source_file",
    "report_file",
    "dicom_file",
    "sr_file",
]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``screen`` subcommand."""
    p = subparsers.add_parser(
        "screen",
        help="screen OCT exams headless: PDF reports, results.csv / results.json",
        description="Screen every OCT volume found under PATH... and write one PDF report per exam, "
        "results.csv and results.json (one row per eye) into --out.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="DICOM file, DICOMDIR, image stack or folder")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder (created if needed)")
    p.add_argument("--model", type=Path, metavar="CARD", help="model card JSON (default: the bundled demo model)")
    p.add_argument(
        "--dicom",
        action="store_true",
        help="also write each report as a DICOM Encapsulated PDF and the result as a DICOM Structured Report",
    )
    p.add_argument(
        "--deidentify",
        action="store_true",
        help="de-identify every output (DICOM PS3.15 Basic Profile): random pseudonyms; no names, birth "
        "dates, ids, descriptions, original UIDs or paths",
    )
    p.add_argument(
        "--deid-dates",
        choices=DATE_POLICIES,
        default="remove",
        help="with --deidentify: remove exam dates (default), shift them by a random per-patient offset "
        "(intervals between visits survive), or retain them",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="inference backend (auto: ONNX Runtime; openvino: f32, the same numbers; openvino-bf16: "
        "faster where the CPU has bf16, the numbers change; docs/results/bench_backends.txt)",
    )
    p.add_argument("--threads", type=int, default=None, metavar="N", help="CPU threads for inference")
    p.add_argument(
        "--workers",
        type=_workers,
        default=1,
        metavar="N",
        help="screen N exams at a time, each in its own process (default 1; each then gets --threads, or "
        "the cores divided by N; docs/results/bench_workers.txt)",
    )
    p.add_argument("--institution", default="", metavar="NAME", help="institution name in the report header")
    p.add_argument("--referring", default="", metavar="NAME", help="referring clinician named in the report header")
    p.add_argument("--operator", default="", metavar="NAME", help="who took the scans, named in the report header")
    p.set_defaults(func=run)


def _workers(text: str) -> int:
    """``--workers``: a whole number from 1 to 64."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None
    if not 1 <= n <= 64:
        raise argparse.ArgumentTypeError(f"must be from 1 to 64, not {n}")
    return n


@dataclass
class JobResult:
    """What screening one exam gave: its results rows, its problems and renamed outputs."""

    rows: list[dict] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    renamed: list[str] = field(default_factory=list)
    screened: bool = False


@dataclass(frozen=True)
class ReportSettings:
    """The run's report settings every exam shares (picklable: sent to worker processes)."""

    institution: str = ""
    referring: str = ""
    operator: str = ""
    deidentify: bool = False
    overwrite: bool = False


def failed_job(job: ExamJob, why: object) -> JobResult:
    """The result of an exam that could not be screened: one failure naming its first file (or patient)."""
    return JobResult(failures=[f"{job.volumes[0].source or job.key[0]}: screening failed ({why})"])


def screen_job(job: ExamJob, screener, card, settings: ReportSettings, progress=None) -> JobResult:
    """Screen one exam and write its report(s): the same in this process and in a worker. A failure
    of the exam or of its report is returned, never raised (one exam must not stop the others)."""
    from core.report import ReportOptions  # noqa: PLC0415 (CLI start-up: PIL)
    from core.screening import screen_volumes  # noqa: PLC0415 (CLI start-up: pydicom)

    try:
        (exam,) = screen_volumes(job.volumes, screener, progress=progress)
    except Exception as e:  # one exam's failure must not stop the others
        log.debug("screening failed", exc_info=True)
        return failed_job(job, e)
    result = JobResult(screened=True)
    outputs = ExamOutputs()
    try:
        opts = ReportOptions(
            institution=settings.institution,
            referring_clinician=settings.referring,
            operator=settings.operator,
            deidentify=settings.deidentify,
            report_id=job.report_id,
            pseudo_id=job.pseudo_id or None,
        )
        core.outputs.write_exam_outputs(  # looked up when called (a test replaces it)
            exam,
            card,
            job.pdf,
            opts,
            dicom=job.dcm is not None,
            sr=True,
            overwrite=settings.overwrite,
            unique=True,
            outputs=outputs,
        )
    except Exception as e:  # a report problem is reported; the results rows are still written
        log.debug("report failed", exc_info=True)
        result.failures.append(f"{job.pdf}: report not written ({e})")
    result.renamed.extend(outputs.renamed)
    report_file, dicom_file, sr_file = (p.name if p is not None else "" for p in (outputs.pdf, outputs.dcm, outputs.sr))
    result.rows = eye_rows(
        exam, job, deidentify=settings.deidentify, report_file=report_file, dicom_file=dicom_file, sr_file=sr_file
    )
    return result


def eye_rows(
    exam, job: ExamJob, *, deidentify: bool, report_file: str, dicom_file: str, sr_file: str = ""
) -> list[dict]:
    """One results row per eye of a screened exam (JSON form; the CSV flattens lists and dicts)."""
    rows = []
    for e in exam.eyes:
        vr = e.volume_result
        vol = vr.volume if vr is not None else None
        rows.append(
            {
                "patient_id": job.pseudo_id if deidentify else e.eye.patient_id,
                "eye": e.eye.laterality.value,
                "study_date": "" if deidentify or vol is None else vol.study.study_date,
                "label": e.label,
                "urgency": e.urgency.value,
                "tier": e.tier.name,
                "action": e.tier.action,
                "time_frame": e.tier.time_frame,
                "needs_review": bool(e.needs_review),
                "confidence": round(float(e.confidence), 4),
                "scores": {c: round(float(s), 4) for c, s in e.scores.items()},
                "n_bscans": e.n_bscans,
                "n_gradable": e.n_gradable,
                "evidence_bscans": [i + 1 for i in e.evidence],
                "model_name": vr.model_name if vr else "",
                "model_version": vr.model_version if vr else "",
                "demo_model": bool(vr.demo_model) if vr else False,
                "model_notice": vr.model_notice if vr else "",
                "backend": vr.backend if vr else "",
                "source_file": "" if deidentify or vol is None or vol.source is None else str(vol.source),
                "report_file": report_file,
                "dicom_file": dicom_file,
                "sr_file": sr_file,
                "reasons": list(e.reasons),
            }
        )
    return rows


def _csv_text(rows: list[dict], classes: list[str]) -> str:
    buf = io.StringIO()
    cols = CSV_COLUMNS[:6] + [f"score_{c}" for c in classes] + CSV_COLUMNS[6:]
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        flat = dict(r)
        flat.update({f"score_{c}": r["scores"].get(c, "") for c in classes})
        flat["evidence_bscans"] = " ".join(str(i) for i in r["evidence_bscans"])
        w.writerow(flat)
    return buf.getvalue()


def _write_text(path: Path, text: str, overwrite: bool) -> None:
    write_text_atomic(path, text, overwrite)


def _inside(path: Path | None, folder: Path) -> bool:
    """Whether ``path`` lies in ``folder`` (both resolved)."""
    if path is None:
        return False
    try:
        return Path(path).resolve().is_relative_to(folder.resolve())
    except OSError:
        return False


def _prepare_out(out: Path) -> str:
    """Create ``out`` and check that it can be written, before any work; '' or why not. Also removes
    the temp files a killed earlier run left there (they may hold patient data)."""
    try:
        if out.exists() and not out.is_dir():
            return f"{out}: --out must be a folder, and this is a file"
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".octscreen-write-check-{uuid.uuid4().hex[:8]}"
        probe.touch()
        probe.unlink()
    except OSError as e:
        return f"{out}: cannot create or write the output folder ({e.strerror or e})"
    for p in clean_stale_temps(out):
        print(f"note: removed {p.name}, a temp file a killed earlier run left in {out}", file=sys.stderr)
    return ""


class _NoInstitutionFilter(logging.Filter):
    """Drops core.report's per-report 'no institution set' warning (the run has said it once)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "no institution set" not in record.getMessage()


def _err(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Screen, write reports and results; see the module docstring for exit codes."""
    quiet = _NoInstitutionFilter() if not args.institution else None
    report_log = logging.getLogger("core.report")
    if quiet is not None:
        report_log.addFilter(quiet)
    try:
        return _run(args)
    finally:
        if quiet is not None:
            report_log.removeFilter(quiet)


def _run(args: argparse.Namespace) -> int:
    # what `octscreen --help` must not load (tests/test_cli_startup.py): tqdm, numpy/OpenCV (core.inference,
    # core.modelcard), PIL and reportlab's helpers (core.report), pydicom (core.screening -> core.io)
    from tqdm import tqdm  # noqa: PLC0415 (CLI start-up: ~40 ms)

    from core.inference import Screener, default_card_path  # noqa: PLC0415 (CLI start-up: numpy, OpenCV)
    from core.io.common import on_volume_read  # noqa: PLC0415 (CLI start-up: pydicom)
    from core.modelcard import load_card  # noqa: PLC0415 (CLI start-up)
    from core.screening import (  # noqa: PLC0415 (CLI start-up: pydicom)
        PixelHold,
        open_volumes,
        unique_volumes,
        volume_identity,
    )

    out: Path = args.out
    problem = _prepare_out(out)
    if problem:
        _err(problem)
        return 2
    csv_path, json_path = out / "results.csv", out / "results.json"
    existing = [p for p in (csv_path, json_path) if p.exists()]
    if existing and not args.overwrite:
        _err(f"{', '.join(map(str, existing))} already exist(s); use --overwrite to replace, or another --out")
        return 2
    card_path = args.model or default_card_path()
    try:
        card = load_card(card_path)
    except ModelCardError as e:
        hint = "" if args.model else " (the bundled demo model is missing; pass --model CARD)"
        _err(f"{e}{hint}")
        return 2
    if args.dicom:
        try:
            from core import dicom_export  # noqa: F401, PLC0415 (checked before any work: pydicom's encoders)
        except ImportError as e:
            _err(f"--dicom is not available ({e})")
            return 2

    # 1. Read everything (bad files are collected), plan the outputs, refuse before any work.
    #    Path by path, so that past the max_held_bytes limit a volume read from a file gives its pixels
    #    back until its exam is screened (core.screening.PixelHold): memory stays bounded for many files.
    errors: list[InputError] = []
    hold = PixelHold()
    identities: dict[int, tuple] = {}  # id(volume) -> (volume, its identity, taken before its pixels may go)

    def on_read(vol) -> None:  # each volume made from one file, as it is read (core.io.on_volume_read)
        identities[id(vol)] = (vol, ident := volume_identity(vol))
        hold.keep(vol, ident)

    def identity(vol) -> str:
        if id(vol) in identities:
            return identities.pop(id(vol))[1]
        ident = volume_identity(vol)  # from a folder (image stack, single-frame series): always held
        hold.keep(vol, ident)
        return ident

    volumes: list = []
    seen: set[str] = set()
    duplicates: list[str] = []

    with on_volume_read(on_read):
        for path in args.paths:  # a scan given twice is screened once
            fresh, kept, repeated = unique_volumes(open_volumes([path], errors), seen, identity=identity)
            seen.update(kept)
            volumes.extend(fresh)
            duplicates.extend(repeated)
    errors = [e for e in errors if not _inside(e.path, out)]  # our own earlier reports, when --out is inside
    if hold.released:
        log.info("%d volume(s) past the %d MB hold are read again when screened", hold.released, hold.budget >> 20)
    if duplicates:
        print(
            f"note: {len(duplicates)} volume(s) given more than once (the same scan: a file twice, a copy, or a "
            "folder holding a file also given) screened once",
            file=sys.stderr,
        )
    deid = None
    if args.deidentify:  # at the entry: everything made from these volumes is de-identified
        from core.deid import Deidentifier  # noqa: PLC0415 (CLI start-up: pydicom)

        deid = Deidentifier(dates=getattr(args, "deid_dates", "remove"))
        plain, volumes = volumes, [deid.volume(v) for v in volumes]
        for old, new in zip(plain, volumes, strict=True):
            hold.follow(old, new)
    jobs = plan_jobs(volumes, out, deidentify=args.deidentify, dicom=args.dicom)
    clash = [p for j in jobs for p in (j.pdf, j.dcm, j.sr) if p is not None and p.exists()]
    if clash and not args.overwrite:
        shown = ", ".join(str(p) for p in clash[:5]) + (f" and {len(clash) - 5} more" if len(clash) > 5 else "")
        _err(f"output files already exist: {shown}; use --overwrite to replace them, or another --out")
        return 2
    for i, e in enumerate(errors, start=1):  # de-identified: numbered as in results.json, no file names
        _err(deid.error_text(e, i) if deid else str(e))
    if errors and deid:
        print("note: --deidentify withholds file names; `octscreen info PATH` names the bad file", file=sys.stderr)
    if not jobs:
        _err("nothing to screen: no readable OCT volume found")
        return 2

    # 2. Screen, exam by exam, and write its report(s).
    try:
        screener = Screener(card, backend=args.backend, threads=args.threads)
    except (ModelCardError, ValueError) as e:
        _err(str(e))
        return 2
    print(f"WARNING: {card.warning} (trained on {card.trained_on})", file=sys.stderr)
    if not args.institution:  # said once for the run, not once per report
        print("note: no --institution: each report's header says 'Institution not set'", file=sys.stderr)
    renamed: list[str] = []
    total = sum(v.n_bscans for j in jobs for v in j.volumes)
    rows: list[dict] = []
    failures: list[str] = []
    n_exams = 0
    settings = ReportSettings(args.institution, args.referring, args.operator, args.deidentify, args.overwrite)
    workers = min(int(getattr(args, "workers", 1) or 1), len(jobs))
    with tqdm(total=total, unit="B-scan", desc="screening", disable=None, file=sys.stderr) as bar:
        if workers > 1:
            from app.screen_pool import screen_in_processes  # noqa: PLC0415 (only with --workers)

            del screener  # each worker process loads its own
            results = screen_in_processes(jobs, hold, card, settings, args.backend, args.threads, workers, bar)
        else:
            results = []
            for job in jobs:
                start = bar.n
                try:  # pixels given back while reading are read again now, and go again after the exam
                    with hold.pixels(job.volumes):
                        result = screen_job(
                            job, screener, card, settings, progress=lambda d, t, m, s=start: bar.update(s + d - bar.n)
                        )
                except Exception as e:  # a file changed meanwhile: this exam fails, the others go on
                    result = failed_job(job, e)
                bar.update(start + sum(v.n_bscans for v in job.volumes) - bar.n)
                results.append(result)
    for result in results:  # in the order of the plan, however the exams finished
        n_exams += int(result.screened)
        rows.extend(result.rows)
        failures.extend(result.failures)
        renamed.extend(result.renamed)

    # 3. Results tables (always, even when some exams failed).
    from core.deid import output_time  # noqa: PLC0415 (CLI start-up: pydicom)

    meta = {
        "generated": output_time(dt.datetime.now().astimezone(), bool(args.deidentify)).isoformat(timespec="seconds"),
        "model": {
            "name": card.name,
            "version": card.version,
            "arch": card.arch,
            "demo": card.demo,
            "warning": card.warning,
            "trained_on": card.trained_on,
            "intended_use": card.intended_use,
            "sha256": card.weights_sha256,
            "card": "" if args.deidentify else str(card.path),
        },
        "classes": list(card.classes),
        "deidentified": bool(args.deidentify),
        "eyes": rows,
        "errors": (
            [deid.error_text(e, i) for i, e in enumerate(errors, start=1)]
            + [deid.error_text(f, i) for i, f in enumerate(failures, start=1)]
            if deid is not None
            else [str(e) for e in errors] + failures
        ),
    }
    try:
        for path, text in (
            (csv_path, _csv_text(rows, list(card.classes))),
            (json_path, json.dumps(meta, indent=2, ensure_ascii=False) + "\n"),
        ):
            written = write_unique(path, args.overwrite, _write_text, text=text, overwrite=args.overwrite)
            if written != path:
                renamed.append(f"{path.name} appeared meanwhile (another run?): written as {written.name}")
    except OSError as e:
        _err(f"results not written ({e})")
        return 2

    # 4. Summary.
    for i, f in enumerate(failures, start=1):
        _err(deid.error_text(f, i) if deid else f)
    for r in renamed:
        print(f"note: {r}", file=sys.stderr)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["urgency"]] = counts.get(r["urgency"], 0) + 1
    summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    print(f"screened {n_exams} exam(s), {len(rows)} eye(s) ({summary or 'none'}) -> {out}")
    print(f"model: {card.name} v{card.version} ({card.warning})")
    n_bad = len(errors) + len(failures)
    if n_bad:
        print(f"{n_bad} problem(s): {len(errors)} unreadable input(s), {len(failures)} failed exam(s)/report(s)")
    if not rows:
        return 2
    return 1 if n_bad else 0
