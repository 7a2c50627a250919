"""URLs as they may be shown: without the user and password a DICOMweb URL can carry.

Light on purpose (only urllib): the GUI's settings use it at start-up, ``core.net.web`` for every
message that names a node."""

from __future__ import annotations

import urllib.parse

__all__ = ["shown_url"]


def shown_url(url: str) -> str:
    """``url`` without its credentials, query or fragment: ``https://user:secret@pacs:8042/dicom-web?x``
    gives ``https://pacs:8042/dicom-web``. A text without a host comes back as it is."""
    text = str(url).strip()
    parts = urllib.parse.urlsplit(text)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    if not netloc:
        return text
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))
