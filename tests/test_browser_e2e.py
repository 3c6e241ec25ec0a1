"""End to end in a real headless Chromium with a fake webcam showing a real face photo.

The whole service runs as deployed (`classpulse run`: gateway, worker, aggregator processes)
on the test PostgreSQL and Redis. A student joins through the join page, consents and starts
the camera; the teacher's dashboard page must show that student's emotion. Afterwards, no line
of the service's logs (access log included) may carry a token.
"""

from __future__ import annotations

import re
import urllib.request

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
        # After login only same-origin paths are followed: "/%09/evil.example" decodes to a
        # tab, which URL parsing drops, leaving "//evil.example".
        for asked, landed in (
            ("/%09/evil.example", "/sessions"),
            ("/%5C%5Cevil.example", "/sessions"),
            (f"/sessions/{session['id']}/history", f"/sessions/{session['id']}/history"),
        ):
            page = teacher.context.new_page()
            page.goto(f"{server.base}/login?next={asked}")
            page.fill("input[type=email]", TEACHER[0])
            page.fill("input[type=password]", TEACHER[1])
            page.click("button[type=submit]")
            page.wait_for_url(server.base + landed)
            page.close()
        browser_token = next(
            c["value"] for c in teacher.context.cookies() if c["name"] == "cp_access"
        )
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
        # Edge capture, the default: the page says so and how long its detector takes.
        expect(student.locator("#capture-mode")).to_have_attribute(
            "data-capture", "edge", timeout=10_000
        )
        expect(student.locator("#detector-time")).to_contain_text("ms")
        # ...and the teacher's tile says what this student's device sends.
        expect(tile.locator(".capture-mode")).to_have_attribute(
            "data-capture", "edge", timeout=20_000
        )
        expect(tile.locator(".capture-mode")).to_contain_text("only face crops are sent")
        # ...and which detector found the face there (pages and workers differ by default).
        expect(tile.locator(".capture-mode")).to_contain_text("by face_detection_short_range")
        student_token = student.evaluate(
            "code => JSON.parse(sessionStorage.getItem('classpulse.join.' + code)).token",
            session["join_code"],
        )

    history = server.api("GET", f"/api/sessions/{session['id']}/history", token=teacher_token)
    assert history["summary"]["frames_with_face"] > 0
    assert {r["dominant"] for r in history["rows"] if r["frames_with_face"]} == {"happy"}

    # Only faces messages reached the gateway: no picture of the room left the student's device.
    metrics = urllib.request.urlopen(server.base + "/metrics", timeout=5).read().decode()
    assert 'classpulse_ingest_messages_total{kind="frame"} 0.0' in metrics
    faces = re.search(r'classpulse_ingest_messages_total\{kind="faces"\} ([0-9.]+)', metrics)
    assert faces and float(faces.group(1)) > 0

    log = server.log_file.read_text(errors="replace")
    assert "/ws/student" in log and "/api/auth/login" in log  # the access log was on
    for token in (teacher_token, browser_token, student_token):
        assert token and token not in log
    assert "token=" not in log
