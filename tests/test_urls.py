"""core.urls: a URL shown without its credentials; user and password out of a URL and back in."""

from __future__ import annotations

import pytest

from core.urls import shown_url, split_credentials, with_credentials


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://u:s3cret@pacs:8042/dicom-web?x=1#f", "https://pacs:8042/dicom-web"),
        ("https://u:p@ss@pacs/dw", "https://pacs/dw"),  # an @ in the password
        ("https://user@[::1]:8443/dw", "https://[::1]:8443/dw"),
        ("http://pacs/dw", "http://pacs/dw"),
        ("not a url", "not a url"),
    ],
)
def test_shown_url_has_no_credentials(url, shown):
    assert shown_url(url) == shown


@pytest.mark.parametrize(("user", "password"), [("clinic", "p@ss:w/rd %"), ("dr smith", ""), ("ü", "ß€")])
def test_credentials_round_trip(user, password):
    url = with_credentials("https://pacs.example.org:8443/dicom-web", user, password)
    assert "@pacs.example.org:8443" in url and shown_url(url) == "https://pacs.example.org:8443/dicom-web"
    assert split_credentials(url) == ("https://pacs.example.org:8443/dicom-web", user, password)
    assert split_credentials(with_credentials(url, "other", "x")) == (
        "https://pacs.example.org:8443/dicom-web",
        "other",
        "x",
    )  # credentials replace, never stack up


def test_no_user_leaves_the_url_as_it_is():
    assert with_credentials("https://pacs/dw", "", "ignored") == "https://pacs/dw"
    assert split_credentials("https://pacs/dw") == ("https://pacs/dw", "", "")
