"""``octscreen audit verify|list``: read the sign-off audit trail (``core.audit``) the desktop app writes.

``verify`` checks the chain of digests (a record changed or removed outside the app is named) and
prints how many records it holds; ``list`` prints the sign-offs, oldest first, optionally only one
patient's, or writes them as CSV. The trail is the desktop app's (its settings say where), or
``--trail FILE``. Reading never changes it. Exit codes: 0 fine, 1 the chain is broken, 2 the trail
cannot be read.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

__all__ = ["CSV_COLUMNS", "register", "run"]

CSV_COLUMNS = [
    "record",
    "signed_at",
    "clinician",
    "patient_id",
    "study_uid",
    "series_uid",
    "eye",
    "eye_set_by_user",
    "model_tier",
    "model_label",
    "decision",
    "final_tier",
    "changed",
    "finding",
    "model",
    "model_sha256",
]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``audit`` subcommand and its actions."""
    p = subparsers.add_parser(
        "audit",
        help="read the sign-off audit trail: verify its chain, list or export the sign-offs",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, text in (
        ("verify", "check that no record was changed or removed; print the record count"),
        ("list", "print the sign-offs (or --csv FILE), oldest first"),
    ):
        a = actions.add_parser(name, help=text, description=text)
        a.add_argument("--trail", type=Path, metavar="FILE", help="the audit trail (default: the desktop app's)")
        if name == "list":
            a.add_argument("--patient", metavar="ID", default="", help="only this patient's sign-offs")
            a.add_argument("--csv", type=Path, metavar="FILE", help="write them as CSV here (never overwrites)")
        a.set_defaults(func=run)


def _default_trail() -> Path:
    from app.settings import AppSettings  # noqa: PLC0415 (CLI start-up: Qt's settings, only for this command)

    return AppSettings().audit_path


def _row(so) -> dict[str, str]:
    return {
        "record": str(so.record_id),
        "signed_at": so.signed_at.isoformat(timespec="seconds"),
        "clinician": so.clinician,
        "patient_id": so.patient_id,
        "study_uid": so.study_uid,
        "series_uid": so.series_uid,
        "eye": so.laterality,
        "eye_set_by_user": "yes" if so.laterality_set_by_user else "",
        "model_tier": so.model_tier,
        "model_label": so.model_label,
        "decision": so.decision,
        "final_tier": so.final_tier,
        "changed": "yes" if so.changed else "",
        "finding": so.finding,
        "model": f"{so.model_name} v{so.model_version}",
        "model_sha256": so.model_sha256,
    }


def run(args: argparse.Namespace) -> int:
    """Verify or list the trail; see the module docstring for the exit codes."""
    from core.audit import AuditError, AuditTrail  # noqa: PLC0415 (CLI start-up)
    from core.fileio import write_text_atomic  # noqa: PLC0415 (CLI start-up)

    path = args.trail or _default_trail()
    if not path.is_file():
        print(f"error: {path}: no audit trail there (nothing was signed yet, or another --trail)", file=sys.stderr)
        return 2
    try:
        trail = AuditTrail(path, read_only=True)
    except AuditError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with trail:
        if args.action == "verify":
            try:
                n = trail.verify()
            except AuditError as e:
                print(f"error: {e}", file=sys.stderr)
                return 1
            print(f"{path}: {n} sign-off record(s), chain intact (none changed or removed)")
            return 0
        records = [so for so in trail.records() if not args.patient or so.patient_id == args.patient]
    rows = [_row(so) for so in records]
    if args.csv:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS)
        w.writeheader()
        w.writerows(rows)
        try:
            write_text_atomic(args.csv, buf.getvalue())
        except (FileExistsError, OSError) as e:
            print(f"error: {args.csv}: not written ({e})", file=sys.stderr)
            return 2
        print(f"{len(rows)} sign-off(s) -> {args.csv}")
        return 0
    for r in rows:
        what = "confirmed" if not r["changed"] else f"changed {r['model_tier']} -> {r['final_tier']}"
        finding = f"; finding: {r['finding']}" if r["finding"] else ""
        print(
            f"#{r['record']} {r['signed_at']} {r['clinician']}: patient {r['patient_id']} {r['eye']}, "
            f"model {r['model_tier']} ({r['model_label']}), {what}{finding}"
        )
    print(f"{len(rows)} sign-off(s) in {path}")
    return 0
