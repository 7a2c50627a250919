"""DICOMweb passwords go to the system keyring (app.secrets), never into the settings file; without a
keyring they live in memory until the app closes; older settings files lose theirs to the keyring."""

from __future__ import annotations

import keyring
import pytest
from keyring.backend import KeyringBackend
from keyring.backends import fail
from keyring.errors import KeyringLocked, PasswordDeleteError
from PySide6.QtCore import QSettings

from app.secrets import SERVICE, KeyringSecrets, MemorySecrets, secret_key
from app.settings import DICOMWEB, AppSettings, PacsNode

URL = "https://pacs.example.org/dicom-web"


class DictKeyring(KeyringBackend):
    """A keyring in a dict, standing in for the operating system's."""

    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.store: dict[tuple[str, str], str] = {}

    def get_password(self, service, username):
        return self.store.get((service, username))

    def set_password(self, service, username, password):
        self.store[(service, username)] = password

    def delete_password(self, service, username):
        if self.store.pop((service, username), None) is None:
            raise PasswordDeleteError(username)


class LockedKeyring(DictKeyring):
    def get_password(self, service, username):
        raise KeyringLocked("the user did not unlock it")

    set_password = get_password  # type: ignore[assignment]


@pytest.fixture
def system_keyring():
    """Install a backend as keyring's current one for the test (the real one comes back after)."""
    before = keyring.get_keyring()
    yield keyring.set_keyring
    keyring.set_keyring(before)


def settings(path, secrets=None) -> AppSettings:
    return AppSettings(QSettings(str(path), QSettings.Format.IniFormat), secrets)


def node(name="Cloud", user="clinic", password="s3cret") -> PacsNode:
    return PacsNode(name=name, kind=DICOMWEB, url=URL, user=user, password=password)


def written(path) -> str:
    return path.read_text(encoding="utf-8") if path.exists() else ""


def test_the_password_goes_to_the_keyring_and_never_into_the_settings_file(tmp_path, system_keyring):
    kr = DictKeyring()
    system_keyring(kr)
    ini = tmp_path / "s.ini"
    s = settings(ini, KeyringSecrets())
    assert s.secrets.persistent and "system keyring" in s.secrets.describe()
    s.pacs_nodes = [node(), PacsNode(name="Dimse", aet="PACS", host="pacs", port=104)]
    s.q.sync()
    assert "s3cret" not in written(ini) and "clinic" in written(ini)
    assert kr.store == {(SERVICE, secret_key("clinic", URL)): "s3cret"}
    # the next session (a new settings object and keyring client) finds it again
    again = settings(ini, KeyringSecrets())
    assert [n.password for n in again.pacs_nodes] == ["s3cret", ""]
    # a password cleared in the editor, then a node removed: gone from the keyring too
    again.pacs_nodes = [node(password=""), again.pacs_nodes[1]]
    assert kr.store == {}
    again.pacs_nodes = [node(password="new")]
    again.pacs_nodes = []
    assert kr.store == {}


def test_older_settings_files_give_their_passwords_to_the_keyring(tmp_path, system_keyring):
    kr = DictKeyring()
    system_keyring(kr)
    ini = tmp_path / "old.ini"
    old = QSettings(str(ini), QSettings.Format.IniFormat)
    old.beginWriteArray("pacs/nodes", 2)
    rows = [
        {"name": "A", "kind": DICOMWEB, "url": URL, "user": "clinic", "password": "s3cret"},
        {"name": "B", "kind": DICOMWEB, "url": "https://dr:in-url@other.example.org/dw"},
    ]
    for i, row in enumerate(rows):
        old.setArrayIndex(i)
        for k, v in row.items():
            old.setValue(k, v)
    old.endArray()
    old.sync()
    assert "s3cret" in written(ini)
    s = settings(ini, KeyringSecrets())
    a, b = s.pacs_nodes
    assert (a.password, b.user, b.password, b.url) == ("s3cret", "dr", "in-url", "https://other.example.org/dw")
    s.q.sync()
    assert "s3cret" not in written(ini) and "in-url" not in written(ini)
    assert kr.store[(SERVICE, secret_key("dr", "https://other.example.org/dw"))] == "in-url"
    assert [n.password for n in settings(ini, KeyringSecrets()).pacs_nodes] == ["s3cret", "in-url"]


def test_without_a_keyring_the_password_lives_until_the_app_closes(tmp_path, system_keyring, caplog):
    system_keyring(fail.Keyring())
    ini = tmp_path / "s.ini"
    secrets = KeyringSecrets()
    s = settings(ini, secrets)
    s.pacs_nodes = [node()]
    s.q.sync()
    assert not secrets.persistent and "memory only" in secrets.describe() and "no keyring" in secrets.describe()
    assert "s3cret" not in written(ini)
    assert settings(ini, secrets).pacs_nodes[0].password == "s3cret"  # this session
    assert settings(ini, KeyringSecrets()).pacs_nodes[0].password == ""  # the next one asks again
    assert "memory only" in caplog.text


def test_a_keyring_that_refuses_falls_back_to_memory_without_a_crash(tmp_path, system_keyring):
    system_keyring(LockedKeyring())
    secrets = KeyringSecrets()
    s = settings(tmp_path / "s.ini", secrets)
    s.pacs_nodes = [node()]
    assert s.pacs_nodes[0].password == "s3cret" and "refused" in secrets.describe()
    assert "s3cret" not in written(tmp_path / "s.ini")


def test_a_settings_file_of_its_own_never_touches_the_system_keyring(tmp_path, system_keyring):
    kr = DictKeyring()
    system_keyring(kr)
    s = settings(tmp_path / "s.ini")
    assert isinstance(s.secrets, MemorySecrets)
    s.pacs_nodes = [node()]
    assert kr.store == {} and s.pacs_nodes[0].password == "s3cret"


def test_the_node_editor_says_where_the_password_is_kept(qtbot):
    from app.pacs_dialog import NodesDialog

    dlg = NodesDialog([node()], password_note="kept in memory only, until OCT Screen closes")
    qtbot.addWidget(dlg)
    tip = dlg.password.toolTip()
    assert "never in the settings file" in tip and "memory only" in tip
