"""core.urls: a URL shown without its credentials; user and password out of a URL and back in."""

from __future__ import annotations

import pytest

from core.urls import https_or_loopback, is_https, shown_url, split_credentials, with_credentials


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


@pytest.mark.parametrize(
    ("url", "private"),
    [
        ("https://pacs.example.org/dw", True),
        ("http://127.0.0.1:8042/dw", True),
        ("http://localhost:8042/dw", True),
        ("http://[::1]:8042/dw", True),
        ("http://pacs.example.org/dw", False),
        ("http://10.0.0.5:8042/dw", False),  # a clinic's LAN is still a network
        ("http://127.0.0.1.evil.example/dw", False),
    ],
)
def test_a_password_may_go_over_https_or_to_this_computer_only(url, private):
    assert https_or_loopback(url) is private
    assert is_https(url) is url.startswith("https://")


def test_dicomweb_nodes_refuse_a_password_over_the_network_and_never_repeat_it(capsys):
    from app.cli import main
    from core.net.web import parse_web_node

    with pytest.raises(ValueError, match="unencrypted over http://") as err:
        parse_web_node("http://dr:s3cret@pacs.example.org/dicom-web")
    assert "s3cret" not in str(err.value) and "http://pacs.example.org/dicom-web" in str(err.value)
    assert parse_web_node("https://dr:s3cret@pacs.example.org/dicom-web").url.startswith("https://")
    assert parse_web_node("http://dr@pacs.example.org/dicom-web")  # a user without a password: nothing secret
    with pytest.raises(ValueError, match="needs its user"):
        parse_web_node("https://:s3cret@pacs.example.org/dicom-web")
    with pytest.raises(ValueError, match="https URL only"):
        parse_web_node("http://pacs.example.org/dicom-web", ca_file="ca.pem")
    for bad in ("ftp://dr:s3cret@pacs/dw", "https://dr:s3cret@pacs/dw?x=1", "https://dr:s3cret@pacs:99999/dw"):
        with pytest.raises(ValueError) as err:
            parse_web_node(bad)
        assert "s3cret" not in str(err.value)
    # the command line says so before anything is sent, and does not print the password either
    assert main(["pacs", "echo", "http://dr:s3cret@pacs.example.org/dicom-web", "--retries", "0"]) == 2
    out = capsys.readouterr()
    assert "unencrypted over http://" in out.err and "s3cret" not in out.err + out.out
