"""`classpulse run --lan` without a browser: what `lan.prepare` hands the processes, the
plain-HTTP help server (real sockets, real HTTP), and the join page's note for plain HTTP."""

from __future__ import annotations

import argparse
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from classpulse import tls
from classpulse.cli import lan
from classpulse.cli.devserver import free_port
from classpulse.settings import Settings


def _args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--host")
    lan.add_arguments(p)
    return p.parse_args(argv)


def _settings(tmp_path: Path, **kw: object) -> Settings:
    return Settings(data_dir=tmp_path / "data", port=8443, **kw)  # type: ignore[arg-type]


def test_plain_run_stays_plain_http(tmp_path: Path) -> None:
    assert lan.prepare(_args(), _settings(tmp_path)) is None
    assert not (tmp_path / "data").exists()


def test_lan_listens_everywhere_with_https_links_on_the_named_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CLASSPULSE_HOST", raising=False)
    setup = lan.prepare(_args("--lan", "--tls-name", "Classroom.Test"), _settings(tmp_path))
    assert setup is not None
    assert setup.settings.host == "0.0.0.0"
    assert setup.settings.public_url == "https://classroom.test:8443"
    assert setup.env["CLASSPULSE_PUBLIC_URL"] == "https://classroom.test:8443"
    assert setup.env["CLASSPULSE_TLS_CERT"] == str((tmp_path / "data/tls/server.pem").resolve())
    assert "classroom.test" in setup.names and "127.0.0.1" in setup.names
    assert setup.ca_cert == tmp_path / "data" / "tls" / tls.CA_CERT
    assert setup.fingerprint and len(setup.fingerprint.split(":")) == 32


def test_lan_without_names_links_to_the_lan_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CLASSPULSE_HOST", raising=False)
    setup = lan.prepare(_args("--lan"), _settings(tmp_path))
    assert setup is not None
    lan_ip = tls.lan_address()
    if lan_ip is not None:  # a machine with a network
        host = f"[{lan_ip}]" if lan_ip.version == 6 else str(lan_ip)
        assert setup.settings.public_url == f"https://{host}:8443"


def test_school_certificate_from_the_settings_is_used_as_is(tmp_path: Path) -> None:
    # A certificate the school has: here one the local CA made elsewhere, for its own name.
    other = tls.local_certificate(tmp_path / "elsewhere", ["pulse.school.test"])
    before = other.cert.read_bytes()
    settings = _settings(tmp_path, tls_cert=other.cert, tls_key=other.key)
    setup = lan.prepare(_args("--lan"), settings)
    assert setup is not None and setup.ca_cert is None and setup.fingerprint is None
    assert setup.settings.tls_cert == other.cert and setup.settings.tls_key == other.key
    assert setup.settings.public_url == "https://pulse.school.test:8443"
    assert other.cert.read_bytes() == before
    assert not (tmp_path / "data" / "tls").exists()  # no CA made for it
    with pytest.raises(SystemExit, match="both"):
        lan.prepare(_args("--tls-cert", str(other.cert)), _settings(tmp_path))


@pytest.fixture
def help_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("CLASSPULSE_HOST", "127.0.0.1")
    setup = lan.prepare(
        _args("--lan", "--tls-name", "classroom.test"), _settings(tmp_path, host="127.0.0.1")
    )
    assert setup is not None
    port = free_port()
    server = lan.HelpServer(setup, port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(url, timeout=5) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_help_server_pages(help_server: str, tmp_path: Path) -> None:
    status, headers, body = _get(help_server + "/")
    assert status == 200 and "Connect a device" in body.decode()
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert 'href="https://classroom.test:8443/"' in body.decode()
    status, _, body = _get(help_server + "/join/ABCD2345")
    assert 'href="https://classroom.test:8443/join/ABCD2345"' in body.decode()
    status, headers, body = _get(help_server + "/classpulse-ca.crt")
    assert status == 200 and headers["Content-Type"] == "application/x-x509-ca-cert"
    assert body == (tmp_path / "data" / "tls" / "ca.pem").read_bytes()
    assert b"PRIVATE" not in body
    assert _get(help_server + "/static/css/app.css")[0] == 200
    # Everything else only over HTTPS; nothing outside web/static, no key by any path.
    status, headers, _ = _get(help_server + "/login?next=/sessions")
    assert (
        status == 302 and headers["Location"] == "https://classroom.test:8443/login?next=/sessions"
    )
    for path in (
        "/static/../../classpulse/tls.py",
        "/static/..%2f..%2fpyproject.toml",
        "/tls/ca-key.pem",
    ):
        status, _, body = _get(help_server + path)
        assert status == 302 and b"PRIVATE" not in body and b"[project]" not in body


@pytest.fixture
def client_at(settings: Settings) -> Iterator:
    def make(public_url: str | None) -> TestClient:
        return TestClient(create_app(settings.model_copy(update={"public_url": public_url})))

    yield make


def test_join_page_points_plain_http_visitors_to_https(client_at) -> None:  # type: ignore[no-untyped-def]
    with client_at("https://classroom.test:8443") as c:
        body = c.get("/join/ABCD2345").text
    assert 'id="insecure-context"' in body and " hidden" in body
    assert 'href="https://classroom.test:8443/join/ABCD2345"' in body
    with client_at(None) as c:
        body = c.get("/join/ABCD2345").text
    assert 'id="secure-link"' not in body and "https://</strong>" in body
