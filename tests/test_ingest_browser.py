"""The student page (web/static/js/student.js) in a real Chromium against the whole service, where
the runtime for on-device detection can't load (blocked, as a school filter would):

- with CLASSPULSE_CAPTURE_MODE=edge-only the page sends nothing and says why, instead of falling
  back to camera frames: no JPEG reaches the gateway;
- with the default edge capture under the policy "off", the page falls back to frames at the
  presence size (192×144), which the gateway takes (no presence_only drop) and the worker still
  finds the face in.
"""

from __future__ import annotations

import re
import urllib.request

import pytest

from tests.browser import TEACHER, chromium, create_teacher

pytestmark = pytest.mark.browser


def _service(tmp_path, clean_db, redis_url, capture: str):
    from classpulse.cli.devserver import DevServer

    env = {"CLASSPULSE_CAPTURE_MODE": capture}
    return DevServer(tmp_path / "service", database_url=clean_db, redis_url=redis_url, env=env)


def _metric(server, name: str, label: str) -> float:
    text = urllib.request.urlopen(server.base + "/metrics", timeout=5).read().decode()
    m = re.search(rf"{name}\{{[a-z]+=\"{label}\"\}} ([0-9.]+)", text)
    return float(m.group(1)) if m else 0.0


def _student_without_runtime(browser, join_url: str):
    context = browser.new_context(permissions=["camera"])
    context.route("**/vendor/onnxruntime-web/**", lambda route: route.abort())
    page = context.new_page()
    page.goto(join_url)
    page.click("#consent-accept")
    page.fill("#display-name", "Ada")
    page.click("#join-submit")
    return page


def test_edge_only_page_that_cannot_detect_sends_nothing_and_says_why(
    tmp_path, clean_db, redis_url, clean_redis
):
    from playwright.sync_api import expect

    with _service(tmp_path, clean_db, redis_url, "edge-only") as server:
        create_teacher(server, server.login())
        token = server.login(*TEACHER)
        session = server.api("POST", "/api/sessions", {"title": "Physics 7C"}, token)
        with chromium(webcam=tmp_path / "webcam.y4m") as browser:
            student = _student_without_runtime(browser, session["join_url"])
            expect(student.locator("#stop")).to_be_enabled(timeout=15_000)  # camera on
            mode = student.locator("#capture-mode")
            expect(mode).to_have_attribute("data-capture", "none", timeout=30_000)
            assert mode.get_attribute("data-fallback") in ("unsupported", "model_load_failed")
            expect(mode).to_contain_text("Nothing is sent")
            expect(mode).to_contain_text("only on-device face detection")
            expect(student.locator("#capture-kind")).to_contain_text("nothing")
            student.wait_for_timeout(3000)  # frames would have gone at 2 per second by now
            assert student.locator("#frames-sent").inner_text() == "0"
        assert _metric(server, "classpulse_ingest_messages_total", "frame") == 0
        assert _metric(server, "classpulse_frames_dropped_total", "edge_required") == 0


def test_under_off_a_fallback_page_sends_presence_sized_frames(
    tmp_path, clean_db, redis_url, clean_redis
):
    from playwright.sync_api import expect

    with _service(tmp_path, clean_db, redis_url, "edge") as server:
        admin = server.login()
        create_teacher(server, admin)
        server.api("PUT", "/api/admin/policy", {"emotion_mode": "off"}, admin)
        token = server.login(*TEACHER)
        session = server.api("POST", "/api/sessions", {"title": "Physics 7C"}, token)
        with chromium(webcam=tmp_path / "webcam.y4m") as browser:
            student = _student_without_runtime(browser, session["join_url"])
            mode = student.locator("#capture-mode")
            expect(mode).to_have_attribute("data-capture", "frames", timeout=30_000)
            expect(mode).to_contain_text("at most 192×144")
            # The worker finds the face in the small frames: presence works under "off".
            expect(student.locator("#self-presence")).to_have_text("face seen", timeout=30_000)
            acked = int(student.locator("#frames-acked").inner_text())
            assert acked > 0
            assert "presence" not in student.locator("#frames-dropped").inner_text()
        assert _metric(server, "classpulse_ingest_messages_total", "frame") > 0
        assert _metric(server, "classpulse_frames_dropped_total", "presence_only") == 0
