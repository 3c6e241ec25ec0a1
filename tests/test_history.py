"""The history API (class series, per-student drill-down under the policy, audit) and, in
Chromium against the full service, the history page, the session list's figures, the PDF
download and the dashboard's alerts panel and honest tiles."""

from __future__ import annotations

import json

import pytest
import redis
from sqlalchemy import select

from classpulse import contracts as c
from classpulse.db import AuditEntry
from tests.browser import chromium, create_teacher, teacher_logged_in
from tests.gateway_helpers import bearer, client_for, make_user
from tests.history_helpers import T0, T1, db_session, seed_session, set_policy

TEACHER = ("history@school.test", "teacher-password-1")


@pytest.fixture
def policy_reset(settings):
    yield
    set_policy(settings, "per_student", 5)


def audit_actions(settings):
    with db_session(settings) as db:
        return [
            (e.action, e.target_type, e.target_id)
            for e in db.scalars(select(AuditEntry).order_by(AuditEntry.id))
        ]


def test_history_api_and_student_drill_down(settings):
    teacher = make_user(settings, "t@school.example")
    seeded = seed_session(settings, teacher)
    other = seed_session(settings, teacher, "Physics")
    headers = bearer(settings, teacher)
    with client_for(settings) as client:
        data = client.get(f"/api/sessions/{seeded.session_id}/history", headers=headers).json()
        assert [r["scope"] for r in data["rows"]] == ["class", "class"]  # students: drill-down only
        assert [r["students_present"] for r in data["rows"]] == [2, 1]
        assert data["rows"][0]["probs"]["sad"] == 0.4375 and data["rows"][1]["dominant"] == "happy"
        assert [s["display_name"] for s in data["students"]] == ["Ada", "Bob", "Cy"]
        assert data["summary"]["alerts"] == 2 and len(data["alerts"]) == 2
        assert audit_actions(settings) == []  # class aggregates: not a per-student view

        r = client.get(
            f"/api/sessions/{seeded.session_id}/history/students/{seeded.ada}", headers=headers
        )
        assert r.status_code == 200
        ada = r.json()
        assert ada["display_name"] == "Ada"
        assert [(x["bucket_start"], x["probs"]["happy"], x["dominant"]) for x in ada["rows"]] == [
            (T0.isoformat(), 0.75, "happy"),
            (T1.isoformat(), 1.0, "happy"),
        ]
        assert audit_actions(settings) == [("view.history", "student", seeded.ada)]
        # A student of another session, or no student at all: 404, nothing recorded.
        assert (
            client.get(
                f"/api/sessions/{seeded.session_id}/history/students/{other.ada}", headers=headers
            ).status_code
            == 404
        )
        assert (
            client.get(
                f"/api/sessions/{seeded.session_id}/history/students/nope", headers=headers
            ).status_code
            == 422
        )
        assert len(audit_actions(settings)) == 1


def test_history_outside_per_student_mode(settings, policy_reset):
    teacher = make_user(settings, "t@school.example")
    seeded = seed_session(settings, teacher)
    set_policy(settings, "aggregate_only", 2)
    headers = bearer(settings, teacher)
    with client_for(settings) as client:
        data = client.get(f"/api/sessions/{seeded.session_id}/history", headers=headers).json()
        assert data["students"] == [] and [r["suppressed"] for r in data["rows"]] == [False, True]
        assert data["rows"][1]["probs"] is None
        r = client.get(
            f"/api/sessions/{seeded.session_id}/history/students/{seeded.ada}", headers=headers
        )
        assert r.status_code == 403
    set_policy(settings, "off")
    with client_for(settings) as client:
        data = client.get(f"/api/sessions/{seeded.session_id}/history", headers=headers).json()
        assert all(r["probs"] is None for r in data["rows"]) and data["summary"]["dominant"] is None


def test_history_page_renders_without_login(settings):
    with client_for(settings) as client:
        r = client.get("/sessions/abc/history")
    assert r.status_code == 200 and "script-src 'self'" in r.headers["content-security-policy"]
    for hook in (
        'id="mix-chart"',
        'id="presence-chart"',
        'id="student-select"',
        'id="alert-list"',
        'id="report-pdf"',
        "/static/js/history.js",
        "/static/vendor/chart.umd.js",
    ):
        assert hook in r.text


# --- in Chromium, against the full service ---------------------------------------------------------
@pytest.mark.browser
def test_teacher_reviews_history_downloads_pdf_and_sees_alerts(server, settings, tmp_path):
    from playwright.sync_api import expect

    created = create_teacher(server, server.login(), TEACHER, display_name="Ms H")
    seeded = seed_session(settings, created["id"], "Biology 9B")
    with chromium() as browser, redis.Redis.from_url(settings.redis_url) as r:
        page = teacher_logged_in(browser, server, TEACHER, accept_downloads=True)
        row = page.locator(f"[data-session-id='{seeded.session_id}']")
        expect(row.locator(".session-figures")).to_contain_text("17 frames analysed")
        expect(row.locator(".session-figures")).to_contain_text("2 alerts")
        row.locator(".history-link").click()
        page.wait_for_url(f"**/sessions/{seeded.session_id}/history")

        expect(page.locator("#session-title")).to_contain_text("Biology 9B")
        expect(page.locator("#summary [data-figure='Frames analysed']")).to_have_text(
            "17 (13 with a face)"
        )
        expect(
            page.locator("#summary [data-figure='Most frequent class expression']")
        ).to_have_text("happy")
        expect(page.locator("#history-status")).to_contain_text("2 time buckets")
        expect(page.locator("#alert-list .alert-item")).to_have_count(2)
        expect(page.locator("#class-table tbody tr")).to_have_count(2)
        # Attention off (the default): the API sends no share, and no trace of one shows.
        expect(page.locator("#facing-section")).to_be_hidden()
        expect(page.locator("#class-table thead")).not_to_contain_text("facing")
        expect(page.locator("#summary")).not_to_contain_text("Facing")
        page.select_option("#student-select", label="Ada")
        expect(page.locator("#student-status")).to_contain_text("2 time buckets for Ada")
        expect(page.locator("#student-chart-box")).to_be_visible()
        expect(page.locator("#student-facing")).to_be_hidden()
        with page.expect_download() as download:
            page.click("#report-pdf")
        pdf = tmp_path / "report.pdf"
        download.value.save_as(pdf)
        assert pdf.read_bytes().startswith(b"%PDF")

        # The live dashboard: open alerts on load, then opened and closed by live messages.
        page.click("#live-link")
        page.wait_for_url(f"**/sessions/{seeded.session_id}")
        expect(page.locator("#alerts .alert-item")).to_have_count(1)
        expect(page.locator("#alerts .alert-item")).to_contain_text("Bob's camera")
        channel = c.live_channel(seeded.session_id)
        alert = {
            "id": 999_999,
            "rule": "negative_share",
            "student_id": None,
            "started_at": T1.isoformat(),
            "message": "3 of 5 students showed negative expressions for 2 min — consider checking in.",
        }
        message = {
            "type": "alert",
            "audience": "teachers",
            "session_id": seeded.session_id,
            "t": 1.0,
        }
        r.publish(channel, json.dumps({**message, "state": "open", "alert": alert}))
        expect(page.locator("#alert-count")).to_have_text("2")
        r.publish(channel, json.dumps({**message, "state": "closed", "alert": alert}))
        expect(page.locator("#alert-count")).to_have_text("1")

        # Honest tiles: the reason, never a bare label, and "no data" once updates stop.
        tile = page.locator(f"[data-student-id='{seeded.ada}'] .emotion")
        update = {
            "type": "student",
            "session_id": seeded.session_id,
            "student_id": seeded.ada,
            "presence": "present",
            "confidence": 0.9,
            "faces": 1,
            "probs": {"happy": 0.9},
        }
        r.publish(
            channel,
            json.dumps({**update, "t": 2e9, "emotion": "uncertain", "quality": "face_too_small"}),
        )
        expect(tile).to_have_text("face too small")
        r.publish(
            channel, json.dumps({**update, "t": 2e9 + 1, "emotion": "happy", "quality": None})
        )
        expect(tile).to_have_text("happy")
        expect(tile).to_have_text("no data", timeout=15_000)
