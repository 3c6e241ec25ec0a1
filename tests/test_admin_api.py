"""The admin API behind the admin pages, on the real PostgreSQL and Redis: accounts with one-time
set-password links, the last-admin guard, display names students see, the audit log's filters
and CSV, exports by teacher and as PDF, finding students to erase, and the system status."""

from __future__ import annotations

import csv
import io
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from sqlalchemy.orm import Session

from classpulse import audit, contracts
from classpulse.db import AuditEntry, User, make_engine
from tests.gateway_helpers import (
    PASSWORD,
    bearer,
    client_for,
    join,
    make_user,
    new_session,
)

NEW_PASSWORD = "a fresh passphrase 42"
# The acting admin's own password, entered again for a set-password link.
REAUTH = {"current_password": PASSWORD}


def _token(link: dict[str, Any]) -> str:
    url = link["url"]
    assert "/set-password#token=" in url, url  # in the fragment: never sent to the server
    return url.split("#token=", 1)[1]


def _entries(settings, action: str) -> list[AuditEntry]:
    engine = make_engine(settings.database_url)
    try:
        with Session(engine) as db:
            return list(db.query(AuditEntry).filter(AuditEntry.action == action))
    finally:
        engine.dispose()


def test_new_account_gets_a_one_time_link_that_works_once(settings):
    admin = make_user(settings, "admin@school.example", "admin")
    headers = bearer(settings, admin, "admin")
    with client_for(settings) as client:
        r = client.post(
            "/api/admin/users",
            json={"email": "New.Teacher@school.example", "display_name": "Mr New"},
            headers=headers,
        )
        assert r.status_code == 201, r.text
        made = r.json()
        assert made["email"] == "new.teacher@school.example" and made["role"] == "teacher"
        assert made["active"] and made["last_login_at"] is None and made["sessions_owned"] == 0
        token = _token(made["password_link"])
        expires = datetime.fromisoformat(made["password_link"]["expires_at"])
        assert timedelta(hours=23) < expires - datetime.now(UTC) <= timedelta(hours=24)

        # Only a hash is stored.
        with psycopg.connect(settings.database_url) as conn:
            stored = [r[0] for r in conn.execute("SELECT token_hash FROM password_links")]
        assert len(stored) == 1 and token not in stored[0] and len(stored[0]) == 64

        # A refused password leaves the link usable.
        short = client.post("/api/auth/set-password", json={"token": token, "new_password": "x"})
        assert short.status_code == 400 and "10 characters" in short.json()["detail"]
        r = client.post(
            "/api/auth/set-password", json={"token": token, "new_password": NEW_PASSWORD}
        )
        assert r.status_code == 200, r.text
        assert r.json()["user"]["email"] == made["email"] and "cp_access" in r.cookies
        # Logged in: the token works; and the new password logs in.
        me = client.get(
            "/api/auth/me", headers={"Authorization": "Bearer " + r.json()["access_token"]}
        )
        assert me.status_code == 200 and me.json()["display_name"] == "Mr New"
        client.cookies.clear()
        login = client.post(
            "/api/auth/login", json={"email": made["email"], "password": NEW_PASSWORD}
        )
        assert login.status_code == 200
        # Single use.
        again = client.post(
            "/api/auth/set-password", json={"token": token, "new_password": "another passphrase"}
        )
        assert again.status_code == 400 and "used" in again.json()["detail"]
        listed = {u["email"]: u for u in client.get("/api/admin/users", headers=headers).json()}
        assert listed[made["email"]]["last_login_at"] is not None
    actions = [e.action for e in _entries(settings, "account.create")]
    assert actions == ["account.create"]
    assert [e.detail["by"] for e in _entries(settings, "account.password_set")] == ["link"]


def test_link_expires_and_a_newer_link_ends_the_older(settings):
    admin = make_user(settings, "admin@school.example", "admin")
    teacher = make_user(settings, "t@school.example")
    headers = bearer(settings, admin, "admin")
    with client_for(settings) as client:
        path = f"/api/admin/users/{teacher}/password-link"
        first = _token(client.post(path, json=REAUTH, headers=headers).json())
        second = _token(client.post(path, json=REAUTH, headers=headers).json())
        body = {"token": first, "new_password": NEW_PASSWORD}
        r = client.post("/api/auth/set-password", json=body)
        assert r.status_code == 400, r.text
        # Expired: moved into the past in the database.
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            conn.execute("UPDATE password_links SET expires_at = now() - interval '1 minute'")
        r = client.post("/api/auth/set-password", json={**body, "token": second})
        assert r.status_code == 400 and "expired" in r.json()["detail"]
        # The old password still works: a link changes nothing until it is used.
        ok = client.post(
            "/api/auth/login", json={"email": "t@school.example", "password": PASSWORD}
        )
        assert ok.status_code == 200
        # Teachers can't make links; unknown accounts are 404.
        assert client.post(path, json=REAUTH, headers=bearer(settings, teacher)).status_code == 403
        assert (
            client.post(
                "/api/admin/users/99999/password-link", json=REAUTH, headers=headers
            ).status_code
            == 404
        )
    entries = _entries(settings, "account.password_link")
    assert len(entries) == 2 and all(e.ip for e in entries)


def test_a_link_needs_the_acting_admins_own_password(settings):
    """A set-password link takes over an account: without the acting admin's password entered
    again there is none, for a teacher, another admin or the admin themself; each refusal is
    audited and counts as a failed login of the admin's account."""
    settings = settings.model_copy(update={"login_attempts_per_minute": 3})
    admin = make_user(settings, "admin@school.example", "admin")
    other = make_user(settings, "other@school.example", "admin")
    teacher = make_user(settings, "t@school.example")
    headers = bearer(settings, admin, "admin")
    wrong = {"current_password": "not my password"}
    with client_for(settings) as client:
        for target in (teacher, other, admin):
            path = f"/api/admin/users/{target}/password-link"
            assert client.post(path, headers=headers).status_code == 422  # no password at all
            r = client.post(path, json={"current_password": ""}, headers=headers)
            assert r.status_code == 403 and r.json()["detail"] == "the current password is wrong"
        # Another admin's password is not this admin's.
        r = client.post(
            f"/api/admin/users/{teacher}/password-link",
            json=REAUTH,
            headers=bearer(settings, make_user(settings, "new@school.example", "admin"), "admin"),
        )
        assert r.status_code == 201  # (its own password: PASSWORD, as every test account's)
        with psycopg.connect(settings.database_url) as conn:
            links = conn.execute("SELECT user_id FROM password_links").fetchall()
        assert links == [(teacher,)]
        refused = _entries(settings, "account.password_link_refused")
        assert sorted(int(e.target_id) for e in refused) == sorted([teacher, other, admin])
        assert all(e.actor_email == "admin@school.example" and e.ip for e in refused)
        # Three wrong passwords were counted for the admin's account: the fourth try is refused
        # even with the right password, as a login would be.
        r = client.post(f"/api/admin/users/{teacher}/password-link", json=wrong, headers=headers)
        assert r.status_code == 429, r.text
        r = client.post(f"/api/admin/users/{teacher}/password-link", json=REAUTH, headers=headers)
        assert r.status_code == 429
        r = client.post(
            "/api/auth/login", json={"email": "admin@school.example", "password": PASSWORD}
        )
        assert r.status_code == 429 and "this account" in r.json()["detail"]
        # A teacher never gets that far, password or not.
        r = client.post(
            f"/api/admin/users/{teacher}/password-link",
            json=REAUTH,
            headers=bearer(settings, teacher),
        )
        assert r.status_code == 403 and "admin" in r.json()["detail"]
    assert len(_entries(settings, "account.password_link")) == 1


def test_last_active_admin_can_be_neither_deactivated_nor_demoted(settings):
    admin = make_user(settings, "admin@school.example", "admin")
    headers = bearer(settings, admin, "admin")
    with client_for(settings) as client:
        path = f"/api/admin/users/{admin}"
        for body in ({"active": False}, {"role": "teacher"}):
            r = client.patch(path, json=body, headers=headers)
            assert r.status_code == 409, r.text
            assert "last active admin" in r.json()["detail"]
        # With a second admin, the first can be made a teacher; its old (admin) token ends.
        other = make_user(settings, "other@school.example", "admin")
        r = client.patch(path, json={"role": "teacher"}, headers=bearer(settings, other, "admin"))
        assert r.status_code == 200 and r.json()["role"] == "teacher"
        assert client.get("/api/auth/me", headers=headers).status_code == 401
        # ...and now the other is the last one.
        r = client.patch(
            f"/api/admin/users/{other}",
            json={"active": False},
            headers=bearer(settings, other, "admin"),
        )
        assert r.status_code == 409


def test_deactivated_accounts_tokens_stop_at_once_and_reactivation(settings):
    admin = make_user(settings, "admin@school.example", "admin")
    teacher = make_user(settings, "t@school.example")
    headers = bearer(settings, admin, "admin")
    teacher_headers = bearer(settings, teacher)
    with client_for(settings) as client:
        new_session(client, teacher_headers)
        r = client.patch(f"/api/admin/users/{teacher}", json={"active": False}, headers=headers)
        assert r.status_code == 200 and r.json()["active"] is False
        assert r.json()["sessions_owned"] == 1
        assert client.get("/api/auth/me", headers=teacher_headers).status_code == 401
        # A deactivated account gets no link either (409), until reactivated.
        link = f"/api/admin/users/{teacher}/password-link"
        assert client.post(link, json=REAUTH, headers=headers).status_code == 409
        r = client.patch(f"/api/admin/users/{teacher}", json={"active": True}, headers=headers)
        assert r.status_code == 200 and r.json()["active"] is True
        assert client.post(link, json=REAUTH, headers=headers).status_code == 201
        # The admin can rename an account too; control characters are refused.
        r = client.patch(
            f"/api/admin/users/{teacher}", json={"display_name": "Mr T"}, headers=headers
        )
        assert r.status_code == 200 and r.json()["display_name"] == "Mr T"
        bad = {"display_name": "Mr\x07T"}
        assert (
            client.patch(f"/api/admin/users/{teacher}", json=bad, headers=headers).status_code
            == 422
        )
    changes = [e.detail for e in _entries(settings, "account.update")]
    assert [c["active"]["after"] for c in changes if "active" in c] == [False, True]
    assert changes[-1]["display_name"] == {"before": "t", "after": "Mr T"}


def test_display_name_is_what_students_see(settings):
    teacher = make_user(settings, "jane.doe@school.example")
    headers = bearer(settings, teacher)
    with client_for(settings) as client:
        session = new_session(client, headers)
        info = client.get(f"/api/join/{session['join_code']}").json()
        assert info["teacher"] == "jane.doe"  # the email's local part until one is set
        r = client.patch("/api/auth/me", json={"display_name": "  Ms Doe  "}, headers=headers)
        assert r.status_code == 200 and r.json()["display_name"] == "Ms Doe"
        assert client.get(f"/api/join/{session['join_code']}").json()["teacher"] == "Ms Doe"
        # Empty: back to the email's local part; control characters are refused.
        r = client.patch("/api/auth/me", json={"display_name": ""}, headers=headers)
        assert r.json()["display_name"] == "jane.doe"
        # The students' rule for names: no control, bidi-override or blank-looking characters
        # (a name that reads backwards or as nothing on the student's page).
        for name in ("Ms\x00Doe", "Ms \u202eeoD", "\u3164", "Ms\u200bDoe"):
            bad = client.patch("/api/auth/me", json={"display_name": name}, headers=headers)
            assert bad.status_code == 422, name
        admin = bearer(settings, make_user(settings, "head@school.example", "admin"), "admin")
        user_id = client.get("/api/auth/me", headers=headers).json()["id"]
        bad = client.patch(
            f"/api/admin/users/{user_id}", json={"display_name": "\u202eeoD"}, headers=admin
        )
        assert bad.status_code == 422
        assert client.patch("/api/auth/me", json={"display_name": "x"}).status_code == 401


def test_audit_filters_paging_and_csv(settings):
    admin = make_user(settings, "admin@school.example", "admin")
    teacher = make_user(settings, "t@school.example")
    headers = bearer(settings, admin, "admin")
    session_id = str(uuid.uuid4())
    engine = make_engine(settings.database_url)
    try:
        with Session(engine) as db:
            actor = db.get(User, teacher)
            for _ in range(5):
                audit.record(db, actor, "view.timeline", "session", session_id, {}, "10.0.0.7")
            audit.record(
                db, None, "delete.student", "student", "=HYPERLINK(1)", {"session_id": session_id}
            )
            db.commit()
    finally:
        engine.dispose()
    with client_for(settings) as client:

        def get(**params: Any) -> dict[str, Any]:
            r = client.get("/api/admin/audit", params=params, headers=headers)
            assert r.status_code == 200, r.text
            return r.json()

        mine = get(actor="T@SCHOOL")["entries"]
        assert len(mine) == 5 and {e["ip"] for e in mine} == {"10.0.0.7"}
        assert len(get(target=session_id)["entries"]) == 6  # target id or detail.session_id
        assert [e["action"] for e in get(action="delete.*")["entries"]] == ["delete.student"]
        assert get(actor="nobody")["entries"] == []
        page = get(actor="t@", limit=2)
        assert len(page["entries"]) == 2 and page["next_before_id"]
        rest = get(actor="t@", limit=10, before_id=page["next_before_id"])["entries"]
        assert len(rest) == 3 and rest[0]["id"] < page["entries"][-1]["id"]
        tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
        assert get(**{"from": tomorrow + "T00:00:00Z"})["entries"] == []
        r = client.get(
            "/api/admin/audit", params={"format": "csv", "target": session_id}, headers=headers
        )
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(r.text)))
        assert len(rows) == 6
        erased = next(x for x in rows if x["action"] == "delete.student")
        assert erased["target_id"] == "'=HYPERLINK(1)"  # escaped against formulas
        assert json.loads(erased["detail"]) == {"session_id": session_id}
        assert client.get("/api/admin/audit", headers=bearer(settings, teacher)).status_code == 403
    (export,) = _entries(settings, "export.audit")
    assert export.detail["target"] == session_id and export.detail["rows"] == 6


def test_export_by_teacher_as_pdf_and_an_empty_range(settings):
    admin = make_user(settings, "admin@school.example", "admin")
    one = make_user(settings, "one@school.example")
    two = make_user(settings, "two@school.example")
    headers = bearer(settings, admin, "admin")
    today = datetime.now(UTC).date().isoformat()
    with client_for(settings) as client:
        mine = new_session(client, bearer(settings, one), "Maths")
        new_session(client, bearer(settings, two), "Physics")
        r = client.get(
            "/api/admin/reports",
            params={"from": today, "to": today, "teacher": one},
            headers=headers,
        )
        assert r.status_code == 200 and r.headers["x-classpulse-sessions"] == "1"
        assert [s["session"]["id"] for s in r.json()["sessions"]] == [mine["id"]]
        r = client.get(
            "/api/admin/reports",
            params={"from": today, "to": today, "format": "pdf"},
            headers=headers,
        )
        assert r.status_code == 200 and r.content.startswith(b"%PDF")
        assert r.headers["x-classpulse-sessions"] == "2"
        assert r.headers["content-type"] == "application/pdf"
        empty = {"from": "2001-01-01", "to": "2001-01-31"}
        r = client.get("/api/admin/reports", params={**empty, "format": "csv"}, headers=headers)
        assert r.status_code == 200 and r.headers["x-classpulse-sessions"] == "0"
        r = client.get("/api/admin/reports", params={**empty, "format": "pdf"}, headers=headers)
        assert r.status_code == 404 and "no sessions" in r.json()["detail"]
    formats = [e.detail["format"] for e in _entries(settings, "export.report")]
    assert formats == ["json", "pdf", "csv"]  # the empty PDF exported nothing: no entry


def test_find_students_and_what_an_erasure_would_delete(settings):
    admin = make_user(settings, "admin@school.example", "admin")
    teacher = make_user(settings, "t@school.example")
    headers = bearer(settings, admin, "admin")
    with client_for(settings) as client:
        session = new_session(client, bearer(settings, teacher), "Chemistry")
        other = new_session(client, bearer(settings, teacher), "Biology")
        ada = join(client, session["join_code"], "Ada Lovelace")
        join(client, session["join_code"], "Bo")
        join(client, other["join_code"], "Ada King")
        r = client.get("/api/admin/students", params={"name": "ada"}, headers=headers)
        assert r.status_code == 200
        assert {s["display_name"] for s in r.json()} == {"Ada Lovelace", "Ada King"}
        r = client.get(
            "/api/admin/students", params={"name": "ada", "session": session["id"]}, headers=headers
        )
        (found,) = r.json()
        assert found["id"] == ada["student_id"] and found["session_title"] == "Chemistry"
        assert found["teacher_email"] == "t@school.example" and found["consent_records"] == 1
        assert client.get("/api/admin/students", params={"name": "%"}, headers=headers).json() == []
        data = client.get(f"/api/admin/sessions/{session['id']}/data", headers=headers).json()
        assert (
            data["students"] == 2 and data["consent_records"] == 2 and data["title"] == "Chemistry"
        )
        # Erased: no longer found.
        assert (
            client.delete(f"/api/admin/students/{ada['student_id']}", headers=headers).status_code
            == 200
        )
        r = client.get("/api/admin/students", params={"session": session["id"]}, headers=headers)
        assert [s["display_name"] for s in r.json()] == ["Bo"]
        teacher_try = client.get("/api/admin/students", headers=bearer(settings, teacher))
        assert teacher_try.status_code == 403


def test_system_status_aggregates_what_services_publish(settings, clean_redis):
    admin = make_user(settings, "admin@school.example", "admin")
    teacher = make_user(settings, "t@school.example")
    now = datetime.now(UTC).timestamp()
    clean_redis.set(contracts.WORKER_HEARTBEAT_PREFIX + "worker-a", str(now - 2), ex=30)
    clean_redis.set(contracts.AGGREGATOR_HEARTBEAT_PREFIX + "agg-a", str(now), ex=30)
    clean_redis.hset(contracts.WORKER_LAG_KEY, "worker-a", f"120 {now:.1f}")
    clean_redis.hset(
        contracts.STATS_KEY, mapping={"worker.processed": 100, "worker.dropped.stale": 3}
    )
    clean_redis.hset(
        contracts.MODEL_INFO_KEY, mapping={"emotion": "mini-xception@1", "detector": "blazeface@1"}
    )
    clean_redis.xadd(contracts.FRAMES_STREAM, {"x": b"1"})
    headers = bearer(settings, admin, "admin")
    with client_for(settings) as client:
        r = client.get("/api/admin/status", headers=headers)
        assert r.status_code == 200, r.text
        s = r.json()
        assert s["database"] == "ok" and s["redis"] == "ok" and s["schema_revision"]
        assert [(w["name"], w["lag_ms"]) for w in s["workers"]] == [("worker-a", 120.0)]
        assert 1 <= s["workers"][0]["last_beat_s_ago"] < 10
        assert [a["name"] for a in s["aggregators"]] == ["agg-a"]
        frames = next(x for x in s["streams"] if x["stream"] == contracts.FRAMES_STREAM)
        assert frames["length"] == 1
        assert s["counters"] == {"worker.processed": 100, "worker.dropped.stale": 3}
        assert s["models"]["emotion"] == "mini-xception@1" and s["execution_providers"] is None
        # The counters grow: the windows say by how much since the first sample.
        clean_redis.hincrby(contracts.STATS_KEY, "worker.processed", 40)
        clean_redis.hincrby(contracts.STATS_KEY, "worker.dropped.stale", 2)
        s = client.get("/api/admin/status", headers=headers).json()
        last_minute = next(w for w in s["windows"] if w["window_s"] == 60)
        assert last_minute["counts"] == {"worker.processed": 40, "worker.dropped.stale": 2}
        assert client.get("/api/admin/status", headers=bearer(settings, teacher)).status_code == 403


# --- the pages: shells with their hooks; the nav shows Admin to admins only --------------------
ADMIN_PAGES = {
    "/admin/people": ['id="add-form"', 'id="people-table"', "/static/js/admin_people.js"],
    "/admin/policy": ['id="policy-form"', 'name="emotion_mode"', "Article 5(1)(f)"],
    "/admin/reports": ['id="export-form"', 'id="fmt-pdf"', 'id="export-status"'],
    "/admin/audit": ['id="audit-form"', 'id="audit-table"', 'id="audit-csv"'],
    "/admin/erasure": ['id="find-form"', 'id="found-table"', 'id="erase-session"'],
    "/admin/status": ['id="services-table"', 'id="counters-table"', 'id="status-alert"'],
}


def test_admin_pages_render_as_shells(settings):
    admin = make_user(settings, "admin@school.example", "admin")
    teacher = make_user(settings, "t@school.example")
    with client_for(settings) as client:
        for path, hooks in ADMIN_PAGES.items():
            r = client.get(path)
            assert (
                r.status_code == 200 and "script-src 'self'" in r.headers["content-security-policy"]
            )
            for hook in [*hooks, 'id="admin-denied"', 'id="confirm-dialog"', "admin_common.js"]:
                assert hook in r.text, (path, hook)
            assert 'aria-current="page"' in r.text
        assert client.get("/admin", follow_redirects=False).headers["location"] == "/admin/people"
        for path, hook in (("/account", 'id="name-form"'), ("/set-password", 'id="set-form"')):
            r = client.get(path)
            assert r.status_code == 200 and hook in r.text
        # The nav: "Admin" for an admin's cookie only (a hint: the API decides).
        as_admin = bearer(settings, admin, "admin")["Authorization"].split()[1]
        as_teacher = bearer(settings, teacher)["Authorization"].split()[1]
        # A signed-in teacher gets 403 on every admin page (and its "administrators only" state).
        for token, code in ((as_teacher, 403), (as_admin, 200)):
            client.cookies.set("cp_access", token)
            for path in ADMIN_PAGES:
                assert client.get(path).status_code == code, (path, code)
        client.cookies.clear()
        for token, shown in ((as_admin, True), (as_teacher, False), ("garbage", False)):
            client.cookies.set("cp_access", token)
            body = client.get("/sessions").text
            assert ('href="/admin/people"' in body) is shown
            assert 'href="/account"' in body
        client.cookies.clear()


def test_admin_templates_and_scripts_follow_the_csp():
    """No inline script, handler or style anywhere in what the admin pages are made of."""
    from classpulse.settings import REPO_ROOT

    web = REPO_ROOT / "web"
    names = [
        *sorted((web / "templates").glob("admin_*.html")),
        web / "templates" / "account.html",
        web / "templates" / "set_password.html",
    ]
    for path in names:
        text = path.read_text()
        assert "style=" not in text and "<style" not in text, path
        assert " on" + "click" not in text and "javascript:" not in text, path
        for tag in text.split("<script")[1:]:
            # A file from this origin (a module or a classic script), never inline code.
            assert ' src="/static/' in tag.split(">", 1)[0], path
    for path in sorted((web / "static" / "js").glob("admin_*.js")):
        text = path.read_text()
        assert ".innerHTML" not in text and ".style." not in text, path


def test_links_of_a_demoted_admin_stop_working(settings):
    """An admin about to lose the role makes a link for another admin's account: once demoted
    (or deactivated), that link is void, and so are links made for the demoted account."""
    a = make_user(settings, "a@school.example", "admin")
    b = make_user(settings, "b@school.example", "admin")
    with client_for(settings) as client:
        by_a = _token(
            client.post(
                f"/api/admin/users/{b}/password-link",
                json=REAUTH,
                headers=bearer(settings, a, "admin"),
            ).json()
        )
        for_a = _token(
            client.post(
                f"/api/admin/users/{a}/password-link",
                json=REAUTH,
                headers=bearer(settings, b, "admin"),
            ).json()
        )
        r = client.patch(
            f"/api/admin/users/{a}", json={"role": "teacher"}, headers=bearer(settings, b, "admin")
        )
        assert r.status_code == 200
        for token in (by_a, for_a):
            r = client.post(
                "/api/auth/set-password", json={"token": token, "new_password": NEW_PASSWORD}
            )
            assert r.status_code == 400, r.text
        # b's password is unchanged.
        ok = client.post(
            "/api/auth/login", json={"email": "b@school.example", "password": PASSWORD}
        )
        assert ok.status_code == 200


def test_concurrent_revocations_each_bump_the_token_version(settings):
    from classpulse.accounts import revoke_tokens

    teacher = make_user(settings, "t@school.example")
    engine = make_engine(settings.database_url)
    try:
        with Session(engine) as one, Session(engine) as two:
            u1, u2 = one.get(User, teacher), two.get(User, teacher)
            assert u1 is not None and u2 is not None
            start = u1.token_version
            revoke_tokens(u1)
            one.commit()
            revoke_tokens(u2)  # loaded before the first commit: still increments in SQL
            two.commit()
            two.refresh(u2)
            assert u2.token_version == start + 2
    finally:
        engine.dispose()
