"""Where the desktop app keeps a DICOMweb password: the operating system's keyring (Windows Credential
Locker, macOS Keychain, the Secret Service of a Linux desktop) through the ``keyring`` library, never
the settings file (which is plain text on Linux and readable by anyone who can read the user's files).

A computer without a usable keyring (a headless Linux box, a locked-down profile) keeps the password
in memory only, until OCT Screen closes; the node editor says which (``describe``). No Qt here.
"""

from __future__ import annotations

import logging
from typing import Protocol

from core.urls import shown_url

__all__ = ["SERVICE", "KeyringSecrets", "MemorySecrets", "Secrets", "secret_key"]

log = logging.getLogger(__name__)

SERVICE = "OCT Screen"
"""The keyring's service name for every secret OCT Screen keeps."""


def secret_key(user: str, url: str) -> str:
    """The keyring's user name for the password of ``user`` on the DICOMweb service at ``url``
    (without credentials): one password per user and server, whatever the node is called."""
    return f"DICOMweb {user}@{shown_url(url)}"


class Secrets(Protocol):
    """A place for passwords: ``get`` ('' when there is none), ``set``, ``delete``; ``persistent``
    says whether they outlive this process, ``describe`` where they are, in words."""

    @property
    def persistent(self) -> bool: ...

    def describe(self) -> str: ...

    def get(self, key: str) -> str: ...

    def set(self, key: str, value: str) -> None: ...

    def delete(self, key: str) -> None: ...


class MemorySecrets:
    """Passwords in memory, gone when the process ends (tests, and computers without a keyring)."""

    persistent = False

    def __init__(self, why: str = "") -> None:
        self._values: dict[str, str] = {}
        self.why = why

    def describe(self) -> str:
        return "kept in memory only, until OCT Screen closes" + (f" ({self.why})" if self.why else "")

    def get(self, key: str) -> str:
        return self._values.get(key, "")

    def set(self, key: str, value: str) -> None:
        self._values[key] = value

    def delete(self, key: str) -> None:
        self._values.pop(key, None)


class KeyringSecrets:
    """The system keyring (``keyring.get_keyring()``, looked up on first use). When there is none, or
    it fails (locked, refused), the passwords of this session stay in memory instead and
    ``describe`` says why; nothing is written anywhere else."""

    def __init__(self) -> None:
        self._keyring = None  # the keyring module once it is known to work
        self._memory: MemorySecrets | None = None
        self._checked = False
        self._name = ""

    def _backend(self):
        if not self._checked:
            self._checked = True
            try:
                import keyring  # noqa: PLC0415 (~100 ms; only a DICOMweb node with a password needs it)
                from keyring.backends import fail  # noqa: PLC0415

                backend = keyring.get_keyring()
                if isinstance(backend, fail.Keyring):
                    self._fall_back("this computer has no keyring")
                else:
                    self._keyring = keyring
                    self._name = type(backend).__module__.rsplit(".", 1)[-1]
            except Exception as e:  # noqa: BLE001 (an import or backend error: no keyring, never a crash)
                self._fall_back(f"the keyring cannot be used: {e}")
        return self._keyring

    def _fall_back(self, why: str) -> None:
        if self._memory is None:
            log.warning("DICOMweb passwords are %s", MemorySecrets(why).describe())
            self._memory = MemorySecrets(why)
        self._keyring = None

    @property
    def persistent(self) -> bool:
        return self._backend() is not None

    def describe(self) -> str:
        if self._backend() is not None:
            return f"kept in the system keyring ({self._name})"
        assert self._memory is not None
        return self._memory.describe()

    def get(self, key: str) -> str:
        kr = self._backend()
        if kr is not None:
            try:
                return kr.get_password(SERVICE, key) or ""
            except Exception as e:  # noqa: BLE001 (locked or refused: this session's memory instead)
                self._fall_back(f"the keyring refused: {e}")
        assert self._memory is not None
        return self._memory.get(key)

    def set(self, key: str, value: str) -> None:
        kr = self._backend()
        if kr is not None:
            try:
                kr.set_password(SERVICE, key, value)
                return
            except Exception as e:  # noqa: BLE001 (as above)
                self._fall_back(f"the keyring refused: {e}")
        assert self._memory is not None
        self._memory.set(key, value)

    def delete(self, key: str) -> None:
        kr = self._backend()
        if kr is not None:
            try:
                if kr.get_password(SERVICE, key) is not None:
                    kr.delete_password(SERVICE, key)
                return
            except Exception as e:  # noqa: BLE001 (as above)
                self._fall_back(f"the keyring refused: {e}")
        assert self._memory is not None
        self._memory.delete(key)
