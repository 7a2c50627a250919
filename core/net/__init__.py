"""DICOM networking on pynetdicom: talk to a PACS or an OCT device.

- ``NodeSettings`` / ``parse_node('AET@HOST:PORT')`` / ``tls_context``: who we talk to, and how (node.py)
- ``echo``: verification (C-ECHO); ``find_patients`` / ``find_studies`` / ``find_series``: C-FIND (query.py)
- ``retrieve``: C-GET, or C-MOVE to our own storage SCP, all-or-nothing into a folder (retrieve.py)
- ``send_files``: C-STORE of files (our Encapsulated PDF reports, Secondary Capture overlays, OPT) (store.py)
- ``StorageServer`` / ``listen``: our storage SCP; ``on_series`` for each completed series (scp.py)
- ``core.net.web``: the same echo / find / retrieve / send over DICOMweb (QIDO-RS, WADO-RS, STOW-RS) for a
  node written as a URL (imported on its own: it loads requests and dicomweb-client)

Every failure is a ``core.errors.NetworkError`` subclass whose message names the node
(``AET@HOST:PORT``) and says what happened; instances a node sends that we refuse are
``InputError``s naming the node and the instance. SOP classes and transfer syntaxes: sop.py and
docs/CONFORMANCE.md.
"""

from core.net.node import DEFAULT_AET, NodeSettings, check_ae_title, parse_node, tls_context
from core.net.query import (
    PatientMatch,
    SeriesMatch,
    StudyMatch,
    echo,
    find_patients,
    find_series,
    find_studies,
    parse_date_range,
)
from core.net.retrieve import RetrieveResult, retrieve
from core.net.scp import SeriesReceived, StorageServer, listen
from core.net.store import InstanceStore, SentFile, StoredInstance, send_files

__all__ = [
    "DEFAULT_AET",
    "NodeSettings",
    "check_ae_title",
    "parse_node",
    "tls_context",
    "echo",
    "find_patients",
    "find_studies",
    "find_series",
    "parse_date_range",
    "PatientMatch",
    "StudyMatch",
    "SeriesMatch",
    "retrieve",
    "RetrieveResult",
    "send_files",
    "SentFile",
    "InstanceStore",
    "StoredInstance",
    "StorageServer",
    "SeriesReceived",
    "listen",
]
