"""A real Orthanc PACS for the DICOM networking tests, started on loopback with a generated
configuration and stopped by its pid.

``start_orthanc(folder, modalities={...})`` writes ``folder/orthanc.json`` (DicomAet, DicomPort and
HttpPort on free loopback ports, the given modalities registered in DicomModalities, storage and
index inside ``folder``, no remote access, no authentication, the called AE title checked), runs
``Orthanc orthanc.json`` as a subprocess (no systemd) and waits until its REST API answers. A missing
Orthanc binary fails the test with a message saying how to install it (never a skip). With
``dicomweb=True`` Orthanc also loads its DICOMweb plugin (Debian package orthanc-dicomweb) and serves
QIDO-RS, WADO-RS and STOW-RS under ``server.dicomweb_url``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ORTHANC_BINARY = "Orthanc"
ORTHANC_AET = "ORTHANC"
DICOMWEB_PLUGIN = "libOrthancDicomWeb.so"


def free_port() -> int:
    """A TCP port nothing listens on now (on loopback)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def orthanc_binary() -> str:
    found = shutil.which(ORTHANC_BINARY) or next(
        (p for p in ("/usr/sbin/Orthanc", "/usr/bin/Orthanc") if os.access(p, os.X_OK)), None
    )
    if found is None:
        pytest.fail(
            "Orthanc is not installed: the DICOM networking tests run against a real Orthanc PACS; "
            "install the Debian package orthanc (make test does: it runs 'make sysdeps')",
            pytrace=False,
        )
    return found


def dicomweb_plugin() -> str:
    """The DICOMweb plugin's path; a missing one fails the test saying how to install it."""
    for folder in ("/usr/share/orthanc/plugins", "/usr/lib/orthanc", "/usr/local/share/orthanc/plugins"):
        path = Path(folder) / DICOMWEB_PLUGIN
        if path.exists():
            return str(path)
    pytest.fail(
        "Orthanc's DICOMweb plugin is not installed: the DICOMweb tests run against a real Orthanc; install "
        "the Debian package orthanc-dicomweb (make test does: it runs 'make sysdeps')",
        pytrace=False,
    )


@dataclass
class OrthancServer:
    folder: Path
    dicom_port: int
    http_port: int
    process: subprocess.Popen
    aet: str = ORTHANC_AET
    modalities: dict[str, tuple[str, int]] = field(default_factory=dict)

    @property
    def node_text(self) -> str:
        return f"{self.aet}@127.0.0.1:{self.dicom_port}"

    @property
    def dicomweb_url(self) -> str:
        """The DICOMweb base URL (with ``start_orthanc(..., dicomweb=True)``)."""
        return f"http://127.0.0.1:{self.http_port}/dicom-web"

    def node(self, **settings):
        from core.net import parse_node

        settings.setdefault("acse_timeout", 10.0)
        settings.setdefault("dimse_timeout", 20.0)
        return parse_node(self.node_text, **settings)

    # -- REST ------------------------------------------------------------------------------------
    def rest(self, path: str, data: bytes | str | None = None, method: str | None = None) -> bytes:
        body = data.encode() if isinstance(data, str) else data
        req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=body, method=method)
        with urllib.request.urlopen(req, timeout=30) as rsp:
            return rsp.read()

    def rest_json(self, path: str, data: object = None, method: str | None = None):
        body = None if data is None else json.dumps(data)
        return json.loads(self.rest(path, body, method))

    def lookup(self, uid: str) -> str:
        """Orthanc's id of the resource with this DICOM UID."""
        found = json.loads(self.rest("/tools/lookup", uid))  # (POST of the bare UID)
        assert found, f"Orthanc holds nothing with UID {uid}"
        return found[0]["ID"]

    def instance_file(self, sop_uid: str) -> bytes:
        return self.rest(f"/instances/{self.lookup(sop_uid)}/file")

    def log_tail(self, n: int = 3000) -> str:
        try:
            return (self.folder / "orthanc.log").read_text(errors="replace")[-n:]
        except OSError:
            return "(no log)"

    # -- life ------------------------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL by pid (a crash, as far as its peers can tell)."""
        if self.alive:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        """SIGTERM by pid, SIGKILL if it does not end within 10 s."""
        if self.alive:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def start_orthanc(
    folder: Path,
    modalities: dict[str, tuple[str, int]] | None = None,
    *,
    dicomweb: bool = False,
    tls: tuple[Path, Path] | None = None,
) -> OrthancServer:
    """Write a configuration into ``folder`` and start Orthanc with it; ``modalities`` maps a name to
    (AE title, port) of a DICOM node on 127.0.0.1 that Orthanc may talk to (C-MOVE destinations, push);
    ``dicomweb``: load the DICOMweb plugin (``server.dicomweb_url``); ``tls``: (certificate, key) of a
    self-signed certificate: Orthanc's DICOM port then talks TLS only, requires that certificate from
    its peers, and connects to every modality over TLS (Orthanc >= 1.9)."""
    binary = orthanc_binary()
    plugins = [dicomweb_plugin()] if dicomweb else []
    folder.mkdir(parents=True, exist_ok=True)
    dicom_port, http_port = free_port(), free_port()
    modalities = dict(modalities or {})
    config = {
        "Name": "octscreen-test",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"),
        "DicomAet": ORTHANC_AET,
        "DicomPort": dicom_port,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": True,
        "DicomModalities": {name: [aet, "127.0.0.1", port] for name, (aet, port) in modalities.items()},
        "DicomAssociationCloseDelay": 0,
        "DicomScuTimeout": 10,
        "Plugins": plugins,
        "DicomWeb": {"Enable": bool(dicomweb), "Root": "/dicom-web/"},
        "SaveJobs": False,
        "StorageCompression": False,
    }
    if tls is not None:
        cert, key = tls
        config |= {
            "DicomTlsEnabled": True,
            "DicomTlsCertificate": str(cert),
            "DicomTlsPrivateKey": str(key),
            "DicomTlsTrustedCertificates": str(cert),
            "DicomTlsRemoteCertificateRequired": True,
            "DicomModalities": {
                name: {"AET": aet, "Host": "127.0.0.1", "Port": port, "UseDicomTls": True}
                for name, (aet, port) in modalities.items()
            },
        }
    cfg = folder / "orthanc.json"
    cfg.write_text(json.dumps(config, indent=2))
    proc = subprocess.Popen(
        [binary, str(cfg), f"--logfile={folder / 'orthanc.log'}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    server = OrthancServer(folder, dicom_port, http_port, proc, modalities=modalities)
    deadline = time.monotonic() + 30
    while True:
        if not server.alive:
            pytest.fail(
                f"Orthanc exited at start (code {proc.returncode}); its log:\n{server.log_tail()}", pytrace=False
            )
        try:
            server.rest("/system")
            return server
        except OSError:
            if time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"Orthanc did not answer on port {http_port} within 30 s:\n{server.log_tail()}")
            time.sleep(0.05)
