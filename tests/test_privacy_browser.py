"""The policy modes and consent choices as a teacher and students see them, in Chromium.

The whole service runs as deployed (gateway, worker, aggregator processes). The admin sets
``aggregate_only``: the dashboard says so, shows presence without per-student estimates, and
hides the class mix below the minimum group size. One student declines and attends without a
camera; the other withdraws mid-session, and the teacher's tile says so.
"""

from __future__ import annotations

import pytest

from tests.browser import TEACHER, chromium, create_teacher, student_joined, teacher_logged_in

pytestmark = pytest.mark.browser


def test_policy_modes_and_consent_in_the_browser(server, tmp_path):
    from playwright.sync_api import expect

    admin = server.login()
    create_teacher(server, admin)
    server.api(
        "PUT", "/api/admin/policy", {"emotion_mode": "aggregate_only", "min_group_size": 2}, admin
    )
    teacher_token = server.login(*TEACHER)
    session = server.api("POST", "/api/sessions", {"title": "Biology 9B"}, teacher_token)

    with chromium(webcam=tmp_path / "webcam.y4m") as browser:
        teacher = teacher_logged_in(browser, server)
        teacher.goto(f"{server.base}/sessions/{session['id']}")
        expect(teacher.locator("#policy-banner")).to_contain_text("class aggregates only")

        # Ada consents and streams: presence on her tile, no estimate, no class mix for one.
        ada = student_joined(browser, session["join_url"], "Ada")
        expect(ada.locator("#policy-mode")).to_contain_text("class totals only", timeout=10_000)
        expect(ada.locator("#self-consent")).to_contain_text("given")
        tile = teacher.locator("[data-student-id]").filter(has_text="Ada")
        expect(tile.locator(".face")).to_have_text("face seen", timeout=20_000)
        expect(tile.locator(".emotion")).to_be_hidden()
        expect(teacher.locator("#class-note")).to_contain_text(
            "Fewer than 2 students present", timeout=10_000
        )

        # Bo declines: he attends, his camera never starts, and the teacher sees that.
        bo = student_joined(browser, session["join_url"], "Bo", consent=False)
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

    audit = server.api("GET", "/api/admin/audit?action=policy.update", token=admin)
    assert [e["action"] for e in audit["entries"]] == ["policy.update"]
    assert audit["entries"][0]["detail"]["after"]["emotion_mode"] == "aggregate_only"
