"""The student page asks for "what is kept about me" (/api/student/me) on a timer and when the
policy changes, not in a loop: rendering an answer must not trigger the next request."""

from __future__ import annotations

import pytest

from tests.browser import TEACHER, chromium, create_teacher

pytestmark = pytest.mark.browser


def test_student_page_does_not_loop_on_api_student_me(server):
    from playwright.sync_api import expect

    admin = server.login()
    create_teacher(server, admin)
    teacher_token = server.login(*TEACHER)
    session = server.api("POST", "/api/sessions", {"title": "Chemistry 8A"}, teacher_token)

    with chromium() as browser:
        page = browser.new_context().new_page()
        calls: list[str] = []
        page.on("request", lambda r: calls.append(r.url) if "/api/student/me" in r.url else None)
        page.goto(session["join_url"])
        page.click("#consent-decline")  # no camera needed: the privacy view shows all the same
        page.fill("#display-name", "Cy")
        page.click("#join-submit")
        expect(page.locator("#self-consent")).to_contain_text("declined", timeout=10_000)
        expect(page.locator("#policy-mode")).to_contain_text("estimated expression")

        page.wait_for_timeout(5_000)
        assert 1 <= len(calls) <= 3, f"{len(calls)} requests to /api/student/me in ~5 s"

        # A live policy change refreshes the view once: one more request, not a new loop.
        before = len(calls)
        server.api("PUT", "/api/admin/policy", {"emotion_mode": "off", "min_group_size": 2}, admin)
        expect(page.locator("#policy-mode")).to_contain_text("switched off", timeout=10_000)
        page.wait_for_timeout(3_000)
        assert 1 <= len(calls) - before <= 2, f"{len(calls) - before} requests after the change"
