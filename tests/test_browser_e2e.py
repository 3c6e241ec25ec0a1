"""End to end in a real headless Chromium with a fake webcam showing a real face photo.

The whole service runs as deployed (`classpulse run`: gateway, worker, aggregator processes)
on the test PostgreSQL and Redis. A student joins through the join page, consents and starts
the camera; the teacher's dashboard page must show that student's emotion.
"""

from __future__ import annotations

import pytest

from tests.browser import TEACHER, chromium, create_teacher, student_joined, teacher_logged_in

pytestmark = pytest.mark.browser


def test_student_in_chromium_appears_on_the_teacher_dashboard(server, tmp_path):
    from playwright.sync_api import expect

    create_teacher(server, server.login())
    teacher_token = server.login(*TEACHER)
    session = server.api("POST", "/api/sessions", {"title": "Biology 9B"}, teacher_token)

    with chromium(webcam=tmp_path / "webcam.y4m") as browser:
        # Teacher: log in through the page, open the live dashboard.
        teacher = teacher_logged_in(browser, server)
        teacher.goto(f"{server.base}/sessions/{session['id']}")

        # Student: consent, name; the camera comes on.
        student = student_joined(browser, session["join_url"], "Ada")
        # Joining with consent starts the camera by itself (that click was the request).
        expect(student.locator("#stop")).to_be_enabled(timeout=15_000)
        expect(student.locator("#conn-state")).to_contain_text("onnect", timeout=15_000)

        tile = teacher.locator("[data-student-id]").filter(has_text="Ada")
        expect(tile).to_have_count(1, timeout=20_000)
        expect(tile.locator(".emotion")).to_have_attribute("data-emotion", "happy", timeout=20_000)
        expect(tile.locator(".emotion")).to_contain_text("happy")
        # The student sees what the teacher sees.
        expect(student.locator("#self-emotion")).to_have_attribute(
            "data-emotion", "happy", timeout=10_000
        )

    timeline = server.api("GET", f"/api/sessions/{session['id']}/timeline", token=teacher_token)
    assert sum(b["frames_with_face"] for b in timeline["buckets"]) > 0
    assert {b["dominant"] for b in timeline["buckets"] if b["frames_with_face"]} == {"happy"}
