"""URLs as they may be shown (without the user and password a DICOMweb URL can carry), and the
user and password taken out of a URL and put back (the GUI keeps them in fields of their own).

Light on purpose (only urllib): the GUI's settings use it at start-up, ``core.net.web`` for every
message that names a node."""

from __future__ import annotations

import ipaddress
import urllib.parse

__all__ = ["shown_url", "split_credentials", "with_credentials", "is_https", "https_or_loopback"]


def shown_url(url: str) -> str:
    """``url`` without its credentials, query or fragment: ``https://user:secret@pacs:8042/dicom-web?x``
    gives ``https://pacs:8042/dicom-web``. A text without a host comes back as it is."""
    text = str(url).strip()
    parts = urllib.parse.urlsplit(text)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    if not netloc:
        return text
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def split_credentials(url: str) -> tuple[str, str, str]:
    """(the URL without user and password, the user, the password), each unquoted; ('url', '', '')
    when it carries none."""
    text = str(url).strip()
    parts = urllib.parse.urlsplit(text)
    if "@" not in parts.netloc:
        return text, "", ""
    credentials, host = parts.netloc.rsplit("@", 1)
    user, _, password = credentials.partition(":")
    bare = urllib.parse.urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return bare, urllib.parse.unquote(user), urllib.parse.unquote(password)


def with_credentials(url: str, user: str, password: str) -> str:
    """``url`` with ``user`` and ``password`` (quoted) for HTTP Basic authentication; ``url`` as it
    is when ``user`` is empty."""
    text = str(url).strip()
    if not user:
        return text
    parts = urllib.parse.urlsplit(text)
    host = parts.netloc.rsplit("@", 1)[-1]
    login = urllib.parse.quote(user, safe="") + (":" + urllib.parse.quote(password, safe="") if password else "")
    return urllib.parse.urlunsplit((parts.scheme, f"{login}@{host}", parts.path, parts.query, parts.fragment))


def is_https(url: str) -> bool:
    """Whether ``url`` is an https URL."""
    return urllib.parse.urlsplit(str(url).strip()).scheme.lower() == "https"


def https_or_loopback(url: str) -> bool:
    """Whether what is sent to ``url`` stays encrypted (https) or on this computer (http to a loopback
    address or ``localhost``): where a password may go."""
    if is_https(url):
        return True
    host = urllib.parse.urlsplit(str(url).strip()).hostname or ""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
