"""Backpressure in a real headless Chromium: the student page obeys the gateway's rate messages
(sends less while the workers lag, more again afterwards) and reports its captured frames; the
teacher's dashboard tile shows the student's frame counters."""

from __future__ import annotations

import time

import pytest

from classpulse import contracts
from tests.browser import TEACHER, chromium, create_teacher, student_joined, teacher_logged_in

pytestmark = pytest.mark.browser


def test_page_slows_down_when_told_and_the_tile_shows_counters(server, tmp_path, clean_redis):
    from playwright.sync_api import expect

    create_teacher(server, server.login())
    session = server.api("POST", "/api/sessions", {"title": "Physics 8A"}, server.login(*TEACHER))
    with chromium(webcam=tmp_path / "webcam.y4m") as browser:
        teacher = teacher_logged_in(browser, server)
        teacher.goto(f"{server.base}/sessions/{session['id']}")

        student = student_joined(browser, session["join_url"], "Ada")
        # Joining with consent starts the camera by itself.
        expect(student.locator("#stop")).to_be_enabled(timeout=15_000)
        tile = teacher.locator("[data-student-id]").filter(has_text="Ada")
        expect(tile.locator(".emotion")).to_have_attribute("data-emotion", "happy", timeout=30_000)
        # The tile's counters line, from /stream-stats (the page reports captures every 5 s).
        expect(tile.locator(".stream-stats")).to_contain_text("analysed", timeout=15_000)
        expect(tile.locator(".stream-stats")).not_to_contain_text("captured 0 ", timeout=15_000)

        def sent() -> int:
            return int(student.locator("#frames-sent").inner_text())

        # The workers fall behind (a lag report close to the freshness limit)...
        deadline = time.time() + 20
        while time.time() < deadline and "0.5 frames/s" not in (
            student.locator("#conn-state").get_attribute("title") or ""
        ):
            clean_redis.hset(contracts.WORKER_LAG_KEY, "worker-slow", f"1900 {time.time():.1f}")
            time.sleep(0.5)
        assert "0.5 frames/s (backlog)" in student.locator("#conn-state").get_attribute("title")
        # ...and the page really sends less: about one frame in two seconds.
        n0, t0 = sent(), time.time()
        while time.time() - t0 < 6:
            clean_redis.hset(contracts.WORKER_LAG_KEY, "worker-slow", f"1900 {time.time():.1f}")
            time.sleep(0.5)
        assert sent() - n0 <= 4  # 2 fps would be 12

        clean_redis.hdel(contracts.WORKER_LAG_KEY, "worker-slow")  # caught up: speed up again
        expect(student.locator("#conn-state")).to_have_attribute(
            "title", "server asked for 0.75 frames/s (backlog)", timeout=15_000
        )
