"""End to end in a real headless Chromium with a fake webcam showing a real face photo.

The whole service runs as deployed (`classpulse run`: gateway, worker, aggregator processes)
on the test PostgreSQL and Redis. A student joins through the join page, consents and starts
the camera; the teacher's dashboard page must show that student's emotion.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data as skdata

from classpulse.devserver import DevServer

pytestmark = pytest.mark.browser
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TEACHER = ("teacher@school.test", "teacher-password-1")


def write_y4m(path: Path, frames: int = 30, size=(320, 240)) -> None:
    """A Y4M clip of the astronaut's face drifting slightly, as a fake webcam feed."""
    w, h = size
    face = cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR)[0:400, 60:460]
    face = cv2.resize(face, (h - 20, h - 20))
    with path.open("wb") as out:
        out.write(f"YUV4MPEG2 W{w} H{h} F10:1 Ip A1:1 C420jpeg\n".encode())
        for i in range(frames):
            frame = np.full((h, w, 3), 100, np.uint8)
            dx = int(4 * np.sin(i / frames * 2 * np.pi))
            x = (w - face.shape[1]) // 2 + dx
            frame[10 : 10 + face.shape[0], x : x + face.shape[1]] = face
            out.write(b"FRAME\n" + cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes())


@pytest.fixture
def server(tmp_path, clean_db, redis_url, clean_redis):
    with DevServer(tmp_path / "service", database_url=clean_db, redis_url=redis_url) as srv:
        yield srv


def test_student_in_chromium_appears_on_the_teacher_dashboard(server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    admin = server.login()
    server.api("POST", "/api/admin/users",
               {"email": TEACHER[0], "password": TEACHER[1], "role": "teacher", "display_name": "Ms T"}, admin)
    teacher_token = server.login(*TEACHER)
    session = server.api("POST", "/api/sessions", {"title": "Biology 9B"}, teacher_token)
    video = tmp_path / "webcam.y4m"
    write_y4m(video)

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run",
                "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-video-capture={video}",
            ],
        )
        try:
            # Teacher: log in through the page, open the live dashboard.
            teacher = browser.new_context().new_page()
            teacher.goto(server.base + "/login")
            teacher.fill("input[type=email]", TEACHER[0])
            teacher.fill("input[type=password]", TEACHER[1])
            teacher.click("button[type=submit]")
            teacher.wait_for_url("**/sessions")
            teacher.goto(f"{server.base}/sessions/{session['id']}")

            # Student: consent, name; the camera comes on.
            student = browser.new_context(permissions=["camera"]).new_page()
            student.goto(session["join_url"])
            student.click("#consent-accept")
            student.fill("#display-name", "Ada")
            student.click("#join-submit")
            # Joining with consent starts the camera by itself (that click was the request).
            expect(student.locator("#stop")).to_be_enabled(timeout=15_000)
            expect(student.locator("#conn-state")).to_contain_text("onnect", timeout=15_000)

            tile = teacher.locator("[data-student-id]").filter(has_text="Ada")
            expect(tile).to_have_count(1, timeout=20_000)
            expect(tile.locator(".emotion")).to_have_attribute("data-emotion", "happy", timeout=20_000)
            expect(tile.locator(".emotion")).to_contain_text("happy")
            # The student sees what the teacher sees.
            expect(student.locator("#self-emotion")).to_have_attribute("data-emotion", "happy", timeout=10_000)
        finally:
            browser.close()

    timeline = server.api("GET", f"/api/sessions/{session['id']}/timeline", token=teacher_token)
    assert sum(b["frames_with_face"] for b in timeline["buckets"]) > 0
    assert {b["dominant"] for b in timeline["buckets"] if b["frames_with_face"]} == {"happy"}
