"""User-provided text in report exports: CSV cells that a spreadsheet would run as a formula
are escaped (session report, admin export, `classpulse export`), and a ``$`` in a title,
name or alert does not break the PDF (matplotlib mathtext)."""

from __future__ import annotations

import uuid

from sqlalchemy import select, update

from classpulse.db import Alert, ClassSession, Student
from tests.gateway_helpers import bearer, client_for, make_user
from tests.history_helpers import T0, db_session, seed_session
from tests.report_helpers import cli_export, csv_rows, render_pages, teacher_report

EVIL_NAME = '=HYPERLINK("http://x","y")'
EVIL_TITLE = '@SUM(1+1)*cmd|" /C calc"!A0'


def rename(settings, session_id: str, title: str, ada: str | None = None, alert: str | None = None):
    """Give the seeded session ``title``, Ada the display name ``ada`` and the class alert the
    message ``alert``."""
    sid = uuid.UUID(session_id)
    with db_session(settings) as db:
        db.execute(update(ClassSession).where(ClassSession.id == sid).values(title=title))
        if ada is not None:
            db.execute(
                update(Student)
                .where(Student.session_id == sid, Student.display_name == "Ada")
                .values(display_name=ada)
            )
        if alert is not None:
            first = db.scalars(
                select(Alert).where(Alert.session_id == sid).order_by(Alert.started_at)
            ).first()
            assert first is not None
            first.message = alert
        db.commit()


def assert_escaped(rows, session_id: str, title: str) -> None:
    mine = [r for r in rows if r["session_id"] == session_id]
    assert mine and all(r["session_title"] == "'" + title for r in mine)
    names = {r["display_name"] for r in mine if r["scope"] == "student"}
    assert names == {"'" + EVIL_NAME, "Bob"}
    # Numbers and ordinary text are untouched.
    cls = [r for r in mine if r["scope"] == "class"]
    assert [c["frames"] for c in cls] == ["9", "8"] and cls[0]["happy"] == "0.3750"
    assert all(not v.startswith(("=", "+", "-", "@", "\t", "\r")) for r in rows for v in r.values())


def test_safe_cell_rule():
    from records.csvsafe import safe_cell, safe_row

    for text in ("=1+1", "+1", "-1", "@A1", "\tx", "\rx"):
        assert safe_cell(text) == "'" + text
    assert safe_cell("Ada") == "Ada" and safe_cell("") == "" and safe_cell(None) == ""
    assert safe_cell("a=b") == "a=b" and safe_cell("'=x") == "'=x"
    # Real numbers stay numbers, negative ones included; only text is escaped.
    assert (safe_cell(-3), safe_cell(-0.5), safe_cell(7)) == ("-3", "-0.5", "7")
    assert safe_row(["-3", -3, None]) == ["'-3", "-3", ""]


def test_session_report_csv_escapes_names_and_title(settings):
    teacher = make_user(settings, "t@school.example")
    seeded = seed_session(settings, teacher)
    title = "@" + EVIL_TITLE[1:]
    rename(settings, seeded.session_id, title, ada=EVIL_NAME)
    r = teacher_report(settings, teacher, seeded.session_id, "csv")
    assert r.status_code == 200, r.text
    assert_escaped(csv_rows(r.text), seeded.session_id, title)


def test_admin_export_csv_escapes_names_and_titles(settings):
    teacher = make_user(settings, "t@school.example")
    admin = make_user(settings, "a@school.example", role="admin")
    first = seed_session(settings, teacher)
    second = seed_session(settings, teacher, "-2+3", at=T0.replace(day=2, hour=11))
    rename(settings, first.session_id, "+Maths", ada=EVIL_NAME)
    rename(settings, second.session_id, "-2+3", ada=EVIL_NAME)
    with client_for(settings) as client:
        r = client.get(
            "/api/admin/reports",
            params={"from": "2026-03-01", "to": "2026-03-02", "format": "csv"},
            headers=bearer(settings, admin, "admin"),
        )
    assert r.status_code == 200, r.text
    rows = csv_rows(r.text)
    assert len(rows) == 12
    assert_escaped(rows, first.session_id, "+Maths")
    assert_escaped(rows, second.session_id, "-2+3")


def test_cli_export_csv_escapes_names_and_title(settings, monkeypatch, capsysbinary):
    teacher = make_user(settings, "t@school.example")
    seeded = seed_session(settings, teacher)
    rename(settings, seeded.session_id, "\tTab title", ada=EVIL_NAME)
    monkeypatch.setenv("CLASSPULSE_DATABASE_URL", settings.database_url)
    assert cli_export("2026-03-31", "--format", "csv") == 0
    rows = csv_rows(capsysbinary.readouterr().out.decode())
    assert len(rows) == 6
    assert_escaped(rows, seeded.session_id, "\tTab title")


def test_pdf_report_with_dollar_signs(settings, tmp_path, monkeypatch):
    teacher = make_user(settings, "t@school.example")
    seeded = seed_session(settings, teacher)
    rename(
        settings,
        seeded.session_id,
        r"Maths $\foo$ and $x^2$",
        ada=r"$\foo$ Ada $x^2$",
        alert=r"Ada $\foo$ looked away, $x^2$ and $\frac{1}$ unbalanced $",
    )
    r = teacher_report(settings, teacher, seeded.session_id, "pdf")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/pdf" and r.content.startswith(b"%PDF")
    assert render_pages(r.content)[0] == 2
    # The CLI renders the same way.
    monkeypatch.setenv("CLASSPULSE_DATABASE_URL", settings.database_url)
    out = tmp_path / "report.pdf"
    assert cli_export("2026-03-31", "--format", "pdf", "--out", str(out)) == 0
    assert out.read_bytes().startswith(b"%PDF")
