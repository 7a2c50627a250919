"""``octscreen listen --aet AET --port N --out DIR [--screen]``: a DICOM storage SCP.

Receives what an OCT device or a PACS pushes (C-STORE) into ``DIR/<study>/<series>/<instance>.dcm``
(``core.net.StorageServer``); runs until Ctrl-C (or SIGTERM). With ``--screen``, each OCT series that
arrives complete (its sender released the association) gets its study screened by the same code as
``octscreen screen`` (``app.cmd_screen.run``), into ``--reports`` (default ``DIR/reports``)
``/<StudyInstanceUID>/``: the PDF report (with ``--dicom`` also the Encapsulated PDF and the Structured
Report), results.csv and results.json. The study is screened again when its other eye arrives, so
the report covers every OCT series of the study received so far.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

# light imports only: pydicom and core.net (pynetdicom) load when the server starts, so that
# `octscreen --help` stays fast
from app import cmd_screen
from app.cmd_pacs import quiet_pynetdicom

__all__ = ["register", "run", "Screening"]

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``listen`` subcommand."""
    p = subparsers.add_parser(
        "listen",
        help="receive DICOM from a device or PACS (storage SCP); --screen screens each OCT series",
        description="Run a DICOM storage SCP: store what senders push into --out, until Ctrl-C. With --screen, "
        "screen each study when an OCT series of it has arrived complete (reports in --reports).",
    )
    p.add_argument("--aet", default="OCTSCREEN", metavar="AET", help="our AE title (senders must call it)")
    p.add_argument("--port", type=int, default=11112, metavar="N", help="TCP port to listen on (default 11112)")
    p.add_argument("--host", default="", metavar="ADDR", help="address to listen on (default: all)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder to store into")
    p.add_argument("--allow", action="append", default=[], metavar="AET", help="accept only these calling AE titles")
    p.add_argument("--screen", action="store_true", help="screen each study as its OCT series arrive")
    p.add_argument("--reports", type=Path, metavar="DIR", help="with --screen: where reports go (DIR/reports)")
    p.add_argument("--model", type=Path, metavar="CARD", help="with --screen: model card (default: the bundled model)")
    p.add_argument(
        "--dicom", action="store_true", help="with --screen: also write each report and result as DICOM (PDF, SR)"
    )
    p.add_argument("--tls-cert", metavar="FILE", help="serve DICOM over TLS with this certificate (PEM)")
    p.add_argument("--tls-key", metavar="FILE", help="the key of --tls-cert")
    p.add_argument("--tls-ca", metavar="FILE", help="with --tls-cert: senders must present a certificate from this CA")
    p.set_defaults(func=run)


def _oct_series_folders(study_folder: Path) -> list[Path]:
    """The series folders of a received study that hold OCT (OPT) instances (first file's header)."""
    import pydicom  # noqa: PLC0415 (heavy: pydicom)

    from core.net.sop import OPT_SOP_CLASS  # noqa: PLC0415 (heavy: pynetdicom, pydicom)

    found = []
    for series in sorted(p for p in study_folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        first = next((f for f in sorted(series.glob("*.dcm")) if not f.name.startswith(".")), None)
        if first is None:
            continue
        try:
            ds = pydicom.dcmread(first, stop_before_pixels=True, specific_tags=["SOPClassUID", "Modality"])
        except Exception:
            continue
        if str(ds.get("SOPClassUID", "")) == OPT_SOP_CLASS or str(ds.get("Modality", "")).upper() == "OPT":
            found.append(series)
    return found


class Screening:
    """The ``on_series`` callback of ``listen --screen``: screens the study of each complete OCT series
    through ``app.cmd_screen.run`` (the code path of ``octscreen screen``)."""

    def __init__(self, store: Path, reports: Path, *, model: Path | None = None, dicom: bool = False):
        self.store, self.reports, self.model, self.dicom = store, reports, model, dicom
        self.results: list[tuple[str, int]] = []  # (study UID, cmd_screen exit code)

    def argv(self, study_uid: str) -> list[str]:
        folders = _oct_series_folders(self.store / study_uid)
        argv = ["screen", *map(str, folders), "--out", str(self.reports / study_uid), "--overwrite"]
        if self.model is not None:
            argv += ["--model", str(self.model)]
        if self.dicom:
            argv.append("--dicom")
        return argv

    def __call__(self, series) -> None:
        if not series.is_oct:
            return
        if not series.complete:
            print(f"not screening series {series.series_uid}: its association was aborted", file=sys.stderr)
            return
        parser = argparse.ArgumentParser(prog="octscreen")
        cmd_screen.register(parser.add_subparsers())
        args = parser.parse_args(self.argv(series.study_uid))
        print(f"screening study {series.study_uid} -> {args.out}", flush=True)
        rc = int(cmd_screen.run(args) or 0)
        sys.stdout.flush()
        self.results.append((series.study_uid, rc))


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted; 0 on a clean stop, 2 when the server cannot start."""
    from core.net import StorageServer, check_ae_title, tls_context  # noqa: PLC0415 (heavy: pynetdicom, pydicom)

    quiet_pynetdicom(getattr(args, "verbose", 0))
    try:
        aet = check_ae_title(args.aet, "our AE title")
        for a in args.allow:
            check_ae_title(a, "--allow AE title")
        tls = None
        if args.tls_cert:
            tls = tls_context(cert_file=args.tls_cert, key_file=args.tls_key, ca_file=args.tls_ca, server=True)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out: Path = args.out
    screening = None
    if args.screen:
        screening = Screening(out, args.reports or out / "reports", model=args.model, dicom=args.dicom)

    def stored(inst) -> None:
        print(f"stored {inst.path.relative_to(out)} from {inst.sender}", flush=True)

    def series_done(series) -> None:
        state = "" if series.complete else " (association aborted: may be incomplete)"
        print(f"received series {series.series_uid} ({len(series.files)} instance(s)) from {series.sender}{state}")
        sys.stdout.flush()
        if screening is not None:
            screening(series)

    server = StorageServer(
        out,
        aet=aet,
        port=args.port,
        host=args.host,
        tls=tls,
        on_series=series_done,
        on_stored=stored,
        allowed_aets=args.allow or None,
    )
    try:
        server.start()
    except OSError as e:
        print(
            f"error: cannot listen on port {args.port} ({e.strerror or e}); is another program using it?",
            file=sys.stderr,
        )
        return 2
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"listening as {aet} on {args.host or '*'}:{server.port}, storing into {out} (Ctrl-C stops)", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.stop()
    for e in server.store.rejected:
        print(f"refused: {e}", file=sys.stderr)
    print(
        f"stopped: {len(server.store.stored)} instance(s) stored, {len(server.store.rejected)} refused",
        file=sys.stderr,
    )
    return 0
