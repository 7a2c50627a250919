"""Conformance of every DICOM object we write, checked by dciodvfy (dicom3tools, David Clunie's IOD
validator): the OPT volume (core.io.writer), the Encapsulated PDF report, the Secondary Capture
overlays and the Comprehensive SR (core.dicom_export).

No Error line and no Warning line is accepted unless it is listed below, by its exact text; every
listed line is explained in docs/CONFORMANCE.md ("What dciodvfy still reports"), and a test keeps the
two in step. A missing dciodvfy fails (``make test`` installs dicom3tools), it never skips.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from core.dicom_export import overlays_to_secondary_capture, pdf_to_dicom, result_to_sr
from core.io import write_opt
from core.report import ReportOptions, write_report
from core.results import ExamResult, Urgency
from core.volume import Laterality
from tests.conftest import run_tool
from tests.fixtures.oct_io import full_volume
from tests.test_dicom_sr import dicom_exam
from tests.test_report import PATIENT, STUDY, make_card, make_exam, make_eye

ROOT = Path(__file__).resolve().parents[1]

#: dicom3tools (2022) still holds the generic Multi-frame Functional Groups rule for these three
#: attributes, while the Ophthalmic Tomography Image module requires them with the fixed values 0, 1, 1
#: (concatenations are not permitted in the OPT IOD): writing them is what the standard asks.
OPT_CONCATENATION = (
    "Error - Attribute present when condition unsatisfied (which may not be present otherwise) Type 1C "
    "Conditional Element=<ConcatenationFrameOffsetNumber> Module=<MultiFrameFunctionalGroupsCommon>",
    "Error - Attribute present when condition unsatisfied (which may not be present otherwise) Type 1C "
    "Conditional Element=<InConcatenationNumber> Module=<MultiFrameFunctionalGroupsCommon>",
    "Error - Cannot be less than or equal to one since then not a Concatenation - attribute "
    "<InConcatenationTotalNumber>",
)
#: Our own coding scheme and template (declared in the SR's Coding Scheme Identification Sequence).
LOCAL_CODES = (
    "Warning - Unrecognized defined term <99OCTSCREEN> for value 1 of attribute <Coding Scheme Designator>",
    "Warning - Unrecognized defined term <99OCTSCREEN> for value 1 of attribute <Mapping Resource>",
)
#: An OPT of an eye we do not know: Ocular Region Imaged allows only R, L and B (both), and we do not
#: invent a side; the volume's own Frame Laterality U is valid.
UNKNOWN_EYE = "Error - Unrecognized enumerated value <U> for value 1 of attribute <Image Laterality>"
#: The exam has no Study ID (type 2: written empty); only a DICOMDIR would need one.
NO_STUDY_ID = "Warning - Missing attribute or value that would be needed to build DICOMDIR - Study ID"
ALLOWED = {
    "OphthalmicTomographyImage": set(OPT_CONCATENATION),
    "EncapsulatedPDF": {NO_STUDY_ID},
    "SCImage": {NO_STUDY_ID},
    "ComprehensiveSR": {NO_STUDY_ID, *LOCAL_CODES},
}


def dciodvfy(path: Path, iod: str, also: tuple[str, ...] = ()) -> list[str]:
    """dciodvfy's Error and Warning lines for ``path`` after checking that it took the file for ``iod``;
    asserts that every line is one ALLOWED for that IOD (or in ``also``). Returns the lines."""
    res = run_tool(["dciodvfy", str(path)], capture_output=True, text=True)
    out = (res.stdout + res.stderr).splitlines()
    assert iod in [line.strip() for line in out], f"dciodvfy did not see a {iod}:\n" + "\n".join(out)
    findings = [line.strip() for line in out if re.match(r"^(Error|Warning)\b", line.strip())]
    unexpected = [line for line in findings if line not in ALLOWED[iod] | set(also)]
    assert not unexpected, f"{path.name}: dciodvfy reports\n" + "\n".join(unexpected)
    return findings


@pytest.fixture(scope="module")
def exams(tmp_path_factory) -> dict[str, ExamResult]:
    folder = tmp_path_factory.mktemp("exams")
    return {"dicom": dicom_exam(folder, n=12, evidence=(5, 4, 6)), "plain": make_exam(n=12, evidence=(5, 4, 6))}


@pytest.mark.parametrize("syntax", [None, "JPEG2000Lossless", "RLELossless"])
@pytest.mark.parametrize(("bits", "laterality"), [(8, "OS"), (16, "OD"), (8, "unknown")])
def test_opt_volume(tmp_path, syntax, bits, laterality):
    path = write_opt(full_volume(n=4, bits=bits, laterality=laterality), tmp_path / "v.dcm", transfer_syntax=syntax)
    unknown = (UNKNOWN_EYE,) if laterality == "unknown" else ()
    assert set(dciodvfy(path, "OphthalmicTomographyImage", unknown)) == set(OPT_CONCATENATION + unknown)


def test_encapsulated_pdf(exams, tmp_path):
    pdf = write_report(tmp_path / "r.pdf", exams["dicom"], make_card())
    dciodvfy(pdf_to_dicom(pdf, exams["dicom"], tmp_path / "refs.dcm"), "EncapsulatedPDF")
    dciodvfy(pdf_to_dicom(pdf, exams["plain"], tmp_path / "plain.dcm"), "EncapsulatedPDF")
    anon = write_report(tmp_path / "a.pdf", exams["dicom"], make_card(), ReportOptions(deidentify=True))
    dciodvfy(pdf_to_dicom(anon, exams["dicom"], tmp_path / "anon.dcm", deidentify=True), "EncapsulatedPDF")


def test_secondary_capture_overlays(exams, tmp_path):
    for key in ("dicom", "plain"):
        for path in overlays_to_secondary_capture(exams[key].eyes[0], None, tmp_path / key):
            dciodvfy(path, "SCImage")
    (anon,) = overlays_to_secondary_capture(exams["dicom"].eyes[1], [5], tmp_path / "anon", deidentify=True)
    dciodvfy(anon, "SCImage")


def test_structured_report(exams, tmp_path):
    card = dataclasses.replace(make_card(), weights_sha256="0f" * 32)
    dciodvfy(result_to_sr(exams["dicom"], tmp_path / "refs.dcm", card=card), "ComprehensiveSR")
    dciodvfy(result_to_sr(exams["plain"], tmp_path / "plain.dcm"), "ComprehensiveSR")
    dciodvfy(result_to_sr(exams["dicom"], tmp_path / "anon.dcm", card=card, deidentify=True), "ComprehensiveSR")
    rescan = make_eye(Laterality.UNKNOWN, "ungradable", Urgency.RESCAN, n=6, evidence=())
    mixed = ExamResult(PATIENT, STUDY, exams["plain"].device, [exams["dicom"].eyes[0], rescan])
    dciodvfy(result_to_sr(mixed, tmp_path / "mixed.dcm", card=card), "ComprehensiveSR")


def test_every_accepted_dciodvfy_line_is_explained_in_the_conformance_statement():
    doc = (ROOT / "docs" / "CONFORMANCE.md").read_text()
    for line in sorted(set().union(*ALLOWED.values(), {UNKNOWN_EYE})):
        assert line in doc, f"docs/CONFORMANCE.md does not explain: {line}"


def test_a_missing_dciodvfy_fails_and_says_how_to_install_it(monkeypatch):
    monkeypatch.setenv("PATH", "")
    with pytest.raises(pytest.fail.Exception, match="dicom3tools.*make test"):
        run_tool(["dciodvfy", "x.dcm"])
