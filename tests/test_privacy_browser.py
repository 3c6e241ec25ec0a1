"""The policy modes and consent choices as a teacher and students see them, in Chromium.

The whole service runs as deployed (gateway, worker, aggregator processes). The admin sets
``aggregate_only``: the dashboard says so, shows presence without per-student estimates, and
hides the class mix below the minimum group size. One student declines and attends without a
camera; the other withdraws mid-session, and the teacher's tile says so.
"""

from __future__ import annotations

import pytest

from classpulse.devserver import DevServer
from tests.test_browser_e2e import CHROMIUM, TEACHER, write_y4m

pytestmark = pytest.mark.browser


@pytest.fixture
def server(tmp_path, clean_db, redis_url, clean_redis):
    with DevServer(tmp_path / "service", database_url=clean_db, redis_url=redis_url) as srv:
        yield srv


def test_policy_modes_and_consent_in_the_browser(server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    admin = server.login()
    user = {"email": TEACHER[0], "password": TEACHER[1], "role": "teacher", "display_name": "Ms T"}
    server.api("POST", "/api/admin/users", user, admin)
    server.api("PUT", "/api/admin/policy", {"emotion_mode": "aggregate_only", "min_group_size": 2}, admin)
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
            teacher = browser.new_context().new_page()
            teacher.goto(server.base + "/login")
            teacher.fill("input[type=email]", TEACHER[0])
            teacher.fill("input[type=password]", TEACHER[1])
            teacher.click("button[type=submit]")
            teacher.wait_for_url("**/sessions")
            teacher.goto(f"{server.base}/sessions/{session['id']}")
            expect(teacher.locator("#policy-banner")).to_contain_text("class aggregates only")

            # Ada consents and streams: presence on her tile, no estimate, no class mix for one.
            ada = browser.new_context(permissions=["camera"]).new_page()
            ada.goto(session["join_url"])
            ada.click("#consent-accept")
            ada.fill("#display-name", "Ada")
            ada.click("#join-submit")
            expect(ada.locator("#policy-mode")).to_contain_text("class totals only", timeout=10_000)
            expect(ada.locator("#self-consent")).to_contain_text("given")
            tile = teacher.locator("[data-student-id]").filter(has_text="Ada")
            expect(tile.locator(".face")).to_have_text("face seen", timeout=20_000)
            expect(tile.locator(".emotion")).to_be_hidden()
            expect(teacher.locator("#class-note")).to_contain_text(
                "Fewer than 2 students present", timeout=10_000
            )

            # Bo declines: he attends, his camera never starts, and the teacher sees that.
            bo = browser.new_context(permissions=["camera"]).new_page()
            bo.goto(session["join_url"])
            bo.click("#consent-decline")
            bo.fill("#display-name", "Bo")
            bo.click("#join-submit")
            expect(bo.locator("#camera-state")).to_contain_text("without analysis")
            expect(bo.locator("#start")).to_be_disabled()
            expect(bo.locator("#self-consent")).to_contain_text("declined")
            bo_tile = teacher.locator("[data-student-id]").filter(has_text="Bo")
            expect(bo_tile.locator(".presence")).to_have_text("attending, no analysis", timeout=10_000)

            # Ada withdraws mid-session: her camera stops and her tile says so.
            ada.click("#withdraw")
            expect(ada.locator("#withdrawn-step")).to_be_visible()
            expect(ada.locator("#camera-state")).to_contain_text("Camera off")
            expect(tile.locator(".presence")).to_have_text("withdrew", timeout=10_000)
        finally:
            browser.close()

    audit = server.api("GET", "/api/admin/audit?action=policy.update", token=admin)
    assert [e["action"] for e in audit["entries"]] == ["policy.update"]
    assert audit["entries"][0]["detail"]["after"]["emotion_mode"] == "aggregate_only"
