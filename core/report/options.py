"""What a report is asked for (``ReportOptions``) and its identifiers: the report id, the patient
pseudonym of a de-identified report and the PDF keywords that record it (``core.dicom_export``
reads them back)."""

from __future__ import annotations

import datetime as _dt
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import core

if TYPE_CHECKING:
    from core.audit import SignOff

#: followed by ``pseudonym=<id>`` so the DICOM export can reuse the report's pseudonym.
DEIDENTIFIED_MARKER = "de-identified"
PSEUDONYM_KEYWORD = re.compile(r"pseudonym=([A-Za-z0-9._-]{1,64})(?=[,)\s]|$)")


@dataclass
class ReportOptions:
    """How a report looks and whom it names. All optional."""

    institution: str = ""
    institution_address: str = ""  # one or more lines ('\n' separated)
    logo: Path | None = None  # PNG/JPEG; an unreadable logo is skipped with a warning
    page_size: Literal["A4", "Letter"] = "A4"
    deidentify: bool = False
    software_version: str = core.__version__
    report_id: str | None = None  # default: a short id derived from a random UUID
    clinician: str = ""  # the reviewing clinician: in the header and pre-filled on the signature lines
    referring_clinician: str = ""  # who referred the patient for the scan (header)
    operator: str = ""  # who took the scan (header)
    pseudo_id: str | None = None  # patient pseudonym when de-identifying (default 'ANON-<report id>')
    generated: _dt.datetime | None = None  # generation time (default: now; printed in the local time zone)
    #: the clinicians' sign-offs (``core.audit.SignOff``), matched to the eyes by ``core.audit.eye_record_key``;
    #: the last one of an eye counts (``AuditTrail.records`` order, oldest first). Eyes without one: "not signed".
    signoffs: Sequence[SignOff] = ()


def pseudonym_for(report_id: str) -> str:
    """The default patient pseudonym of a de-identified report: 'ANON-<report id>'.

    Derived from the random report id, never from the patient's identity (a hash of a short
    hospital number could be reversed by trying all numbers)."""
    return f"ANON-{report_id}"


def new_report_id() -> str:
    """A short random report id: 10 upper-case hex digits of a UUID4."""
    return uuid.uuid4().hex[:10].upper()
