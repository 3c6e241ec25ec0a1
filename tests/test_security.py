"""The security review's findings, each pinned by a test that failed before its fix: the signing
key, body caps, login limits that can't lock a teacher out, join and socket floods, display
names, revocable tokens, production cookies and security headers on every response."""

from __future__ import annotations

import os
import stat

import pytest
from pydantic import ValidationError
from starlette.websockets import WebSocketDisconnect

from app.auth import create_access_token
from app.main import create_app
from app.text_rules import DisplayNameError, clean_display_name
from classpulse.settings import DEV_SECRET, SECRET_FILE, Settings, with_signing_key
from tests.gateway_helpers import (
    PASSWORD,
    bearer,
    client_for,
    from_address,
    join,
    make_user,
    new_session,
    next_json,
    token_protocols,
)


# --- 1. the signing key ----------------------------------------------------------------------
@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "pulse.school.example"])
def test_placeholder_or_short_secret_refused_off_loopback(host):
    with pytest.raises(ValidationError, match="refused when listening"):
        Settings(host=host, secret_key=DEV_SECRET)
    with pytest.raises(ValidationError, match="at least 32"):
        Settings(host=host, secret_key="short")
    Settings(host=host, secret_key="k" * 32)  # a real key is fine anywhere


def test_production_needs_a_configured_secret():
    with pytest.raises(ValidationError, match="production"):
        Settings(env="production")
    with pytest.raises(ValidationError, match="refused in production"):
        Settings(env="production", secret_key=DEV_SECRET)
    Settings(env="production", secret_key="p" * 40)


def test_unset_secret_is_generated_once_and_kept_private(tmp_path):
    settings = Settings(data_dir=tmp_path / "data")
    assert settings.secret_key is None
    first = with_signing_key(settings)
    path = tmp_path / "data" / SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first.secret_key or "") >= 32 and first.secret_key != DEV_SECRET
    # Every later start (and every process sharing the data folder) signs with the same key.
    assert with_signing_key(settings).secret_key == first.secret_key
    # ...and another data folder gets another key.
    assert with_signing_key(Settings(data_dir=tmp_path / "b")).secret_key != first.secret_key
    path.chmod(0o644)
    with_signing_key(settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_gateway_without_configured_secret_signs_with_the_kept_key(settings, tmp_path):
    settings = settings.model_copy(update={"secret_key": None, "data_dir": tmp_path / "d"})
    teacher = make_user(settings, "t@school.example")
    with client_for(settings) as client:
        r = client.post("/api/auth/login", json={"email": "t@school.example", "password": PASSWORD})
        assert r.status_code == 200
        token = r.json()["access_token"]
    kept = (tmp_path / "d" / SECRET_FILE).read_text().strip()
    # Tokens signed with the repository's placeholder are not accepted by this gateway.
    placeholder = settings.model_copy(update={"secret_key": DEV_SECRET})
    with client_for(settings.model_copy(update={"secret_key": kept})) as client:
        assert client.get("/api/auth/me", headers={"Authorization": "Bearer " + token}).is_success
        forged = bearer(placeholder, teacher, "admin")
        assert client.get("/api/admin/users", headers=forged).status_code == 401


# --- 2. request bodies -----------------------------------------------------------------------
def test_bodies_over_the_cap_get_413_before_any_route(settings):
    make_user(settings, "t@school.example")
    cap = settings.max_body_bytes
    with client_for(settings) as client:
        session = new_session(client, bearer(settings, make_user(settings, "o@school.example")))
        big = b'{"email": "' + b"a" * (cap + 10) + b'"}'
        for path in ("/api/auth/login", f"/api/join/{session['join_code']}"):
            r = client.post(path, content=big, headers={"Content-Type": "application/json"})
            assert r.status_code == 413, (path, r.text)
            assert f"at most {cap} bytes" in r.json()["detail"]
            assert r.headers["connection"] == "close"

            # Without a Content-Length (chunked), refused once the stream passes the cap.
            def chunks():
                yield b'{"display_name": "'
                for _ in range(cap // 1000 + 2):
                    yield b"x" * 1000
                yield b'"}'

            r = client.post(path, content=chunks(), headers={"Content-Type": "application/json"})
            assert r.status_code == 413, (path, r.text)
        # Under the cap everything works as before.
        r = client.post("/api/auth/login", json={"email": "t@school.example", "password": PASSWORD})
        assert r.status_code == 200


def _login(client, password=PASSWORD):
    body = {"email": "t@school.example", "password": password}
    return client.post("/api/auth/login", json=body)


def test_guessing_cannot_lock_the_teacher_out_of_their_browser(settings):
    settings = settings.model_copy(update={"login_attempts_per_minute": 3})
    make_user(settings, "t@school.example")
    with client_for(settings) as client:
        # The teacher logged in from this browser before: it holds a device cookie.
        with from_address(client, "10.0.0.1"):
            device = _login(client).cookies["cp_device"]
        client.cookies.clear()
        # A student guesses from two other addresses until the account locks for strangers.
        codes = []
        for address in ("10.0.0.2", "10.0.0.3"):
            with from_address(client, address):
                codes += [_login(client, f"guess {i}").status_code for i in range(3)]
        assert codes.count(401) == 3 and codes.count(429) == 3
        with from_address(client, "10.0.0.4"):  # the right password from an unknown browser
            r = _login(client)
            assert r.status_code == 429 and "browser that has logged in" in r.json()["detail"]
            client.cookies.set("cp_device", "not-a-token")  # a forged device cookie: no help
            assert _login(client).status_code == 429
            client.cookies.clear()
        with from_address(client, "10.0.0.1"):  # the teacher's own browser still gets in
            client.cookies.set("cp_device", device)
            r = _login(client)
            assert r.status_code == 200 and r.json()["access_token"]
            client.cookies.clear()
        metrics = client.get("/metrics").text
        assert 'classpulse_rate_limited_total{limit="login_account"}' in metrics


def test_login_limit_counts_per_client_address(settings):
    settings = settings.model_copy(update={"login_failures_per_minute_per_address": 3})
    make_user(settings, "t@school.example")
    make_user(settings, "u@school.example")
    with client_for(settings) as client:
        with from_address(client, "10.0.1.1"):
            for i in range(3):
                other = {"email": f"x{i}@school.example", "password": "nope"}
                assert client.post("/api/auth/login", json=other).status_code == 401
            assert client.post("/api/auth/login", json=other).status_code == 429
        with from_address(client, "10.0.1.2"):  # another client behind the same proxy
            assert _login(client).status_code == 200


# --- 8. joins, names, control messages ------------------------------------------------------
@pytest.mark.parametrize(
    "name",
    [
        "Ada\u202eevil",  # right-to-left override: reads reversed on the dashboard
        "A\u200bda",  # zero-width space: two "Ada" tiles that differ invisibly
        "\u3164\u3164",  # Hangul filler: renders blank
        "Ada\u2800",  # braille blank padding
        "Bo\x07b",  # control character
        "a" + "\u0301" * 8,  # a pile of combining accents
        "\u200dAda",  # a joiner at a word edge
        "   ",
        "\u00ad",  # a soft hyphen alone: invisible
    ],
)
def test_display_names_that_hide_or_disguise_are_refused(name):
    with pytest.raises(DisplayNameError):
        clean_display_name(name)


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("  José   María ", "José María"),
        ("Zoe\u0308", "Zoë"),  # NFC
        ("مهر\u200cناز", "مهر\u200cناز"),  # Persian with a ZWNJ inside the word
        ("Nguyễn Thị", "Nguyễn Thị"),
        ("🦊 Fox", "🦊 Fox"),
        ("李小龍", "李小龍"),
    ],
)
def test_real_names_are_kept(raw, stored):
    assert clean_display_name(raw) == stored


def test_join_refuses_disguised_names_through_the_api(settings):
    with client_for(settings) as client:
        code = new_session(client, bearer(settings, make_user(settings, "t@school.example")))[
            "join_code"
        ]
        r = client.post(f"/api/join/{code}", json={"display_name": "Ada\u202e", "consent": True})
        assert r.status_code == 400 and "U+202E" in r.json()["detail"]


def test_joins_are_limited_per_address_and_per_session_and_capped(settings):
    """Wrong codes per address, every join per address, join attempts per session and the cap
    (school-sized numbers: tests/test_school_limits.py)."""
    settings = settings.model_copy(
        update={
            "join_failures_per_minute_per_address": 2,
            "joins_per_minute_per_address": 3,
            "joins_per_minute_per_session": 5,
            "max_students_per_session": 6,
        }
    )
    with client_for(settings) as client:
        headers = bearer(settings, make_user(settings, "t@school.example"))
        code = new_session(client, headers)["join_code"]
        with from_address(client, "10.0.2.1"):
            for i in range(3):
                join(client, code, f"S{i}")
            r = client.post(f"/api/join/{code}", json={"display_name": "S3", "consent": True})
            assert r.status_code == 429 and "address" in r.json()["detail"]
        with from_address(client, "10.0.2.2"):
            join(client, code, "S4")
            join(client, code, "S5")
            r = client.post(f"/api/join/{code}", json={"display_name": "S6", "consent": True})
            assert r.status_code == 429 and "session" in r.json()["detail"]
        with from_address(client, "10.0.2.3"):  # two wrong codes, then even a right one waits
            assert client.get("/api/join/WRONG234").status_code == 404
            assert client.get("/api/join/WRONG345").status_code == 404
            assert client.get(f"/api/join/{code}").status_code == 429
        # The cap: a session with the most students allowed refuses the next join.
        settings_cap = settings.model_copy(
            update={"joins_per_minute_per_session": 100, "max_students_per_session": 2}
        )
    with client_for(settings_cap) as client:
        code = new_session(client, headers, "Small")["join_code"]
        with from_address(client, "10.0.3.1"):
            join(client, code, "A")
        with from_address(client, "10.0.3.2"):
            join(client, code, "B")
        with from_address(client, "10.0.3.3"):
            r = client.post(f"/api/join/{code}", json={"display_name": "C", "consent": True})
            assert r.status_code == 409 and "full" in r.json()["detail"]


def test_control_message_flood_is_refused_and_counted(joined, settings):
    client, _, _, student = joined
    burst = int(4 * settings.control_messages_per_second)
    with client.websocket_connect(
        "/ws/student", subprotocols=token_protocols(student["token"])
    ) as ws:
        assert ws.receive_json()["type"] == "config"
        for _ in range(burst + 5):
            ws.send_text('{"type": "stats", "captured": 1}')
        error = next_json(ws, lambda m: m["type"] == "error")
        assert "too many control messages" in error["message"]
    metrics = client.get("/metrics").text
    line = next(
        x
        for x in metrics.splitlines()
        if x.startswith('classpulse_rate_limited_total{limit="control_message"}')
    )
    assert float(line.split()[-1]) >= 5


# --- 9. revocation ---------------------------------------------------------------------------
def _live(client, session_id, token):
    return client.websocket_connect(
        f"/ws/sessions/{session_id}/live", subprotocols=token_protocols(token)
    )


def _closed_code(ws) -> int:
    with pytest.raises(WebSocketDisconnect) as closed:
        while True:
            ws.receive_json()
    return closed.value.code


def test_logout_ends_every_token_and_closes_open_dashboards(settings):
    make_user(settings, "t@school.example")
    with client_for(settings) as client:
        laptop = _login(client).json()["access_token"]
        client.cookies.clear()
        phone = _login(client).json()["access_token"]
        client.cookies.clear()
        auth = {"Authorization": "Bearer " + phone}
        session = new_session(client, auth)
        with _live(client, session["id"], laptop) as ws:
            assert ws.receive_json()["type"] == "snapshot"
            assert client.post("/api/auth/logout", headers=auth).status_code == 204
            assert _closed_code(ws) == 4401
        for token in (laptop, phone):
            r = client.get("/api/auth/me", headers={"Authorization": "Bearer " + token})
            assert r.status_code == 401 and "ended" in r.json()["detail"]
        with _live(client, session["id"], laptop) as ws:
            assert _closed_code(ws) == 4401
        assert _login(client).status_code == 200  # logging in again works


def test_password_change_keeps_this_browser_and_ends_the_others(settings):
    make_user(settings, "t@school.example")
    with client_for(settings) as client:
        other = _login(client).json()["access_token"]
        client.cookies.clear()
        mine = {"Authorization": "Bearer " + _login(client).json()["access_token"]}
        client.cookies.clear()
        body = {"current_password": "wrong one", "new_password": "a brand new passphrase"}
        assert client.post("/api/auth/password", json=body, headers=mine).status_code == 403
        short = {"current_password": PASSWORD, "new_password": "short"}
        assert client.post("/api/auth/password", json=short, headers=mine).status_code == 400
        body["current_password"] = PASSWORD
        r = client.post("/api/auth/password", json=body, headers=mine)
        assert r.status_code == 200
        fresh = {"Authorization": "Bearer " + r.json()["access_token"]}
        client.cookies.clear()
        assert client.get("/api/auth/me", headers=fresh).status_code == 200
        for old in (other, mine["Authorization"].split()[1]):
            assert (
                client.get("/api/auth/me", headers={"Authorization": "Bearer " + old}).status_code
                == 401
            )
        assert _login(client).status_code == 401
        assert _login(client, "a brand new passphrase").status_code == 200


def test_deactivation_ends_tokens_and_the_last_admin_stays(settings):
    admin = make_user(settings, "admin@school.example", "admin")
    teacher = make_user(settings, "t@school.example")
    as_admin = bearer(settings, admin, "admin")
    with client_for(settings) as client:
        session = new_session(client, bearer(settings, teacher))
        token = bearer(settings, teacher)["Authorization"].split()[1]
        with _live(client, session["id"], token) as ws:
            assert ws.receive_json()["type"] == "snapshot"
            r = client.patch(
                f"/api/admin/users/{teacher}", json={"active": False}, headers=as_admin
            )
            assert r.status_code == 200
            assert _closed_code(ws) == 4401
        assert (
            client.get("/api/sessions", headers={"Authorization": "Bearer " + token}).status_code
            == 401
        )
        assert _login(client).status_code == 401
        r = client.patch(f"/api/admin/users/{teacher}", json={"active": True}, headers=as_admin)
        assert r.status_code == 200 and _login(client).status_code == 200
        # The old token stays dead after reactivation: deactivation ended it for good.
        assert (
            client.get("/api/sessions", headers={"Authorization": "Bearer " + token}).status_code
            == 401
        )
        r = client.patch(f"/api/admin/users/{admin}", json={"active": False}, headers=as_admin)
        assert r.status_code == 409 and "last active admin" in r.json()["detail"]
        assert (
            client.patch(
                "/api/admin/users/999999", json={"active": False}, headers=as_admin
            ).status_code
            == 404
        )
        teacher_headers = bearer(settings, teacher, "teacher")
        teacher_headers["Authorization"] = "Bearer " + create_access_token(
            settings, teacher, "teacher", 99
        )
        assert client.get("/api/sessions", headers=teacher_headers).status_code == 401


# --- transport: production cookies and headers on every response ------------------------------
def test_production_cookies_are_secure_and_hsts_is_sent(settings):
    prod = settings.model_copy(update={"env": "production"})
    make_user(prod, "t@school.example")
    with client_for(prod) as client:
        r = _login(client)
        cookies = r.headers.get_list("set-cookie")
        assert len(cookies) == 2 and all("Secure" in c for c in cookies)
        assert r.headers["strict-transport-security"].startswith("max-age=")
        assert client.get("/login").headers["strict-transport-security"]
    with client_for(settings) as client:  # development over plain HTTP: no HSTS
        assert "strict-transport-security" not in client.get("/login").headers


def test_every_kind_of_response_carries_the_security_headers(joined, settings):
    client, headers, session, _ = joined
    probes = [
        ("GET", "/login", None),  # a page
        ("GET", f"/sessions/{session['id']}", None),
        ("GET", "/api/sessions", headers),  # an API answer
        ("GET", "/api/sessions", None),  # 401
        ("GET", "/api/sessions/not-a-session", headers),  # 404
        ("POST", "/api/sessions", headers),  # 422
        ("GET", "/static/js/api.js", None),  # a static file
        ("GET", "/nowhere", None),  # 404 from the router
        ("GET", "/healthz", None),
        ("GET", "/metrics", None),
        ("GET", "/openapi.json", None),
        ("GET", "/docs", None),
        ("GET", f"/qr.svg?data={session['join_url']}", None),
    ]
    for method, path, h in probes:
        r = client.request(method, path, headers=h, json={} if method == "POST" else None)
        csp = r.headers.get("content-security-policy", "")
        assert "frame-ancestors 'none'" in csp, (path, r.status_code)
        assert r.headers.get("x-content-type-options") == "nosniff", path
        assert r.headers.get("referrer-policy") == "same-origin", path
        if path in ("/login", f"/sessions/{session['id']}"):
            assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        elif path != "/docs":
            assert csp.startswith("default-src 'none'"), path
    r = client.post("/api/auth/login", content=b"x" * (settings.max_body_bytes + 1))
    assert r.status_code == 413 and "frame-ancestors 'none'" in r.headers["content-security-policy"]


def test_create_app_without_a_configured_key_generates_one(monkeypatch, tmp_path):
    # CLASSPULSE_SECRET_KEY unset and a data folder: the gateway makes its own key, never the
    # placeholder.
    monkeypatch.delenv("CLASSPULSE_SECRET_KEY", raising=False)
    monkeypatch.setenv("CLASSPULSE_DATA_DIR", str(tmp_path))
    app = create_app()
    assert app is not None and (tmp_path / SECRET_FILE).exists()
    assert (tmp_path / SECRET_FILE).read_text().strip() != DEV_SECRET
    assert os.stat(tmp_path / SECRET_FILE).st_mode & 0o077 == 0
