"""``octscreen pacs echo|find|get|send NODE ...``: talk to a PACS (``core.net``, on pynetdicom).

NODE is written ``AET@HOST:PORT`` (the dcm4che convention), e.g. ``ORTHANC@pacs.example.org:4242``,
or as a DICOMweb base URL, e.g. ``https://pacs.example.org/dicom-web`` (``core.net.web``: QIDO-RS for
echo and find, WADO-RS for get, STOW-RS for send).

    octscreen pacs echo NODE                      C-ECHO: is the node there, and does it accept us?
    octscreen pacs find NODE [--patient-id ID] [--patient-name N] [--date FROM-TO] [--modality OPT]
                                                  C-FIND: one line per study, its StudyInstanceUID first
    octscreen pacs get NODE --study UID --out DIR [--move [--port N]]
                                                  C-GET (or C-MOVE to our own storage SCP) into DIR
    octscreen pacs send NODE FILE...              C-STORE files (reports, overlays, OPT) to the node

Exit codes: 0 done, 1 done with problems (some file or instance failed), 2 failed (nothing done).
"""

from __future__ import annotations

import argparse
import logging
import sys

# light imports only: core.net (pynetdicom, pydicom) and tqdm load when an action runs, so that
# `octscreen --help` stays fast
from core.errors import Cancelled, NetworkError

__all__ = ["register", "node_from_args", "add_node_options", "quiet_pynetdicom", "api_for"]

log = logging.getLogger(__name__)


def add_node_options(p: argparse.ArgumentParser, *, node: bool = True) -> None:
    """NODE and the options every ``pacs`` action shares (our AE title, timeouts, retries, TLS)."""
    if node:
        p.add_argument(
            "node",
            metavar="NODE",
            help="the DICOM node as AET@HOST:PORT (e.g. ORTHANC@127.0.0.1:4242) or a DICOMweb URL "
            "(e.g. http://127.0.0.1:8042/dicom-web)",
        )
    p.add_argument("--aet", default="OCTSCREEN", metavar="AET", help="our AE title (default OCTSCREEN)")
    p.add_argument(
        "--timeout", type=float, default=30.0, metavar="S", help="seconds to wait for each answer (default 30)"
    )
    p.add_argument(
        "--retries",
        type=int,
        default=1,
        metavar="N",
        help="try again N times when the node cannot be reached (default 1, 0 = never)",
    )
    p.add_argument(
        "--tls", action="store_true", help="talk DICOM over TLS (the node's certificate is checked; https URLs always)"
    )
    p.add_argument("--tls-ca", metavar="FILE", help="with --tls: CA certificate(s) to trust (default: the system's)")
    p.add_argument("--tls-cert", metavar="FILE", help="with --tls: our client certificate (PEM), if the node asks")
    p.add_argument("--tls-key", metavar="FILE", help="with --tls: the key of --tls-cert")


def node_from_args(args: argparse.Namespace):
    """The ``NodeSettings`` (or, for a URL, the ``core.net.web.WebNode``) the arguments describe
    (``ValueError`` says what is wrong)."""
    from core.net import parse_node, tls_context  # noqa: PLC0415 (heavy: pynetdicom, pydicom)
    from core.net.web import is_web_node, parse_web_node  # noqa: PLC0415 (heavy: pynetdicom, pydicom)

    if is_web_node(args.node):
        if args.tls and not str(args.node).lower().startswith("https://"):
            raise ValueError(f"--tls with {args.node}: write the URL with https://")
        return parse_web_node(
            args.node,
            timeout=float(args.timeout),
            retries=max(0, int(args.retries)),
            ca_file=args.tls_ca,
            cert_file=args.tls_cert,
            key_file=args.tls_key,
        )
    tls = None
    if args.tls or args.tls_ca or args.tls_cert:
        tls = tls_context(ca_file=args.tls_ca, cert_file=args.tls_cert, key_file=args.tls_key)
    t = float(args.timeout)
    return parse_node(
        args.node,
        our_aet=args.aet,
        connect_timeout=min(t, 10.0),
        acse_timeout=t,
        dimse_timeout=t,
        network_timeout=max(t, 60.0),
        retries=max(0, int(args.retries)),
        tls=tls,
    )


def api_for(node):
    """The module whose echo / find_* / retrieve / send_files talk to ``node``: ``core.net.web`` for a
    DICOMweb URL, ``core.net`` (DIMSE) otherwise; and the names of its services for messages."""
    import core.net  # noqa: PLC0415 (heavy: pynetdicom, pydicom)
    from core.net import web  # noqa: PLC0415 (heavy: pynetdicom, pydicom)

    if isinstance(node, web.WebNode):
        return web, {"echo": "QIDO-RS", "find": "QIDO-RS", "get": "WADO-RS", "send": "STOW-RS"}
    return core.net, {"echo": "C-ECHO", "find": "C-FIND", "get": "C-GET", "send": "C-STORE"}


def quiet_pynetdicom(verbose: int) -> None:
    """pynetdicom logs every failure itself at ERROR level; our messages say it better. Its log shows
    with -vv only."""
    logging.getLogger("pynetdicom").setLevel(logging.DEBUG if verbose >= 2 else logging.CRITICAL)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``pacs`` subcommand and its actions."""
    p = subparsers.add_parser(
        "pacs",
        help="talk to a PACS: echo, find studies, get (C-GET / C-MOVE) a study, send files",
        description="DICOM networking with a PACS or another DICOM node, written AET@HOST:PORT, or with a "
        "DICOMweb service, written as its base URL (QIDO-RS, WADO-RS, STOW-RS).",
    )
    sub = p.add_subparsers(dest="pacs_command", metavar="ACTION")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    e = sub.add_parser("echo", help="C-ECHO: check that the node answers and accepts our AE title")
    add_node_options(e)
    e.set_defaults(func=run_echo)

    f = sub.add_parser(
        "find",
        help="C-FIND: list studies (one line each, StudyInstanceUID first)",
        description="Query the node. Prints one tab-separated line per match: for studies StudyInstanceUID, "
        "date, patient id, patient name, modalities, series/instances, description. Wildcards * and ? work.",
    )
    add_node_options(f)
    f.add_argument("--patient-id", default="", metavar="ID", help="patient id (wildcards allowed)")
    f.add_argument("--patient-name", default="", metavar="N", help="patient name, e.g. 'DOE^J*'")
    f.add_argument("--date", default="", metavar="FROM-TO", help="study date YYYYMMDD or range YYYYMMDD-YYYYMMDD")
    f.add_argument("--modality", default="", metavar="MOD", help="modality in the study, e.g. OPT")
    f.add_argument(
        "--level",
        choices=["patient", "study", "series"],
        default="study",
        help="what to list (series: needs --study)",
    )
    f.add_argument("--study", default="", metavar="UID", help="the study (for --level series, or one study)")
    f.add_argument("--limit", type=int, default=None, metavar="N", help="at most N matches")
    f.set_defaults(func=run_find)

    g = sub.add_parser(
        "get",
        help="retrieve a study into a folder (C-GET; --move for C-MOVE to our own storage SCP)",
        description="Retrieve a study (or one series) into DIR/<study>/<series>/<instance>.dcm. All or "
        "nothing: an interrupted retrieve keeps nothing. With --move the node sends the study to our AE "
        "title (--aet) at this computer's port --port, which the node must know; with --tls too, our storage "
        "SCP talks TLS with --tls-cert / --tls-key as its certificate (and, with --tls-ca, accepts only a "
        "node whose certificate that CA signed).",
    )
    add_node_options(g)
    g.add_argument("--study", required=True, metavar="UID", help="StudyInstanceUID (see pacs find)")
    g.add_argument("--series", default=None, metavar="UID", help="only this series of the study")
    g.add_argument("--out", required=True, metavar="DIR", help="folder to store into (created if needed)")
    g.add_argument("--move", action="store_true", help="C-MOVE instead of C-GET")
    g.add_argument("--port", type=int, default=11113, metavar="N", help="with --move: our storage port (11113)")
    g.add_argument("--listen-host", default="", metavar="ADDR", help="with --move: address to listen on (all)")
    g.set_defaults(func=run_get)

    s = sub.add_parser("send", help="C-STORE files (or folders of them) to the node")
    add_node_options(s)
    s.add_argument("files", nargs="+", metavar="FILE", help="DICOM files or folders (sent recursively)")
    s.set_defaults(func=run_send)


def _err(msg: object) -> None:
    print(f"error: {msg}", file=sys.stderr)


def _node(args):
    quiet_pynetdicom(getattr(args, "verbose", 0))
    try:
        return node_from_args(args)
    except (ValueError, OSError) as e:
        _err(e)
        return None


def run_echo(args: argparse.Namespace) -> int:
    node = _node(args)
    if node is None:
        return 2
    api, names = api_for(node)
    try:
        seconds = api.echo(node)
    except NetworkError as e:
        _err(e)
        return 2
    who = f" (our AE title {node.our_aet})" if hasattr(node, "our_aet") else ""
    print(f"{node}: {names['echo']} answered in {seconds * 1000:.0f} ms{who}")
    return 0


def _clean(text: str) -> str:
    return " ".join(str(text).split())


def run_find(args: argparse.Namespace) -> int:
    node = _node(args)
    if node is None:
        return 2
    api, _names = api_for(node)
    find_patients, find_series, find_studies = api.find_patients, api.find_series, api.find_studies
    try:
        if args.level == "patient":
            rows = [
                [m.patient_id, m.patient_name, m.birth_date, m.sex, "" if m.n_studies is None else str(m.n_studies)]
                for m in find_patients(
                    node, patient_id=args.patient_id, patient_name=args.patient_name, limit=args.limit
                )
            ]
            what = "patient(s)"
        elif args.level == "series":
            if not args.study:
                _err("--level series needs --study UID")
                return 2
            rows = [
                [
                    m.series_uid,
                    m.modality,
                    "" if m.series_number is None else str(m.series_number),
                    m.laterality,
                    "" if m.n_instances is None else str(m.n_instances),
                    m.description,
                ]
                for m in find_series(node, args.study, modality=args.modality, limit=args.limit)
            ]
            what = "series"
        else:
            rows = [
                [
                    m.study_uid,
                    m.study_date,
                    m.patient_id,
                    m.patient_name,
                    "/".join(m.modalities),
                    f"{'' if m.n_series is None else m.n_series}/{'' if m.n_instances is None else m.n_instances}",
                    m.description,
                ]
                for m in find_studies(
                    node,
                    patient_id=args.patient_id,
                    patient_name=args.patient_name,
                    date=args.date,
                    modality=args.modality,
                    study_uid=args.study,
                    limit=args.limit,
                )
            ]
            what = "study(ies)"
    except ValueError as e:
        _err(e)
        return 2
    except NetworkError as e:
        _err(e)
        return 2
    for row in rows:
        print("\t".join(_clean(c) for c in row))
    print(f"{len(rows)} {what} on {node}", file=sys.stderr)
    return 0


def move_tls(args: argparse.Namespace, node) -> dict:
    """``retrieve``'s ``move_tls`` for ``pacs get --move --tls``: our storage SCP's TLS server context,
    from our certificate and key (``--tls-cert`` / ``--tls-key``) and, with ``--tls-ca``, the CA that
    must have signed the node's certificate. Nothing without ``--move`` or TLS (``retrieve`` then
    refuses a TLS node's C-MOVE with ``MOVE_OVER_TLS``)."""
    if not (args.move and getattr(node, "tls", None) is not None and args.tls_cert):
        return {}
    from core.net import tls_context  # noqa: PLC0415 (heavy: pynetdicom, pydicom)

    ctx = tls_context(server=True, ca_file=args.tls_ca, cert_file=args.tls_cert, key_file=args.tls_key)
    return {"move_tls": ctx}


def run_get(args: argparse.Namespace) -> int:
    from tqdm import tqdm  # noqa: PLC0415 (start-up: tqdm, +40 ms on octscreen --help)

    node = _node(args)
    if node is None:
        return 2
    api, _names = api_for(node)
    if args.move and _names["get"] == "WADO-RS":
        _err(f"--move (C-MOVE) needs a DICOM node written AET@HOST:PORT; {node} is DICOMweb (WADO-RS)")
        return 2
    with tqdm(unit="instance", desc="retrieving", disable=None, file=sys.stderr) as bar:

        def progress(done: int, total: int, _msg: str) -> None:
            bar.total = total
            bar.update(done - bar.n)

        try:
            result = api.retrieve(
                node,
                args.study,
                args.out,
                series_uid=args.series,
                move=args.move,
                move_port=args.port,
                move_host=args.listen_host,
                progress=progress,
                **move_tls(args, node),
            )
        except (ValueError, OSError) as e:
            _err(e)
            return 2
        except NetworkError as e:
            _err(e)
            return 2
        except Cancelled:
            _err("cancelled; nothing was kept")
            return 2
    for line in result.problems:
        print(f"warning: {line}", file=sys.stderr)
    new = len(result.files) - result.already_there
    extra = f", {result.already_there} already there" if result.already_there else ""
    print(f"retrieved {new} instance(s) of study {args.study} into {args.out} ({result.method}{extra})")
    return 1 if result.problems else 0


def run_send(args: argparse.Namespace) -> int:
    node = _node(args)
    if node is None:
        return 2
    api, _names = api_for(node)
    try:
        results = api.send_files(node, args.files)
    except (ValueError, NetworkError) as e:
        _err(e)
        return 2
    n_ok = 0
    for r in results:
        if r.ok:
            n_ok += 1
            print(f"sent {r.path}")
        else:
            _err(r.error)
    print(f"{n_ok} of {len(results)} file(s) stored on {node}", file=sys.stderr)
    if not results or n_ok == 0:
        return 2
    return 0 if n_ok == len(results) else 1
