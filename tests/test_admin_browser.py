"""The admin pages end to end in headless Chromium against the whole service as deployed.

One test runs accounts and the policy: the admin adds a teacher, makes a new link (their own
password asked for again), the teacher sets a password through the one-time link, creates a session and renames themself on the account page; a
teacher gets the "administrators only" state and 403s; the admin loosens the policy through the
confirmation dialog. The other runs reports, the audit log, erasure and the system status. Each
admin page is checked with axe-core and screenshotted to artifacts/screenshots/<page>.png.
"""

from __future__ import annotations

import csv
import io
import json
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from classpulse.cli.devserver import ADMIN_EMAIL, ADMIN_PASSWORD
from tests.a11y import check_page
from tests.browser import TEACHER, chromium, create_teacher, teacher_logged_in

pytestmark = pytest.mark.browser
ADMIN = (ADMIN_EMAIL, ADMIN_PASSWORD)
NEW_TEACHER = "rivera@school.test"
NEW_PASSWORD = "rivera's own passphrase"


def _status(server, path: str, token: str) -> int:
    req = urllib.request.Request(server.base + path, headers={"Authorization": "Bearer " + token})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_admin_manages_people_and_policy_in_chromium(server):
    from playwright.sync_api import expect

    with chromium() as browser:
        admin = teacher_logged_in(browser, server, ADMIN)
        expect(admin.get_by_role("link", name="Admin")).to_be_visible()
        admin.get_by_role("link", name="Admin").click()
        admin.wait_for_url("**/admin/people")
        expect(admin.locator("#people-table tbody tr")).to_have_count(1)

        # Add a teacher: the page shows the one-time link, once.
        admin.fill("#add-email", NEW_TEACHER)
        admin.fill("#add-name", "Ms Rivera")
        admin.click("#add-submit")
        expect(admin.locator("#link-panel")).to_be_visible()
        link = admin.locator("#link-url").get_attribute("href") or ""
        assert "/set-password#token=" in link
        expect(admin.locator(f"#people-table tr[data-email='{NEW_TEACHER}']")).to_contain_text(
            "never"
        )
        check_page(admin, "admin-people")

        # A new link for an existing account asks for the admin's own password first; a wrong
        # one is refused in the dialog. The newer link ends the first.
        first_link = link
        admin.get_by_role("button", name=f"New set-password link for {NEW_TEACHER}").click()
        expect(admin.locator("#reauth-dialog")).to_be_visible()
        admin.fill("#reauth-password", "not my password")
        admin.click("#reauth-ok")
        expect(admin.locator("#reauth-error")).to_contain_text("the current password is wrong")
        check_page(admin, "admin-people-reauth")
        admin.fill("#reauth-password", ADMIN_PASSWORD)
        admin.click("#reauth-ok")
        expect(admin.locator("#reauth-dialog")).to_be_hidden()
        expect(admin.locator("#link-url")).not_to_have_attribute("href", first_link)
        link = admin.locator("#link-url").get_attribute("href") or ""
        assert "/set-password#token=" in link

        # The teacher follows the link, sets a password, is logged in and creates a session.
        teacher = browser.new_context().new_page()
        teacher.goto(link)
        assert "token" not in teacher.url  # out of the address bar at once
        check_page(teacher, "set-password")
        teacher.fill("#new-password", NEW_PASSWORD)
        teacher.fill("#repeat-password", NEW_PASSWORD)
        teacher.click("#set-submit")
        teacher.wait_for_url("**/sessions")
        expect(teacher.get_by_role("link", name="Admin")).to_have_count(0)
        teacher.fill("#session-title", "Geography 2C")
        teacher.click("#create-session")
        expect(teacher.locator(".session-title")).to_have_text(["Geography 2C"])
        join_code = teacher.locator(".join-link").inner_text().rsplit("/", 1)[1]

        # The link worked once: a second use is refused on the page.
        again = browser.new_context().new_page()
        again.goto(link)
        again.fill("#new-password", "yet another passphrase")
        again.fill("#repeat-password", "yet another passphrase")
        again.click("#set-submit")
        expect(again.locator("#set-error")).to_contain_text("not valid")
        again.context.close()

        # The teacher's own account page: the name students see.
        teacher.goto(server.base + "/account")
        expect(teacher.locator("#display-name")).to_have_value("Ms Rivera")
        teacher.fill("#display-name", "Ms R. Rivera")
        teacher.click("#name-submit")
        expect(teacher.locator("#name-result")).to_contain_text("Teacher: Ms R. Rivera")
        check_page(teacher, "account")
        assert server.api("GET", f"/api/join/{join_code}")["teacher"] == "Ms R. Rivera"

        # A teacher on an admin page: the admins-only state, and 403 from the API.
        teacher.goto(server.base + "/admin/people")
        expect(teacher.locator("#admin-denied")).to_be_visible()
        expect(teacher.locator("#admin-content")).to_be_hidden()
        teacher_token = server.login(NEW_TEACHER, NEW_PASSWORD)
        for path in ("/api/admin/users", "/api/admin/status", "/api/admin/audit"):
            assert _status(server, path, teacher_token) == 403, path

        # The admin's list now shows the login and the session.
        admin.reload()
        row = admin.locator(f"#people-table tr[data-email='{NEW_TEACHER}']")
        expect(row.locator("td").nth(3)).not_to_have_text("never")
        expect(row.locator("td").nth(4)).to_have_text("1")

        # The teacher watches the session's live dashboard while the admin changes the policy.
        teacher.goto(server.base + "/sessions")
        teacher.locator(".dashboard-link").first.click()
        teacher.wait_for_url("**/sessions/*")
        banner = teacher.locator("#policy-banner")
        expect(banner).to_have_attribute("data-mode", "per_student", timeout=10_000)

        # Policy: tightening saves at once; loosening asks first (cancel, then confirm).
        admin.goto(server.base + "/admin/policy")
        expect(admin.locator("#mode-per_student")).to_be_checked()
        admin.check("#mode-off")
        admin.click("#policy-save")
        expect(admin.locator("#policy-current")).to_contain_text("off (presence only)")
        assert server.api("GET", "/api/admin/policy", token=server.login())["emotion_mode"] == "off"
        # ...and the teacher's dashboard follows, live, without a reload.
        expect(banner).to_have_attribute("data-mode", "off", timeout=10_000)
        admin.check("#mode-per_student")
        admin.fill("#retention-days", "60")
        admin.click("#policy-save")
        dialog = admin.locator("#confirm-dialog")
        expect(dialog).to_be_visible()
        expect(dialog).to_contain_text("Data is kept longer: 60 days")
        expect(admin.locator("#confirm-cancel")).to_be_focused()
        admin.keyboard.press("Escape")
        expect(dialog).to_be_hidden()
        expect(admin.locator("#policy-current")).to_contain_text("off (presence only)")
        admin.click("#policy-save")
        check_page(admin, "admin-policy-confirm")
        admin.click("#confirm-ok")
        expect(admin.locator("#policy-current")).to_contain_text("per student")
        expect(admin.locator("#policy-current")).to_contain_text("kept 60 days")
        expect(banner).to_have_attribute("data-mode", "per_student", timeout=10_000)
        check_page(admin, "admin-policy")
        policy = server.api("GET", "/api/admin/policy", token=server.login())
        assert (policy["emotion_mode"], policy["retention_days"]) == ("per_student", 60)
        assert policy["attention"] is False

        # Facing the screen: a labelled switch, turned on from the keyboard; observing more
        # asks first, like any loosening.
        switch = admin.get_by_role("switch", name="Observe whether students face the screen")
        expect(switch).not_to_be_checked()
        switch.focus()
        admin.keyboard.press("Space")
        expect(switch).to_be_checked()
        admin.click("#policy-save")
        expect(dialog).to_contain_text("Facing the screen goes from not observed to observed")
        admin.click("#confirm-ok")
        expect(admin.locator("#policy-current")).to_contain_text("facing the screen observed")
        check_page(admin, "admin-policy-attention")
        assert server.api("GET", "/api/admin/policy", token=server.login())["attention"] is True

        # Deactivating the teacher ends their tokens at once.
        admin.goto(server.base + "/admin/people")
        row = admin.locator(f"#people-table tr[data-email='{NEW_TEACHER}']")
        row.get_by_role("button", name=f"Deactivate {NEW_TEACHER}").click()
        admin.click("#confirm-ok")
        expect(row).to_contain_text("deactivated")
        assert _status(server, "/api/auth/me", teacher_token) == 401


def _download(page, action) -> bytes:
    with page.expect_download() as info:
        action()
    return Path(info.value.path()).read_bytes()


def _seed_bucket(database_url: str, session_id: str, student_id: str) -> None:
    """One stored time bucket of the student, as the aggregator would have written it."""
    probs = json.dumps({"happy": 3.0, "neutral": 1.0})
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO emotion_buckets (session_id, student_id, bucket_start, frames,"
            " frames_with_face, prob_sums, updated_at) VALUES (%s, %s, date_trunc('minute', now()),"
            " 4, 4, %s, now())",
            (session_id, student_id, probs),
        )


def test_admin_reports_audit_erasure_and_status_in_chromium(server, clean_db):
    from playwright.sync_api import expect

    admin_token = server.login()
    create_teacher(server, admin_token)
    teacher_token = server.login(*TEACHER)
    session = server.api("POST", "/api/sessions", {"title": "History 4A"}, teacher_token)
    for name in ("Ada Quinn", "Bo Stone"):
        joined = {"display_name": name, "consent": True}
        student = server.api("POST", f"/api/join/{session['join_code']}", joined)
        _seed_bucket(clean_db, session["id"], student["student_id"])
    # A view of per-student data, for the audit log.
    server.api(
        "GET",
        f"/api/sessions/{session['id']}/history/students/{student['student_id']}",
        token=teacher_token,
    )
    today = datetime.now(UTC).date().isoformat()

    with chromium() as browser:
        admin = teacher_logged_in(browser, server, ADMIN, accept_downloads=True)

        # Reports: a date range as CSV, JSON and PDF; an empty range says so.
        admin.goto(server.base + "/admin/reports")
        expect(admin.locator("#export-session option")).to_have_count(2)
        admin.fill("#export-from", today)
        admin.fill("#export-to", today)
        admin.check("#fmt-csv")
        rows = list(
            csv.DictReader(
                io.StringIO(_download(admin, lambda: admin.click("#export-submit")).decode())
            )
        )
        assert {r["session_id"] for r in rows} == {session["id"]} and len(rows) >= 2
        expect(admin.locator("#export-status")).to_contain_text("1 session")
        admin.check("#fmt-json")
        data = json.loads(_download(admin, lambda: admin.click("#export-submit")))
        assert [s["session"]["title"] for s in data["sessions"]] == ["History 4A"]
        admin.check("#fmt-pdf")
        assert _download(admin, lambda: admin.click("#export-submit")).startswith(b"%PDF")
        admin.fill("#export-from", "2001-01-01")
        admin.fill("#export-to", "2001-01-31")
        admin.check("#fmt-csv")
        admin.click("#export-submit")
        expect(admin.locator("#export-status")).to_contain_text("No sessions were created")
        check_page(admin, "admin-reports")

        # Audit log: the teacher's view and the admin's four exports (the empty one too,
        # which records who asked for what), filterable; CSV download.
        admin.goto(server.base + "/admin/audit")
        expect(admin.locator("#audit-table tbody tr[data-action='export.report']")).to_have_count(4)
        admin.select_option("#audit-action", "view.*")
        admin.click("#audit-apply")
        views = admin.locator("#audit-table tbody tr")
        expect(views).to_have_count(1)
        expect(views.first).to_contain_text("view.history")
        expect(views.first).to_contain_text(TEACHER[0])
        expect(views.first).to_contain_text("127.0.0.1")
        audit_rows = list(
            csv.DictReader(
                io.StringIO(_download(admin, lambda: admin.click("#audit-csv")).decode())
            )
        )
        assert [r["action"] for r in audit_rows] == ["view.history"]
        check_page(admin, "admin-audit")

        # Erasure: find Ada in the session, read what goes, erase.
        admin.goto(server.base + "/admin/erasure")
        expect(admin.locator("#find-session option")).to_have_count(2)
        admin.select_option("#find-session", session["id"])
        admin.fill("#find-name", "ada")
        admin.click("#find-submit")
        found = admin.locator("#found-table tbody tr")
        expect(found).to_have_count(1)
        found.get_by_role("button", name="Erase Ada Quinn (History 4A)").click()
        dialog = admin.locator("#confirm-dialog")
        expect(dialog).to_contain_text('the name "Ada Quinn"')
        expect(dialog).to_contain_text("an audit entry recording this erasure")
        check_page(admin, "admin-erasure-confirm")
        admin.click("#confirm-ok")
        expect(admin.locator("#erasure-status")).to_contain_text("Ada Quinn's data was erased")
        expect(found).to_have_count(0)
        check_page(admin, "admin-erasure")

        # The teacher's history no longer shows her (Bo stays).
        teacher = teacher_logged_in(browser, server)
        teacher.goto(f"{server.base}/sessions/{session['id']}/history")
        options = teacher.locator("#student-select option")
        expect(options.filter(has_text="Bo Stone")).to_have_count(1)
        expect(options.filter(has_text="Ada Quinn")).to_have_count(0)

        # System status: the running worker and aggregator, refreshed live.
        admin.goto(server.base + "/admin/status")
        expect(admin.locator("#status-alert")).to_have_text("All services are up.", timeout=15_000)
        expect(admin.locator("#services-table tbody")).to_contain_text("inference worker")
        expect(admin.locator("#services-table tbody")).to_contain_text("aggregator")
        expect(admin.locator("#streams-table tbody")).to_contain_text("cp:frames")
        first = admin.locator("#status-updated").inner_text()
        expect(admin.locator("#status-updated")).not_to_have_text(first, timeout=15_000)
        check_page(admin, "admin-status")

    assert _status(server, "/api/admin/students", teacher_token) == 403
    erased = server.api("GET", "/api/admin/audit?action=delete.student", token=admin_token)
    assert len(erased["entries"]) == 1 and erased["entries"][0]["ip"] == "127.0.0.1"
