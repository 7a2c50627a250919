"""Persistent user settings (QSettings, organisation "OCT Screen"): model card, report institution
and logo, export folder, threads, the signing clinician and the audit trail's place, recent files,
the window layout, and the PACS nodes the GUI queries and sends to (``PacsNode``, ``pacs_nodes``; the
dialogs are app/pacs_dialog.py)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings, QStandardPaths

from app.secrets import KeyringSecrets, MemorySecrets, Secrets, secret_key
from core.urls import shown_url, split_credentials, with_credentials

__all__ = ["APPLICATION", "DICOMWEB", "DIMSE", "MAX_RECENT", "NODE_KINDS", "ORGANISATION", "AppSettings", "PacsNode"]

ORGANISATION = "OCT Screen"
APPLICATION = "OCT Screen"
MAX_RECENT = 10

DIMSE = "DIMSE"
DICOMWEB = "DICOMweb"
NODE_KINDS = (DIMSE, DICOMWEB)


@dataclass(frozen=True)
class PacsNode:
    """A PACS (or other DICOM node) as the settings keep it: the user's name for it, its kind, for
    DIMSE the node's AE title, host and port (and our AE title), for DICOMweb its base URL; seconds
    to wait for each answer; ``move_port`` > 0 retrieves by C-MOVE to our storage SCP on that port
    (the node must know our AE title, this computer and the port), 0 by C-GET. ``tls`` talks DIMSE
    over TLS (a DICOMweb node uses TLS when its URL is https); ``tls_ca`` is the CA certificate file
    to trust instead of the system's, ``tls_cert`` / ``tls_key`` our client certificate and its key
    when the node asks for one (both kinds). ``user`` / ``password``: HTTP Basic authentication of a
    DICOMweb node (``web_url`` puts them into the URL; the settings keep the user, and the password
    goes to the system keyring, ``AppSettings.secrets``, never into the settings file). Checked when
    used (``app.pacs_dialog.connection``), not here: a half-typed node can still be kept and edited."""

    name: str
    kind: str = DIMSE
    aet: str = ""
    host: str = ""
    port: int = 104
    url: str = ""
    our_aet: str = "OCTSCREEN"
    timeout: float = 30.0
    move_port: int = 0
    tls: bool = False
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    user: str = ""
    password: str = field(default="", repr=False)  # never in a log line that prints the node

    @property
    def address(self) -> str:
        """'AET@HOST:PORT' (the CLI's notation) or the DICOMweb URL without its user and password
        (the address is shown in lists and messages)."""
        if self.kind == DICOMWEB:
            return shown_url(self.url)
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.aet}@{host}:{self.port}"

    @property
    def web_url(self) -> str:
        """The DICOMweb URL with ``user`` and ``password`` in it, as ``core.net.web`` takes it."""
        return with_credentials(self.url, self.user, self.password)

    @property
    def label(self) -> str:
        """'Name (address)', how dialogs and messages name the node."""
        return f"{self.name} ({self.address})"


#: the settings keys of a node, one per PacsNode field but the password (``AppSettings.secrets`` keeps it)
_NODE_KEYS = tuple(f.name for f in fields(PacsNode) if f.name != "password")


def _bool(value: object) -> bool:
    """A QSettings boolean: INI files give it back as the string 'true' / 'false'."""
    return str(value).strip().lower() in ("true", "1")


def _float(value: object, default: float) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default


class AppSettings:
    """Typed access to the app's QSettings.

    ``AppSettings()`` uses the platform's native store, and the system keyring for DICOMweb passwords
    (``secrets``); tests pass ``QSettings(path, QSettings.IniFormat)`` so nothing leaks into the
    user's settings, and with it the passwords stay in memory unless ``secrets`` is given too.
    """

    def __init__(self, qsettings: QSettings | None = None, secrets: Secrets | None = None) -> None:
        self.q = qsettings if qsettings is not None else QSettings(ORGANISATION, APPLICATION)
        if secrets is None:
            secrets = KeyringSecrets() if qsettings is None else MemorySecrets("a settings file of its own")
        self.secrets: Secrets = secrets

    def _str(self, key: str, default: str = "") -> str:
        value = self.q.value(key, default)
        return str(value) if value is not None else default

    # -- model and report --------------------------------------------------------------------
    @property
    def model_card(self) -> str:
        """Path of the model card to screen with; '' means the bundled demo model."""
        return self._str("model/card")

    @model_card.setter
    def model_card(self, value: str | Path) -> None:
        self.q.setValue("model/card", str(value) if value else "")

    @property
    def threads(self) -> int:
        """CPU threads for the model (0: let the runtime decide)."""
        try:
            return max(0, int(self.q.value("model/threads", 0)))
        except (TypeError, ValueError):
            return 0

    @threads.setter
    def threads(self, value: int) -> None:
        self.q.setValue("model/threads", int(value))

    @property
    def institution(self) -> str:
        """Institution name printed in the report header."""
        return self._str("report/institution")

    @institution.setter
    def institution(self, value: str) -> None:
        self.q.setValue("report/institution", value)

    @property
    def logo(self) -> str:
        """Path of the institution logo for reports ('' for none)."""
        return self._str("report/logo")

    @logo.setter
    def logo(self, value: str | Path) -> None:
        self.q.setValue("report/logo", str(value) if value else "")

    @property
    def export_dir(self) -> str:
        """Default folder for exported reports ('' : the home folder)."""
        return self._str("report/export_dir")

    @export_dir.setter
    def export_dir(self, value: str | Path) -> None:
        self.q.setValue("report/export_dir", str(value) if value else "")

    @property
    def deidentify(self) -> bool:
        """Last choice of the export dialog's de-identify option."""
        return _bool(self.q.value("report/deidentify", "false"))

    @deidentify.setter
    def deidentify(self, value: bool) -> None:
        self.q.setValue("report/deidentify", bool(value))

    @property
    def dicom(self) -> bool:
        """Last choice of the export dialog's DICOM Encapsulated PDF option."""
        return _bool(self.q.value("report/dicom", "false"))

    @dicom.setter
    def dicom(self, value: bool) -> None:
        self.q.setValue("report/dicom", bool(value))

    # -- sign-off ----------------------------------------------------------------------------
    @property
    def clinician(self) -> str:
        """The signing clinician's name, remembered from the last sign-off."""
        return self._str("signoff/clinician")

    @clinician.setter
    def clinician(self, value: str) -> None:
        self.q.setValue("signoff/clinician", value.strip())

    @property
    def operator(self) -> str:
        """Who takes the scans here: the export dialog's operator, remembered."""
        return self._str("report/operator")

    @operator.setter
    def operator(self, value: str) -> None:
        self.q.setValue("report/operator", value.strip())

    @property
    def audit_path(self) -> Path:
        """Where the sign-off audit trail (``core.audit``) lives: the ``signoff/audit_path`` setting; by
        default the user's data folder, or beside the settings file when settings are an ini file (a
        portable install, and every test's private settings)."""
        chosen = self._str("signoff/audit_path")
        if chosen:
            return Path(chosen)
        if self.q.format() == QSettings.Format.IniFormat and self.q.fileName():
            return Path(self.q.fileName()).with_suffix(".audit.sqlite")
        folder = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation)
        return Path(folder or Path.home() / ".octscreen") / "audit.sqlite"

    @audit_path.setter
    def audit_path(self, value: str | Path) -> None:
        self.q.setValue("signoff/audit_path", str(value) if value else "")

    # -- recent files ------------------------------------------------------------------------
    @property
    def recent(self) -> list[str]:
        """Recently opened files and folders, newest first."""
        value = self.q.value("files/recent", [])
        if isinstance(value, str):
            value = [value] if value else []
        return [str(v) for v in (value or [])]

    def add_recent(self, path: str | Path) -> None:
        """Put ``path`` at the top of the recent list (no duplicates, at most MAX_RECENT)."""
        p = str(Path(path).resolve())
        items = [p] + [r for r in self.recent if r != p]
        self.q.setValue("files/recent", items[:MAX_RECENT])

    def clear_recent(self) -> None:
        """Forget the recent files."""
        self.q.setValue("files/recent", [])

    # -- PACS nodes --------------------------------------------------------------------------
    @property
    def pacs_nodes(self) -> list[PacsNode]:
        """The PACS nodes, in the user's order (entries without a name are skipped); each DICOMweb
        password from ``secrets``. A password an older version left in the settings file (its own
        key, or in the URL) is moved to ``secrets`` and removed from the file."""
        nodes: list[PacsNode] = []
        moved = False
        n = self.q.beginReadArray("pacs/nodes")
        try:
            for i in range(n):
                self.q.setArrayIndex(i)
                name = self._str("name").strip()
                if not name:
                    continue
                kind = self._str("kind", DIMSE)
                # a URL written with user:password@ (older settings) gives its credentials to the fields
                url, url_user, url_password = split_credentials(self._str("url"))
                user = self._str("user") or url_user
                old_password = self._str("password") or url_password
                moved = moved or bool(old_password)
                nodes.append(
                    PacsNode(
                        name=name,
                        kind=kind if kind in NODE_KINDS else DIMSE,
                        aet=self._str("aet"),
                        host=self._str("host"),
                        port=int(_float(self.q.value("port", 104), 104)),
                        url=url,
                        our_aet=self._str("our_aet", "OCTSCREEN"),
                        timeout=_float(self.q.value("timeout", 30.0), 30.0),
                        move_port=int(_float(self.q.value("move_port", 0), 0)),
                        tls=_bool(self.q.value("tls", False)),
                        tls_ca=self._str("tls_ca"),
                        tls_cert=self._str("tls_cert"),
                        tls_key=self._str("tls_key"),
                        user=user,
                        password=old_password or (self.secrets.get(secret_key(user, url)) if user else ""),
                    )
                )
        finally:
            self.q.endArray()
        if moved:
            self.pacs_nodes = nodes
        return nodes

    @pacs_nodes.setter
    def pacs_nodes(self, nodes: list[PacsNode]) -> None:
        kept = {secret_key(n.user, n.url): n.password for n in nodes if n.user and n.password}
        for key in self._stored_logins():
            if key not in kept:  # a password cleared, or its node removed
                self.secrets.delete(key)
        for key, password in kept.items():
            self.secrets.set(key, password)
        self.q.remove("pacs/nodes")
        self.q.beginWriteArray("pacs/nodes", len(nodes))
        try:
            for i, node in enumerate(nodes):
                self.q.setArrayIndex(i)
                for key in _NODE_KEYS:
                    self.q.setValue(key, getattr(node, key))
        finally:
            self.q.endArray()

    def _stored_logins(self) -> set[str]:
        """The ``secret_key`` of every node in the settings file that has a user."""
        keys = set()
        n = self.q.beginReadArray("pacs/nodes")
        try:
            for i in range(n):
                self.q.setArrayIndex(i)
                url, url_user, _ = split_credentials(self._str("url"))
                user = self._str("user") or url_user
                if user:
                    keys.add(secret_key(user, url))
        finally:
            self.q.endArray()
        return keys

    def pacs_node(self, name: str) -> PacsNode | None:
        """The node called ``name``, if there is one."""
        return next((n for n in self.pacs_nodes if n.name == name), None)

    @property
    def pacs_last_node(self) -> str:
        """The name of the node last queried or sent to (the dialogs start with it)."""
        return self._str("pacs/last_node")

    @pacs_last_node.setter
    def pacs_last_node(self, value: str) -> None:
        self.q.setValue("pacs/last_node", value)

    @property
    def pacs_retrieve_dir(self) -> str:
        """Folder retrieved studies go into ('': 'retrieved' in the user's application data folder)."""
        return self._str("pacs/retrieve_dir")

    @pacs_retrieve_dir.setter
    def pacs_retrieve_dir(self, value: str | Path) -> None:
        self.q.setValue("pacs/retrieve_dir", str(value) if value else "")

    # -- window layout -----------------------------------------------------------------------
    def window_geometry(self) -> QByteArray | None:
        """Saved QMainWindow geometry, if any."""
        value = self.q.value("window/geometry")
        return value if isinstance(value, QByteArray) else None

    def window_state(self) -> QByteArray | None:
        """Saved QMainWindow dock/toolbar state, if any."""
        value = self.q.value("window/state")
        return value if isinstance(value, QByteArray) else None

    def save_window(self, geometry: QByteArray, state: QByteArray) -> None:
        """Remember the window layout for the next start."""
        self.q.setValue("window/geometry", geometry)
        self.q.setValue("window/state", state)

    def sync(self) -> None:
        """Write pending changes to disk."""
        self.q.sync()
