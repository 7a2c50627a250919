"""Who we talk to: a DICOM node's settings (``NodeSettings``) and the ``AET@HOST:PORT`` notation
(the dcm4che convention) that the CLI and the settings file use.

Timeouts (seconds): ``connect_timeout`` for the TCP connection, ``acse_timeout`` for the answer to
an association request, ``dimse_timeout`` for the answer to each request (for a retrieve: between
two answers), ``network_timeout`` for an idle association. ``tls`` is an ``ssl.SSLContext`` (see
:func:`tls_context`); None talks plain TCP. ``retries`` repeats an association attempt that could
not connect (or that the node rejected as transient) after ``retry_delay`` seconds, doubling.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass, replace
from pathlib import Path

__all__ = ["NodeSettings", "parse_node", "check_ae_title", "tls_context", "DEFAULT_AET"]

DEFAULT_AET = "OCTSCREEN"

_NODE = re.compile(r"^(?P<aet>[^@]+)@(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(?P<port>[0-9]{1,5})$")


def check_ae_title(aet: str, what: str = "AE title") -> str:
    """``aet`` if it is a valid DICOM AE title (1-16 characters of ISO 646 without backslash or control
    characters, not only spaces), else ``ValueError`` saying why."""
    text = str(aet)
    if not text.strip():
        raise ValueError(f"{what} {text!r} is empty")
    if len(text) > 16:
        raise ValueError(f"{what} {text!r} is longer than 16 characters")
    if any(c == "\\" or not 32 <= ord(c) < 127 for c in text):
        raise ValueError(f"{what} {text!r} may hold only printable ASCII characters other than backslash")
    return text.strip()


@dataclass(frozen=True)
class NodeSettings:
    """A remote DICOM node and how we talk to it. ``str(node)`` is ``AET@HOST:PORT``."""

    aet: str
    host: str
    port: int
    our_aet: str = DEFAULT_AET
    connect_timeout: float = 10.0
    acse_timeout: float = 30.0
    dimse_timeout: float = 60.0
    network_timeout: float = 60.0
    tls: ssl.SSLContext | None = None
    retries: int = 0
    retry_delay: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "aet", check_ae_title(self.aet, "the node's AE title"))
        object.__setattr__(self, "our_aet", check_ae_title(self.our_aet, "our AE title"))
        if not self.host:
            raise ValueError("the node's host is empty")
        if not 1 <= int(self.port) <= 65535:
            raise ValueError(f"port {self.port} is outside 1..65535")
        object.__setattr__(self, "port", int(self.port))
        for name in ("connect_timeout", "acse_timeout", "dimse_timeout", "network_timeout"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.retries < 0:
            raise ValueError(f"retries must be 0 or more, got {self.retries}")

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.aet}@{host}:{self.port}"

    def with_(self, **changes) -> NodeSettings:
        """A copy with some fields changed (``dataclasses.replace``)."""
        return replace(self, **changes)


def parse_node(text: str, **settings) -> NodeSettings:
    """``AET@HOST:PORT`` (an IPv6 host in brackets: ``PACS@[::1]:104``) as ``NodeSettings``;
    ``settings`` sets the other fields (our_aet, timeouts, tls, retries). ``ValueError`` says what
    is wrong with the text."""
    m = _NODE.match(str(text).strip())
    if not m:
        raise ValueError(
            f"{text!r} is not a DICOM node; write it AET@HOST:PORT, e.g. ORTHANC@127.0.0.1:4242 "
            "(AE title, host name or address, port)"
        )
    host = m["host"].strip("[]")
    return NodeSettings(aet=m["aet"], host=host, port=int(m["port"]), **settings)


def tls_context(
    *,
    ca_file: str | Path | None = None,
    cert_file: str | Path | None = None,
    key_file: str | Path | None = None,
    server: bool = False,
    check_hostname: bool = True,
) -> ssl.SSLContext:
    """An ``ssl.SSLContext`` for DICOM TLS (PS3.15 B.1 / BCP 195: TLS 1.2 or newer).

    Client side (``server=False``): verifies the node's certificate against ``ca_file`` (default: the
    system's trusted CAs) and, with ``check_hostname``, its host name; ``cert_file``/``key_file`` is our
    client certificate when the node asks for one. Server side: ``cert_file``/``key_file`` is required;
    with ``ca_file`` the peer must present a certificate signed by it (mutual TLS)."""
    purpose = ssl.Purpose.CLIENT_AUTH if server else ssl.Purpose.SERVER_AUTH
    ctx = ssl.create_default_context(purpose, cafile=str(ca_file) if ca_file else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if server:
        if not cert_file:
            raise ValueError("a TLS server needs a certificate (cert_file) and its key (key_file)")
        if ca_file:
            ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.check_hostname = check_hostname
    if cert_file:
        ctx.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
    return ctx
