"""A class on the school's network (`classpulse run --lan`), in a real headless Chromium.

The page's host is ``classroom.test``, mapped to 127.0.0.1 by Chromium's resolver: not a
loopback name, so no localhost exemption makes plain HTTP a secure context.
- Over ``http://classroom.test:PORT`` the student page says the camera needs HTTPS, and why.
- Over ``https://classroom.test:PORT``, served by the gateway itself with the certificate the
  local CA issued, and that CA trusted in the browser's own NSS store (``certutil``, the way a
  managed device trusts it), the student joins, the camera starts, faces messages flow and the
  teacher's dashboard shows the student. The plain-HTTP help page says what each device needs,
  offers the CA certificate (public part only), and passes axe. A certificate the same CA
  signs for another site (bank.example) is refused: the CA's name constraints hold in Chromium.
"""

from __future__ import annotations

import ssl
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from classpulse import tls
from classpulse.cli.devserver import DevServer, free_port
from tests.a11y import check_page
from tests.browser import TEACHER, create_teacher
from tests.lan_helpers import HOST, OUTSIDE, chromium_at

if TYPE_CHECKING:
    pass

pytestmark = pytest.mark.browser


@contextmanager
def https_server(cert: Path, key: Path) -> Iterator[int]:
    """A one-page HTTPS server on 127.0.0.1 with this certificate; yields its port."""

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Page)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_over_plain_http_the_student_page_says_the_camera_needs_https(server, tmp_path):
    from playwright.sync_api import expect

    create_teacher(server, server.login())
    session = server.api("POST", "/api/sessions", {"title": "Physics"}, server.login(*TEACHER))
    url = f"http://{HOST}:{server.port}/join/{session['join_code']}"
    home = tmp_path / "home"
    home.mkdir()
    with chromium_at(home, tmp_path / "webcam.y4m") as browser:
        page = browser.new_context(permissions=["camera"]).new_page()
        page.goto(url)
        assert page.evaluate("() => window.isSecureContext") is False
        notice = page.locator("#insecure-context")
        expect(notice).to_be_visible()
        expect(notice).to_contain_text("HTTPS")
        expect(notice).to_contain_text(f"http://{HOST}:{server.port}")
        expect(notice).to_contain_text("https://")  # what to ask the teacher for
        check_page(page, "join-insecure-context")
        # Joining still works (without the camera): the note stays, and "Start camera" says
        # why nothing happens.
        page.click("#consent-accept")
        page.fill("#display-name", "Ada")
        page.click("#join-submit")
        expect(page.locator("#conn-state")).to_have_text("connected", timeout=15_000)
        expect(notice).to_be_visible()
        page.click("#start")
        expect(page.locator("#stream-error")).to_contain_text("plain HTTP")
        expect(page.locator("#stop")).to_be_disabled()


def test_lan_https_student_streams_and_the_teacher_sees_them(
    tmp_path, clean_db, redis_url, clean_redis
):
    from playwright.sync_api import expect

    help_port = free_port()
    with DevServer(
        tmp_path / "service",
        database_url=clean_db,
        redis_url=redis_url,
        env={"CLASSPULSE_TLS_NAMES": HOST},
        args=("--lan", "--http-port", str(help_port)),
        tls=True,
    ) as server:
        base = f"https://{HOST}:{server.port}"
        ca = tmp_path / "service" / "tls" / "ca.pem"
        create_teacher(server, server.login())
        token = server.login(*TEACHER)
        session = server.api("POST", "/api/sessions", {"title": "Biology 9B"}, token)
        # The join link and its QR code name the HTTPS LAN URL.
        assert session["join_url"] == f"{base}/join/{session['join_code']}"
        # The help page's CA download is the public certificate, byte for byte, no key.
        with urllib.request.urlopen(f"http://127.0.0.1:{help_port}/classpulse-ca.crt") as r:
            served = r.read()
            assert r.headers["Content-Type"] == "application/x-x509-ca-cert"
        assert served == ca.read_bytes() and b"PRIVATE" not in served

        home = tmp_path / "home"
        home.mkdir()
        with chromium_at(home, tmp_path / "webcam.y4m", ca=ca) as browser:
            # The plain-HTTP help page: one step per device, the HTTPS link, the certificate.
            helper = browser.new_context().new_page()
            helper.goto(f"http://{HOST}:{help_port}/join/{session['join_code']}")
            expect(helper.locator("#https-link")).to_have_attribute("href", session["join_url"])
            expect(helper.locator("#ca-download")).to_have_attribute("href", "/classpulse-ca.crt")
            expect(helper.locator("main")).to_contain_text("Chromebook")
            check_page(helper, "lan-help")

            teacher = browser.new_context().new_page()  # no ignore_https_errors: trusted CA
            teacher.goto(base + "/login")
            teacher.fill("input[type=email]", TEACHER[0])
            teacher.fill("input[type=password]", TEACHER[1])
            teacher.click("button[type=submit]")
            teacher.wait_for_url("**/sessions")
            teacher.goto(f"{base}/sessions/{session['id']}")
            expect(teacher.locator("#main")).to_contain_text(session["join_url"])

            student = browser.new_context(permissions=["camera"]).new_page()
            student.goto(session["join_url"])
            assert student.evaluate("() => window.isSecureContext") is True
            expect(student.locator("#insecure-context")).to_be_hidden()
            student.click("#consent-accept")
            student.fill("#display-name", "Ada")
            student.click("#join-submit")
            expect(student.locator("#stop")).to_be_enabled(timeout=15_000)  # camera on
            expect(student.locator("#conn-state")).to_contain_text("onnect", timeout=15_000)
            # Faces messages (edge capture) are sent and acknowledged over wss://.
            expect(student.locator("#capture-mode")).to_have_attribute(
                "data-capture", "edge", timeout=15_000
            )
            expect(student.locator("#frames-acked")).not_to_have_text("0", timeout=15_000)

            tile = teacher.locator("[data-student-id]").filter(has_text="Ada")
            expect(tile).to_have_count(1, timeout=20_000)
            expect(tile.locator(".emotion")).to_have_attribute(
                "data-emotion", "happy", timeout=20_000
            )

            # The trusted CA's key, stolen, signs for another site: Chromium refuses it (the
            # CA's name constraints), while it trusts the CA for this class.
            stolen = tmp_path / "stolen"
            stolen.mkdir()
            ca_key = serialization.load_pem_private_key(
                (ca.parent / tls.CA_KEY).read_bytes(), password=None
            )
            ca_cert = x509.load_pem_x509_certificate(ca.read_bytes())
            tls.issue_server_certificate(stolen, ca_cert, ca_key, [OUTSIDE])  # type: ignore[arg-type]
            with (
                https_server(stolen / tls.SERVER_CERT, stolen / tls.SERVER_KEY) as port,
                pytest.raises(Exception, match="ERR_CERT_INVALID"),
            ):
                browser.new_context().new_page().goto(f"https://{OUTSIDE}:{port}/")
            # The control: the same server and signing for a name inside the constraints.
            inside = tmp_path / "inside"
            inside.mkdir()
            tls.issue_server_certificate(inside, ca_cert, ca_key, [HOST])  # type: ignore[arg-type]
            with https_server(inside / tls.SERVER_CERT, inside / tls.SERVER_KEY) as port:
                control = browser.new_context().new_page()
                assert control.goto(f"https://{HOST}:{port}/").status == 200  # type: ignore[union-attr]
                expect(control.locator("body")).to_have_text("ok")

        history = server.api("GET", f"/api/sessions/{session['id']}/history", token=token)
        assert history["summary"]["frames_with_face"] > 0

        # The same browser without the CA in its store refuses the page: the trust above came
        # from the imported CA, not from any exemption.
        bare = tmp_path / "bare-home"
        bare.mkdir()
        with (
            chromium_at(bare, tmp_path / "webcam2.y4m") as browser,
            pytest.raises(Exception, match="ERR_CERT_AUTHORITY_INVALID"),
        ):
            browser.new_context().new_page().goto(session["join_url"])
