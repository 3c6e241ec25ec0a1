"""Login, cookie and CSRF rules, the brute-force limit, and "no token, no data"."""

from __future__ import annotations

import uuid

import pytest

from app.auth import create_student_token
from tests.gateway_helpers import PASSWORD, bearer, client_for, join, make_user, new_session

PROTECTED = [
    ("GET", "/api/auth/me"),
    ("GET", "/api/admin/users"),
    ("POST", "/api/admin/users"),
    ("GET", "/api/sessions"),
    ("POST", "/api/sessions"),
    ("GET", "/api/sessions/{sid}"),
    ("POST", "/api/sessions/{sid}/end"),
    ("GET", "/api/sessions/{sid}/students"),
    ("GET", "/api/sessions/{sid}/history"),
    ("POST", "/api/student/withdraw"),
]


def test_login_sets_token_and_cookie(settings):
    make_user(settings, "t@school.example")
    with client_for(settings) as client:
        r = client.post(
            "/api/auth/login", json={"email": " T@School.example ", "password": PASSWORD}
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["token_type"] == "bearer" and body["expires_in"] == settings.access_token_ttl_s
        assert body["user"]["email"] == "t@school.example" and body["user"]["role"] == "teacher"
        cookies = {c.split("=", 1)[0]: c for c in r.headers.get_list("set-cookie")}
        cookie = cookies["cp_access"]
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/;" in cookie
        assert "Secure" not in cookie  # public_url is not https and env is not production
        # The device cookie: read by the login alone, never sent cross-site.
        device = cookies["cp_device"]
        assert "HttpOnly" in device and "SameSite=strict" in device
        assert "Path=/api/auth/login" in device

        me = client.get("/api/auth/me", headers={"Authorization": "Bearer " + body["access_token"]})
        assert me.json()["email"] == "t@school.example"
        assert client.get("/api/auth/me").status_code == 200  # the cookie alone also works

        # Cookie-authenticated writes need the CSRF header; bearer-authenticated ones don't.
        r = client.post("/api/sessions", json={"title": "x"})
        assert r.status_code == 403 and "X-ClassPulse-CSRF" in r.json()["detail"]
        assert (
            client.post(
                "/api/sessions", json={"title": "x"}, headers={"X-ClassPulse-CSRF": "1"}
            ).status_code
            == 201
        )

        assert client.post("/api/auth/logout").status_code == 204
        assert client.get("/api/auth/me").status_code == 401


def test_bad_credentials_then_rate_limited(settings):
    settings = settings.model_copy(
        update={"login_attempts_per_minute": 3, "login_failures_per_minute_per_address": 5}
    )
    make_user(settings, "t@school.example")
    with client_for(settings) as client:
        for _ in range(3):
            r = client.post(
                "/api/auth/login", json={"email": "t@school.example", "password": "wrong password"}
            )
            assert r.status_code == 401 and r.json()["detail"] == "wrong email or password"
        r = client.post("/api/auth/login", json={"email": "t@school.example", "password": PASSWORD})
        assert r.status_code == 429
        assert 1 <= int(r.headers["retry-after"]) <= 60 and "too many" in r.json()["detail"]
        # Failures per client address (the four above, the refused one included) hold for other
        # accounts too.
        r = client.post("/api/auth/login", json={"email": "other@school.example", "password": "x"})
        assert r.status_code == 401
        r = client.post("/api/auth/login", json={"email": "other@school.example", "password": "x"})
        assert r.status_code == 429 and "this address" in r.json()["detail"]


def test_unknown_email_is_401(settings):
    with client_for(settings) as client:
        r = client.post(
            "/api/auth/login", json={"email": "nobody@school.example", "password": PASSWORD}
        )
        assert r.status_code == 401


def test_no_token_no_data(settings):
    teacher = make_user(settings, "t@school.example")
    with client_for(settings) as client:
        sid = new_session(client, bearer(settings, teacher))["id"]
        for method, path in PROTECTED:
            r = client.request(method, path.format(sid=sid), json={})
            assert r.status_code == 401, (method, path, r.text)
            assert r.json()["detail"].startswith("not authenticated")
            bad = {"Authorization": "Bearer not-a-token"}
            assert (
                client.request(method, path.format(sid=sid), json={}, headers=bad).status_code
                == 401
            )


def test_student_token_cannot_use_teacher_api(settings):
    teacher = make_user(settings, "t@school.example")
    with client_for(settings) as client:
        session = new_session(client, bearer(settings, teacher))
        student = join(client, session["join_code"])
        as_student = {"Authorization": "Bearer " + student["token"]}
        for method, path in PROTECTED[:-1]:
            r = client.request(method, path.format(sid=session["id"]), json={}, headers=as_student)
            assert r.status_code == 401, (method, path)
        # ...and a teacher's token is not a student token.
        r = client.post("/api/student/withdraw", headers=bearer(settings, teacher))
        assert r.status_code == 401


def test_other_secret_is_refused(settings):
    teacher = make_user(settings, "t@school.example")
    other = settings.model_copy(update={"secret_key": "another-secret-key-of-sufficient-length-42"})
    with client_for(settings) as client:
        assert client.get("/api/sessions", headers=bearer(other, teacher)).status_code == 401
        forged = create_student_token(other, uuid.uuid4(), uuid.uuid4())
        r = client.post("/api/student/withdraw", headers={"Authorization": "Bearer " + forged})
        assert r.status_code == 401


@pytest.mark.parametrize("role", ["teacher", "admin"])
def test_admin_manages_users(settings, role):
    caller = make_user(settings, "caller@school.example", role)
    new = {
        "email": "new@school.example",
        "password": "long enough password",
        "role": "teacher",
        "display_name": "Ms New",
    }
    with client_for(settings) as client:
        r = client.post("/api/admin/users", json=new, headers=bearer(settings, caller, role))
        if role == "teacher":
            assert r.status_code == 403 and r.json()["detail"] == "administrators only"
            assert (
                client.get("/api/admin/users", headers=bearer(settings, caller)).status_code == 403
            )
            return
        assert r.status_code == 201 and r.json()["display_name"] == "Ms New"
        again = client.post("/api/admin/users", json=new, headers=bearer(settings, caller, role))
        assert again.status_code == 409
        weak = client.post(
            "/api/admin/users",
            json={**new, "email": "b@x.example", "password": "short"},
            headers=bearer(settings, caller, role),
        )
        assert weak.status_code == 400 and "at least" in weak.json()["detail"]
        emails = [
            u["email"]
            for u in client.get("/api/admin/users", headers=bearer(settings, caller, role)).json()
        ]
        assert emails == ["caller@school.example", "new@school.example"]
