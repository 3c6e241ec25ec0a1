"""The real Caddy (Debian's caddy 2.6, the binary docker-compose.yml's proxy service runs as
caddy:2) with the committed deploy/caddy/Caddyfile, in front of the whole service as
`classpulse run` starts it, over HTTPS from Caddy's own CA (`tls internal`, verified here with
its root certificate).

Through the proxy a teacher logs in and opens a session, a student joins, opens the student
WebSocket and sends a faces message, the worker and the aggregator analyse it, and the teacher's
live WebSocket shows the student. The gateway believes X-Forwarded-For only from the proxy
(CLASSPULSE_FORWARDED_ALLOW_IPS=127.0.0.1, where Caddy connects from): the same forged header
sent straight to the gateway from another address is ignored, and through Caddy a client's own
X-Forwarded-For is replaced by the address Caddy saw. The client addresses are told apart by
binding the test's sockets to other loopback addresses (127.0.0.2, 127.0.0.3). /metrics and the
API docs are not published through the proxy. A real headless Chromium does the class through
Caddy too, at ``https://classroom.test:PORT`` (mapped to 127.0.0.1 by Chromium's resolver: no
loopback exemption makes it a secure context) with Caddy's root trusted in its NSS store, as a
school's managed devices would. And the processes `classpulse run` starts: only the gateway's
environment holds the signing key.

Caddy and the service start once for the module.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis
from websockets.sync.client import ClientConnection, connect

from classpulse import edge_wire
from classpulse.cli.devserver import ADMIN_EMAIL, ADMIN_PASSWORD, DevServer, free_port

ROOT = Path(__file__).resolve().parent.parent
CADDYFILE = ROOT / "deploy" / "caddy" / "Caddyfile"
SIGNING_KEY = "caddy-test-signing-key-which-is-long-enough-0123456789"
TEACHER = ("teacher@proxy.test", "teacher-password-proxy-1")
# The test's clients, each from its own loopback address; Caddy reaches the gateway from
# 127.0.0.1, the one address the gateway trusts.
STUDENT_IP, TEACHER_IP, DIRECT_IP, PROXY_IP = "127.0.0.3", "127.0.0.4", "127.0.0.2", "127.0.0.1"
FORGED = "203.0.113.7"  # TEST-NET-3: what a client claims to be
HOST = "classroom.test"  # the private name Chromium opens (tls internal)


def caddy_exe() -> str:
    exe = shutil.which("caddy")
    assert exe, (
        "caddy is not installed: scripts/test installs Debian's caddy (apt-get install caddy)"
    )
    return exe


def caddyfile_for_test() -> str:
    """The committed Caddyfile, bound to 127.0.0.1 (the container listens on all addresses)."""
    text = CADDYFILE.read_text()
    site = "{$CLASSPULSE_DOMAIN} {\n"
    assert text.count(site) == 1
    return text.replace(site, site + "\tbind 127.0.0.1\n")


class Caddy:
    def __init__(self, workdir: Path, upstream: str) -> None:
        self.workdir = workdir
        self.https_port, self.http_port = free_port(), free_port()
        self.base = f"https://127.0.0.1:{self.https_port}"
        self.config = workdir / "Caddyfile"
        self.config.write_text(caddyfile_for_test())
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            # Its storage (the internal CA, certificates) and config here, not in $HOME.
            "HOME": str(workdir),
            "XDG_DATA_HOME": str(workdir / "data"),
            "XDG_CONFIG_HOME": str(workdir / "config"),
            # Two site addresses: the test's own clients use the IP, Chromium the name.
            "CLASSPULSE_DOMAIN": f"127.0.0.1:{self.https_port}, {HOST}:{self.https_port}",
            "CLASSPULSE_TLS": "internal",
            "CLASSPULSE_UPSTREAM": upstream,
            "CLASSPULSE_CADDY_ADMIN": "off",
            "CLASSPULSE_HTTP_PORT": str(self.http_port),
            "CLASSPULSE_HTTPS_PORT": str(self.https_port),
        }
        self.root_ca = workdir / "data" / "caddy" / "pki" / "authorities" / "local" / "root.crt"
        self.log = workdir / "caddy.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30) -> Caddy:
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [caddy_exe(), "run", "--config", str(self.config), "--adapter", "caddyfile"],
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"caddy exited:\n{self.log.read_text()[-3000:]}"
            if self.root_ca.exists():
                try:
                    with httpx.Client(verify=self.ssl(), timeout=2) as client:
                        client.get(self.base + "/healthz")
                    return self
                except (httpx.TransportError, ssl.SSLError):
                    pass
            time.sleep(0.2)
        raise AssertionError(f"caddy not serving HTTPS:\n{self.log.read_text()[-3000:]}")

    def ssl(self) -> ssl.SSLContext:
        """Trusting Caddy's internal CA, and nothing else."""
        return ssl.create_default_context(cafile=str(self.root_ca))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, database_url: str, redis_url: str
) -> Iterator[tuple[DevServer, Caddy]]:
    """The service (`classpulse run` on the test database and Redis) and Caddy in front."""
    r = redis.Redis.from_url(redis_url)
    r.flushdb()
    work = tmp_path_factory.mktemp("proxy")
    env = {
        "CLASSPULSE_SECRET_KEY": SIGNING_KEY,
        # The proxy's address, and no other: Caddy connects from 127.0.0.1.
        "CLASSPULSE_FORWARDED_ALLOW_IPS": PROXY_IP,
        "CLASSPULSE_LOG_LEVEL": "WARNING",
    }
    server = DevServer(work / "service", database_url=database_url, redis_url=redis_url, env=env)
    caddy = Caddy(work, f"127.0.0.1:{server.port}")
    try:
        server.start()
        caddy.start()
        yield server, caddy
    finally:
        caddy.stop()
        server.stop()
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(
                "TRUNCATE users, class_sessions, students, emotion_buckets, applied_results,"
                " audit_log CASCADE"
            )
        r.flushdb()
        r.close()


def client(caddy: Caddy | None, server: DevServer, source: str) -> httpx.Client:
    """An HTTP client from ``source``: through Caddy over verified HTTPS, or straight to the
    gateway."""
    if caddy is None:
        transport = httpx.HTTPTransport(local_address=source)
        return httpx.Client(base_url=server.base, transport=transport, timeout=10)
    transport = httpx.HTTPTransport(local_address=source, verify=caddy.ssl())
    return httpx.Client(base_url=caddy.base, transport=transport, timeout=10)


@contextmanager
def websocket(
    caddy: Caddy | None, server: DevServer, source: str, path: str, token: str, **headers: str
) -> Iterator[ClientConnection]:
    """A WebSocket from ``source`` carrying its token as the pages do (subprotocol), with a
    browser's Origin: wss through Caddy, or ws straight to the gateway."""
    port = caddy.https_port if caddy else server.port
    sock = socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(source, 0))
    scheme, origin = ("wss", caddy.base) if caddy else ("ws", server.base)
    with connect(
        f"{scheme}://127.0.0.1:{port}{path}",
        sock=sock,
        ssl=caddy.ssl() if caddy else None,
        subprotocols=["classpulse", "classpulse.token." + token],  # type: ignore[list-item]
        additional_headers={"Origin": origin, **headers},
        compression=None,
        open_timeout=30,  # a loaded CI box: the handshake waits on the hub subscription
    ) as ws:
        yield ws


def next_message(ws: ClientConnection, match, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0, "no matching message"
        msg = json.loads(ws.recv(timeout=left))
        if match(msg):
            return msg


def login(http: httpx.Client, email: str, password: str) -> str:
    r = http.post("/api/auth/login", json={"email": email, "password": password})
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def faces_message() -> bytes:
    """One face with a blank 64×64 crop, as an edge-capture page sends it."""
    box, keypoints = (100.0, 40.0, 60.0, 60.0), [(120, 60), (150, 60), (135, 75), (135, 90)]
    keypoints += [(105, 65), (165, 65)]
    return edge_wire.encode(320, 240, [(box, 0.9, keypoints)], crops=bytes(64 * 64), crop_size=64)


def view_ips(database_url: str, session_id: str) -> list[str]:
    """The client addresses the audit log recorded for live views of the session."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT ip FROM audit_log WHERE action = 'view.live' AND target_id = %s ORDER BY id",
            (session_id,),
        ).fetchall()
    return [row[0] for row in rows]


@pytest.fixture(scope="module")
def teacher_session(stack) -> dict[str, Any]:
    """A teacher (made by the admin) and their session, all through the proxy."""
    server, caddy = stack
    with client(caddy, server, TEACHER_IP) as http:
        admin = login(http, ADMIN_EMAIL, ADMIN_PASSWORD)
        user = {"email": TEACHER[0], "password": TEACHER[1], "role": "teacher"}
        r = http.post("/api/admin/users", json=user, headers={"Authorization": f"Bearer {admin}"})
        assert r.status_code == 201, r.text
        token = login(http, *TEACHER)
        r = http.post(
            "/api/sessions",
            json={"title": "Physics behind the proxy"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 201, r.text
        return {"token": token, **r.json()}


def test_a_class_runs_through_the_proxy(stack, teacher_session):
    server, caddy = stack
    session, token = teacher_session, teacher_session["token"]
    # The gateway built the join link from what Caddy forwarded: HTTPS, the proxy's host.
    assert session["join_url"] == f"{caddy.base}/join/{session['join_code']}"
    with client(caddy, server, STUDENT_IP) as http:
        page = http.get(f"/join/{session['join_code']}")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        r = http.post(
            f"/api/join/{session['join_code']}", json={"display_name": "Ada", "consent": True}
        )
        assert r.status_code == 201, r.text
        student = r.json()

    live_path = f"/ws/sessions/{session['id']}/live"
    with (
        websocket(caddy, server, TEACHER_IP, live_path, token) as teacher,
        websocket(caddy, server, STUDENT_IP, "/ws/student", student["token"]) as ws,
    ):
        config = json.loads(ws.recv(timeout=10))
        assert config["type"] == "config"
        # A few frames, one at a time as the page's window allows, each acknowledged.
        for seq in range(1, 4):
            ws.send(faces_message())
            ack = next_message(ws, lambda m: m.get("type") == "ack")
            assert ack["ok"] is True, ack
            assert ack["seq"] == seq
        # The real worker and aggregator analysed them; the dashboard sees Ada's emotion.
        update = next_message(
            teacher,
            lambda m: (
                m.get("type") == "student"
                and m.get("student_id") == student["student_id"]
                and m.get("emotion")
            ),
        )
        assert update["session_id"] == session["id"]
    # The live view was audited with the teacher's own address, as Caddy saw it.
    assert view_ips(server_db(server), session["id"])[-1] == TEACHER_IP


def server_db(server: DevServer) -> str:
    return server.env["CLASSPULSE_DATABASE_URL"]


def test_forwarded_addresses_are_believed_from_the_proxy_only(stack, teacher_session):
    server, caddy = stack
    session, token = teacher_session, teacher_session["token"]
    path = f"/ws/sessions/{session['id']}/live"
    forged = {"X-Forwarded-For": FORGED, "X-Forwarded-Proto": "https"}
    seen = []
    # Straight to the gateway from an address that is not the proxy: the header is ignored.
    with websocket(None, server, DIRECT_IP, path, token, **forged) as ws:
        next_message(ws, lambda m: True)
    seen.append(view_ips(server_db(server), session["id"])[-1])
    # Through Caddy with the same forged header: Caddy replaces it with the address it saw.
    with websocket(caddy, server, TEACHER_IP, path, token, **forged) as ws:
        next_message(ws, lambda m: True)
    seen.append(view_ips(server_db(server), session["id"])[-1])
    # From the proxy's own address the header is believed: that is what the trust is for.
    with websocket(None, server, PROXY_IP, path, token, **forged) as ws:
        next_message(ws, lambda m: True)
    seen.append(view_ips(server_db(server), session["id"])[-1])
    assert seen == [DIRECT_IP, TEACHER_IP, FORGED]

    # The scheme likewise: a forged X-Forwarded-Proto from elsewhere builds no https link.
    with client(None, server, DIRECT_IP) as http:
        r = http.get(
            f"/api/sessions/{session['id']}",
            headers={"Authorization": f"Bearer {token}", **forged},
        )
        assert r.status_code == 200, r.text
        assert r.json()["join_url"] == f"{server.base}/join/{session['join_code']}"


@pytest.mark.parametrize(
    "path",
    [
        "/metrics",
        "/METRICS",
        "/metrics/",
        "//metrics",
        "/%6Detrics",
        "/a/../metrics",
        "/docs",
        "/docs/oauth2-redirect",
        "/redoc",
        "/openapi.json",
        "/openapi.json?x=1",
    ],
)
def test_metrics_and_api_docs_are_not_published(stack, path):
    server, caddy = stack
    with client(caddy, server, STUDENT_IP) as http:
        r = http.get(caddy.base + path)
        assert r.status_code == 404, (path, r.status_code)
        assert b"# HELP" not in r.content and b"openapi" not in r.content.lower()


def test_internal_paths_stay_on_the_internal_side(stack):
    # Prometheus scrapes the gateway itself; the proxy forwards everything else unchanged.
    server, caddy = stack
    with client(None, server, DIRECT_IP) as http:
        assert "# HELP" in http.get("/metrics").text
        assert http.get("/openapi.json").json()["openapi"]
    with client(caddy, server, STUDENT_IP) as http:
        assert http.get("/healthz").status_code == 200
        assert http.get("/login").status_code == 200


def test_large_immutable_files_pass_the_proxy_as_the_gateway_serves_them(stack):
    # The runtime a class fetches at once: still gzip as stored and cached for good, over TLS.
    from app.routes.edge_files import IMMUTABLE, ORT_WASM_URL

    server, caddy = stack
    gzip = {"Accept-Encoding": "gzip"}
    with client(None, server, DIRECT_IP) as http:
        direct = http.get(ORT_WASM_URL, headers=gzip)
    with client(caddy, server, STUDENT_IP) as http:
        proxied = http.get(ORT_WASM_URL, headers=gzip)
    assert direct.status_code == proxied.status_code == 200
    assert proxied.headers["cache-control"] == IMMUTABLE
    assert proxied.headers.get("content-encoding") == direct.headers.get("content-encoding")
    assert proxied.content == direct.content and len(proxied.content) > 1_000_000


@pytest.mark.browser
def test_chromium_student_and_teacher_through_the_proxy(stack, teacher_session, tmp_path):
    from playwright.sync_api import expect

    from tests.lan_helpers import chromium_at

    server, caddy = stack
    base = f"https://{HOST}:{caddy.https_port}"
    join_url = f"{base}/join/{teacher_session['join_code']}"
    home = tmp_path / "home"
    home.mkdir()
    with chromium_at(home, tmp_path / "webcam.y4m", ca=caddy.root_ca) as browser:
        teacher = browser.new_context().new_page()  # no ignore_https_errors: the CA is trusted
        teacher.goto(base + "/login")
        teacher.fill("input[type=email]", TEACHER[0])
        teacher.fill("input[type=password]", TEACHER[1])
        teacher.click("button[type=submit]")
        teacher.wait_for_url("**/sessions")
        teacher.goto(f"{base}/sessions/{teacher_session['id']}")

        student = browser.new_context(permissions=["camera"]).new_page()
        student.goto(join_url)
        assert student.evaluate("() => window.isSecureContext") is True
        student.click("#consent-accept")
        student.fill("#display-name", "Grace")
        student.click("#join-submit")
        expect(student.locator("#stop")).to_be_enabled(timeout=20_000)  # the camera is on
        # Edge capture: faces messages over wss:// through Caddy, each acknowledged.
        expect(student.locator("#capture-mode")).to_have_attribute(
            "data-capture", "edge", timeout=20_000
        )
        expect(student.locator("#frames-acked")).not_to_have_text("0", timeout=20_000)
        # The dashboard's live socket, through Caddy too, shows her and her emotion.
        tile = teacher.locator("[data-student-id]").filter(has_text="Grace")
        expect(tile).to_have_count(1, timeout=20_000)
        expect(tile.locator(".emotion")).to_have_attribute("data-emotion", "happy", timeout=30_000)


def _children(pid: int) -> dict[str, list[int]]:
    """The `classpulse <role>` processes whose parent is ``pid``, by role."""
    found: dict[str, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and b"classpulse" in argv:
            role = argv[argv.index(b"classpulse") + 1].decode()
            found.setdefault(role, []).append(int(entry.name))
    return found


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def test_only_the_gateway_process_holds_the_signing_key(stack):
    server, _ = stack
    assert server.proc is not None
    children = _children(server.proc.pid)
    assert set(children) == {"gateway", "worker", "aggregator"}, children
    (gateway,) = children["gateway"]
    assert _environ(gateway)["CLASSPULSE_SECRET_KEY"] == SIGNING_KEY
    for role in ("worker", "aggregator"):
        for pid in children[role]:
            env = _environ(pid)
            assert "CLASSPULSE_SECRET_KEY" not in env, role
            assert SIGNING_KEY not in "\0".join(env.values()), role
            assert env["CLASSPULSE_REDIS_URL"]  # the rest of the configuration is there
