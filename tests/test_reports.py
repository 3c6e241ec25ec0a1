"""Per-session reports (CSV, JSON, PDF), admin exports and `classpulse export`, checked
against buckets with known sums (tests/history_helpers.py); policy modes; access; audit."""

from __future__ import annotations

import json
import uuid

import pytest
from sqlalchemy import select

from classpulse import policy as org_policy
from classpulse.db import AuditEntry, ClassSession
from records.reports import build_report, write_csv
from tests.gateway_helpers import bearer, client_for, make_user
from tests.history_helpers import T0, T1, add_class_bucket, db_session, seed_session, set_policy
from tests.report_helpers import cli_export, csv_rows, render_pages, teacher_report


@pytest.fixture
def policy_reset(settings):
    yield
    set_policy(settings, "per_student", 5)


def audit_entries(settings, action="export.report"):
    with db_session(settings) as db:
        return list(db.scalars(select(AuditEntry).where(AuditEntry.action == action)))


def test_csv_report_per_student_exact_values(settings):
    teacher = make_user(settings, "t@school.example")
    seeded = seed_session(settings, teacher)
    r = teacher_report(settings, teacher, seeded.session_id, "csv")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    rows = csv_rows(r.text)
    assert list(rows[0])[:9] == [
        "session_id",
        "session_title",
        "scope",
        "student_id",
        "display_name",
        "bucket_start",
        "frames",
        "frames_with_face",
        "students_present",
    ]
    assert list(rows[0])[9:] == [
        "angry",
        "disgust",
        "fear",
        "happy",
        "sad",
        "surprise",
        "neutral",
        "dominant",
        "suppressed",
    ]
    cls = [r for r in rows if r["scope"] == "class"]
    assert [
        (c["bucket_start"], c["frames"], c["frames_with_face"], c["students_present"]) for c in cls
    ] == [(T0.isoformat(), "9", "8", "2"), (T1.isoformat(), "8", "5", "1")]
    # Class bucket 0: happy 3.0, sad 3.5, neutral 1.5 over 8 faced frames.
    assert (cls[0]["happy"], cls[0]["sad"], cls[0]["neutral"], cls[0]["angry"]) == (
        "0.3750",
        "0.4375",
        "0.1875",
        "0.0000",
    )
    assert (
        cls[0]["dominant"] == "sad"
        and cls[1]["dominant"] == "happy"
        and cls[1]["happy"] == "1.0000"
    )
    students = {(r["display_name"], r["bucket_start"]): r for r in rows if r["scope"] == "student"}
    assert len(students) == 4
    ada0 = students[("Ada", T0.isoformat())]
    assert (ada0["happy"], ada0["sad"], ada0["dominant"], ada0["student_id"]) == (
        "0.7500",
        "0.2500",
        "happy",
        seeded.ada,
    )
    bob1 = students[("Bob", T1.isoformat())]
    assert (bob1["frames"], bob1["frames_with_face"], bob1["happy"], bob1["dominant"]) == (
        "3",
        "0",
        "",
        "",
    )
    entries = audit_entries(settings)
    assert [(e.actor_id, e.target_id, e.detail["format"]) for e in entries] == [
        (teacher, seeded.session_id, "csv")
    ]


def test_json_report_summary_and_alerts(settings):
    teacher = make_user(settings, "t@school.example")
    seeded = seed_session(settings, teacher)
    data = teacher_report(settings, teacher, seeded.session_id).json()
    s = data["summary"]
    assert (
        s["duration_s"],
        s["students_joined"],
        s["students_seen"],
        s["frames"],
        s["frames_with_face"],
    ) == (600.0, 3, 2, 17, 13)
    assert (s["peak_present"], s["mean_present"], s["alerts"], s["dominant"]) == (
        2,
        1.5,
        2,
        "happy",
    )
    # Frame-weighted over the class rows: happy (3 + 5) / 13, sad 3.5 / 13, neutral 1.5 / 13.
    assert s["emotion_shares"]["happy"] == pytest.approx(8 / 13, abs=1e-4)
    assert s["emotion_shares"]["sad"] == pytest.approx(3.5 / 13, abs=1e-4)
    assert s["negative_share"] == pytest.approx(3.5 / 13, abs=1e-4)
    assert [a["rule"] for a in data["alerts"]] == ["negative_share", "no_face"]
    assert data["alerts"][1]["display_name"] == "Bob" and data["alerts"][0]["ended_at"]
    assert [st["display_name"] for st in data["students"]] == ["Ada", "Bob", "Cy"]
    assert len(data["rows"]) == 2 + 4 and data["policy"]["emotion_mode"] == "per_student"
    ada0 = next(
        r
        for r in data["rows"]
        if r["display_name"] == "Ada" and r["bucket_start"] == T0.isoformat()
    )
    assert ada0["probs"]["happy"] == 0.75 and ada0["dominant"] == "happy"


def test_aggregate_only_report_has_class_rows_only_and_suppresses_small_groups(
    settings, policy_reset
):
    teacher = make_user(settings, "t@school.example")
    seeded = seed_session(settings, teacher)
    # The aggregator's class bucket is what counts for a bucket that has one.
    add_class_bucket(
        settings, seeded.session_id, T0, 9, 8, {"happy": 4.0, "sad": 2.0, "neutral": 2.0}
    )
    set_policy(settings, "aggregate_only", min_group_size=2)
    with client_for(settings) as client:
        headers = bearer(settings, teacher)
        rows = csv_rows(
            client.get(f"/api/sessions/{seeded.session_id}/report?format=csv", headers=headers).text
        )
        data = client.get(
            f"/api/sessions/{seeded.session_id}/report?format=json", headers=headers
        ).json()
    assert {r["scope"] for r in rows} == {"class"} and len(rows) == 2
    shown, small = rows
    assert (shown["happy"], shown["sad"], shown["neutral"], shown["suppressed"]) == (
        "0.5000",
        "0.2500",
        "0.2500",
        "0",
    )
    # One student present in bucket 1: below the minimum group, so no emotions, presence only.
    assert (small["students_present"], small["happy"], small["dominant"], small["suppressed"]) == (
        "1",
        "",
        "",
        "1",
    )
    assert data["students"] == [] and data["summary"]["suppressed_buckets"] == 1
    assert data["summary"]["emotion_shares"]["happy"] == 0.5
    assert [a["rule"] for a in data["alerts"]] == ["negative_share"]  # no student named
    assert not any(r["scope"] == "student" for r in data["rows"])


def test_off_report_is_presence_only(settings, policy_reset):
    teacher = make_user(settings, "t@school.example")
    seeded = seed_session(settings, teacher)
    set_policy(settings, "off")
    data = teacher_report(settings, teacher, seeded.session_id).json()
    assert all(r["scope"] == "class" and r["probs"] is None for r in data["rows"])
    assert [r["students_present"] for r in data["rows"]] == [2, 1]
    assert data["summary"]["emotion_shares"] is None and data["summary"]["dominant"] is None
    assert data["summary"]["frames"] == 17


def test_pdf_report_renders_with_charts(settings):
    teacher = make_user(settings, "t@school.example")
    seeded = seed_session(settings, teacher)
    r = teacher_report(settings, teacher, seeded.session_id, "pdf")
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf"
    pages, image = render_pages(r.content)
    assert pages == 2  # summary and charts, then the alerts
    assert image.shape[0] > image.shape[1]  # A4 portrait
    dark = (image < 128).mean()
    assert 0.01 < dark < 0.5, dark  # text and filled charts, not a blank page
    # The class mix chart fills its area with colour: many mid-grey pixels in the upper half.
    mid = ((image > 40) & (image < 200))[: image.shape[0] // 2].mean()
    assert mid > 0.02, mid
    assert [e.detail["format"] for e in audit_entries(settings)] == ["pdf"]


def test_reports_are_for_the_owner_and_admins_only(settings):
    owner = make_user(settings, "t@school.example")
    other = make_user(settings, "u@school.example")
    admin = make_user(settings, "a@school.example", role="admin")
    seeded = seed_session(settings, owner)
    sid = seeded.session_id
    with client_for(settings) as client:
        for path in (
            "/report?format=csv",
            "/report?format=pdf",
            "/history",
            "/alerts",
            "/alert-rules",
            f"/history/students/{seeded.ada}",
        ):
            r = client.get(f"/api/sessions/{sid}{path}", headers=bearer(settings, other))
            assert r.status_code == 404, (path, r.status_code)
        r = client.put(
            f"/api/sessions/{sid}/alert-rules",
            json={"no_face": {"enabled": False}},
            headers=bearer(settings, other),
        )
        assert r.status_code == 404
        assert client.get(f"/api/sessions/{sid}/report").status_code == 401
        r = client.get(
            f"/api/sessions/{sid}/report?format=json", headers=bearer(settings, admin, "admin")
        )
        assert r.status_code == 200
        assert (
            client.get(
                f"/api/sessions/{sid}/report?format=xml", headers=bearer(settings, owner)
            ).status_code
            == 422
        )
    assert [e.actor_id for e in audit_entries(settings)] == [
        admin
    ]  # refused requests export nothing


def test_admin_export_across_sessions_and_dates(settings):
    teacher = make_user(settings, "t@school.example")
    admin = make_user(settings, "a@school.example", role="admin")
    first = seed_session(settings, teacher, "Maths 4B")
    second = seed_session(settings, teacher, "Physics 3A", at=T0.replace(day=5))
    with client_for(settings) as client:
        headers = bearer(settings, admin, "admin")
        r = client.get(
            "/api/admin/reports",
            params={"from": "2026-03-01", "to": "2026-03-02", "format": "csv"},
            headers=headers,
        )
        assert r.status_code == 200, r.text
        rows = csv_rows(r.text)
        assert {x["session_id"] for x in rows} == {first.session_id} and len(rows) == 6
        # Streamed session by session, it says exactly what the one-session report says.
        with db_session(settings) as db:
            session = db.get(ClassSession, uuid.UUID(first.session_id))
            report = build_report(db, session, org_policy.load(db), settings.bucket_seconds)
            assert rows == csv_rows(write_csv([report]))
        r = client.get(
            "/api/admin/reports", params={"from": "2026-03-01", "to": "2026-03-31"}, headers=headers
        )
        data = r.json()
        assert [s["session"]["title"] for s in data["sessions"]] == ["Maths 4B", "Physics 3A"]
        assert data["sessions"][1]["session"]["id"] == second.session_id
        assert data["sessions"][0]["summary"]["frames"] == 17
        bad = client.get(
            "/api/admin/reports", params={"from": "2026-03-05", "to": "2026-03-01"}, headers=headers
        )
        assert bad.status_code == 422
        teacher_try = client.get(
            "/api/admin/reports",
            params={"from": "2026-03-01", "to": "2026-03-31"},
            headers=bearer(settings, teacher),
        )
        assert teacher_try.status_code == 403
    entries = audit_entries(settings)
    assert [
        (e.actor_id, e.target_type, e.detail["format"], len(e.detail["sessions"])) for e in entries
    ] == [(admin, "export", "csv", 1), (admin, "export", "json", 2)]


def test_cli_export(settings, tmp_path, monkeypatch, capsysbinary):
    teacher = make_user(settings, "t@school.example")
    seeded = seed_session(settings, teacher)
    seed_session(settings, teacher, "Physics 3A", at=T0.replace(day=5))
    monkeypatch.setenv("CLASSPULSE_DATABASE_URL", settings.database_url)
    out = tmp_path / "report.json"
    assert cli_export("2026-03-03", "--format", "json", "--out", str(out)) == 0
    data = json.loads(out.read_text())
    assert [s["session"]["id"] for s in data["sessions"]] == [seeded.session_id]
    assert data["sessions"][0]["summary"]["frames_with_face"] == 13
    assert cli_export("2026-03-31", "--session", seeded.session_id, "--format", "csv") == 0
    rows = csv_rows(capsysbinary.readouterr().out.decode())
    assert len(rows) == 6 and rows[0]["session_title"] == "Maths 4B"
    pdf = tmp_path / "report.pdf"
    assert cli_export("2026-03-31", "--format", "pdf", "--out", str(pdf)) == 0
    assert render_pages(pdf.read_bytes())[0] == 4  # two sessions, two pages each
    assert cli_export("2026-03-31", "--format", "pdf") == 2  # a PDF needs --out
    entries = audit_entries(settings)
    assert [(e.actor_email, e.actor_id, e.detail["format"]) for e in entries] == [
        ("cli", None, "json"),
        ("cli", None, "csv"),
        ("cli", None, "pdf"),
    ]


def test_session_list_has_summary_figures(settings):
    teacher = make_user(settings, "t@school.example")
    seeded = seed_session(settings, teacher)
    with client_for(settings) as client:
        listed = client.get("/api/sessions", headers=bearer(settings, teacher)).json()
    (s,) = listed
    assert s["id"] == seeded.session_id
    assert s["summary"] == {
        "duration_s": 600.0,
        "students_seen": 2,
        "frames": 17,
        "frames_with_face": 13,
        "last_data_at": T1.isoformat(),
        "dominant": "happy",
        "alerts": 2,
    }
