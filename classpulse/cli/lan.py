"""`classpulse run --lan`: the service on the school's network over HTTPS, and a plain-HTTP page
that says how each kind of device trusts the certificate.

The gateway serves TLS itself (uvicorn, the certificate from classpulse/tls.py); the join links
and QR codes are ``https://<LAN address>:<port>/join/…`` (``public_url``). The help page listens
on a second, plain-HTTP port (80 when it can be bound, else 8080): one port cannot answer both a
TLS handshake and plain HTTP without peeking at each connection's first byte below uvicorn, and
the help page must never be the gateway itself over HTTP (a login over plain HTTP would send a
password in the clear). It is a small threaded server in the `classpulse run` process: the help
page, the CA certificate (the public part only), the CSS it needs, a join link turned into its
HTTPS form, and a redirect to HTTPS for every other path.
"""

from __future__ import annotations

import argparse
import html
import ipaddress
import logging
import mimetypes
import os
import re
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from classpulse.settings import REPO_ROOT, Settings

log = logging.getLogger("classpulse")

WEB = REPO_ROOT / "web"
CA_DOWNLOAD = "/classpulse-ca.crt"
_JOIN = re.compile(r"/join/([A-Za-z0-9_-]{1,64})/?")
HELP_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
HELP_PORTS = (80, 8080)  # tried in order when --http-port is not given


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--lan",
        action="store_true",
        help="serve the school's network over HTTPS (listen on 0.0.0.0 unless --host or "
        "CLASSPULSE_HOST; join links on the LAN address; a local certificate authority "
        "unless --tls-cert)",
    )
    p.add_argument(
        "--tls-cert", type=Path, help="the school's certificate (PEM; CLASSPULSE_TLS_CERT)"
    )
    p.add_argument("--tls-key", type=Path, help="its private key (PEM; CLASSPULSE_TLS_KEY)")
    p.add_argument(
        "--tls-name",
        action="append",
        default=[],
        metavar="NAME",
        help="one more host name or address for the --lan certificate (repeatable; "
        "CLASSPULSE_TLS_NAMES)",
    )
    p.add_argument(
        "--http-port",
        type=int,
        help="--lan: plain-HTTP port of the device help page (default 80 if allowed, else "
        "8080; 0: none; CLASSPULSE_LAN_HTTP_PORT)",
    )


@dataclass
class LanSetup:
    settings: Settings  # with host, tls_cert/tls_key and public_url filled
    env: dict[str, str]  # what the child processes need to know of it
    ca_cert: Path | None
    names: tuple[str, ...]
    fingerprint: str | None


def prepare(args: argparse.Namespace, settings: Settings) -> LanSetup | None:
    """Certificates and URLs for HTTPS; None when neither --lan nor a certificate asks for it."""
    from classpulse import tls

    cert = args.tls_cert or settings.tls_cert
    key = args.tls_key or settings.tls_key
    if not (args.lan or cert or key):
        return None
    if bool(cert) != bool(key):
        raise SystemExit("error: give both the TLS certificate and its key (--tls-cert/--tls-key)")
    host = settings.host
    if args.lan and args.host is None and "CLASSPULSE_HOST" not in os.environ:
        host = "0.0.0.0"  # every interface: the LAN address, and localhost for the teacher
    extra: list[str] = []
    try:
        if cert and key:
            files = tls.given_certificate(cert, key)
        else:
            extra = tls.normalise_names([*settings.tls_names.split(","), *args.tls_name])
            files = tls.local_certificate(settings.data_dir, tls.machine_names(extra))
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from exc
    public_url = settings.public_url
    if public_url is None:
        # Join links name the first --tls-name (a name the school gave this machine), else
        # the address we listen on, else the LAN address (the one the default route uses).
        listen = _address(host)
        preferred = listen if listen and not listen.is_unspecified else tls.lan_address()
        url_host = tls.url_host(extra[:1] or files.names, preferred)
        public_url = f"https://{url_host}:{settings.port}"
    fp = None
    if files.ca_cert is not None:
        from cryptography import x509

        fp = tls.fingerprint(x509.load_pem_x509_certificate(files.ca_cert.read_bytes()))
    updated = settings.model_copy(
        update={
            "host": host,
            "tls_cert": files.cert,
            "tls_key": files.key,
            "public_url": public_url,
        }
    )
    env = {
        "CLASSPULSE_HOST": host,
        "CLASSPULSE_TLS_CERT": str(files.cert.resolve()),
        "CLASSPULSE_TLS_KEY": str(files.key.resolve()),
        "CLASSPULSE_PUBLIC_URL": public_url,
    }
    return LanSetup(updated, env, files.ca_cert, files.names, fp)


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


# --- the plain-HTTP help page ----------------------------------------------------------------


def render_help(setup: LanSetup, join_code: str | None) -> bytes:
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(
        loader=FileSystemLoader(WEB / "templates"), autoescape=select_autoescape(["html"])
    )
    base = (setup.settings.public_url or "").rstrip("/")
    page = env.get_template("lan_help.html").render(
        page="lan-help",
        teacher=False,
        nav_admin=False,
        https_url=base + "/",
        join_url=f"{base}/join/{join_code}" if join_code else None,
        ca_download=CA_DOWNLOAD if setup.ca_cert else None,
        # Bytes spaced, as Chrome and iOS show it (and so it wraps on a phone).
        fingerprint=(setup.fingerprint or "").replace(":", " "),
        host=urlsplit(base).hostname or "",
    )
    return page.encode()


class HelpServer:
    """The help page on plain HTTP, in a thread of `classpulse run`."""

    def __init__(self, setup: LanSetup, port: int | None) -> None:
        self.setup = setup
        self.server: ThreadingHTTPServer | None = None
        host = setup.settings.host
        candidates: tuple[int, ...] = HELP_PORTS if port is None else (port,) if port else ()
        for p in candidates:
            try:
                self.server = ThreadingHTTPServer((host, p), _handler(setup))
                break
            except OSError as exc:
                if port is not None or p == candidates[-1]:
                    log.warning("no device help page on port %s: %s", p, exc)
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str | None:
        if self.server is None:
            return None
        host = urlsplit(self.setup.settings.public_url or "").netloc.rsplit(":", 1)[0]
        port = self.server.server_address[1]
        return f"http://{host}" + ("" if port == 80 else f":{port}") + "/"

    def start(self) -> HelpServer:
        if self.server is not None:
            self.thread = threading.Thread(
                target=self.server.serve_forever, name="lan-help", daemon=True
            )
            self.thread.start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def _handler(setup: LanSetup) -> type[BaseHTTPRequestHandler]:
    https_base = (setup.settings.public_url or "").rstrip("/")
    static = (WEB / "static").resolve()

    class Handler(BaseHTTPRequestHandler):
        def version_string(self) -> str:
            return "ClassPulse"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            log.debug("lan-help %s %s", self.client_address[0], format % args)

        def do_HEAD(self) -> None:  # noqa: N802 (http.server's naming)
            self.do_GET(head=True)

        def do_GET(self, head: bool = False) -> None:  # noqa: N802
            path = urlsplit(self.path).path
            join = _JOIN.fullmatch(path)
            if path in ("/", "/help") or join:
                code = join.group(1) if join else None
                self._send(200, render_help(setup, code), "text/html; charset=utf-8", head)
            elif path == CA_DOWNLOAD and setup.ca_cert is not None:
                # The public certificate only: the CA key is never read here.
                self._send(
                    200,
                    setup.ca_cert.read_bytes(),
                    "application/x-x509-ca-cert",
                    head,
                    {"Content-Disposition": 'attachment; filename="classpulse-ca.crt"'},
                )
            elif path.startswith("/static/") and (file := _static(static, path)) is not None:
                kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
                self._send(200, file.read_bytes(), kind, head)
            else:
                # Anything else (the login, the API, a dashboard) only over HTTPS.
                target = https_base + (self.path if self.path.startswith("/") else "/")
                body = f'<a href="{html.escape(target)}">{html.escape(target)}</a>'.encode()
                self._send(302, body, "text/html; charset=utf-8", head, {"Location": target})

        def _send(
            self,
            code: int,
            body: bytes,
            kind: str,
            head: bool,
            extra: dict[str, str] | None = None,
        ) -> None:
            self.send_response(HTTPStatus(code))
            headers = {
                "Content-Type": kind,
                "Content-Length": str(len(body)),
                "Cache-Control": "no-store",
                "Content-Security-Policy": HELP_CSP,
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
                "X-Frame-Options": "DENY",
                **(extra or {}),
            }
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            if not head:
                self.wfile.write(body)

    return Handler


def _static(root: Path, path: str) -> Path | None:
    """A file under web/static for a /static/ path, never outside it."""
    try:
        file = (root / path.removeprefix("/static/")).resolve()
    except (OSError, ValueError):
        return None
    return file if file.is_file() and file.is_relative_to(root) else None
