"""Attention end to end in Chromium (docs/attention.md): a school runs emotion inference ``off``
with attention on.

The whole service runs as deployed (`classpulse run`: gateway, worker, aggregator) on the test
PostgreSQL and Redis; a student joins through the join page with the fake webcam showing a real
face photo. The teacher's tile and class panel must show the raw observation in words ("facing
the screen 100 % of the last 5 min", "1 of 1 facing the screen") and the history page the stored
share; nothing of an emotion may appear: no label or probability on any page, and no estimate
in any message of the dashboard's or the student's socket. axe-core checks the dashboard and the
history page with attention shown.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.a11y import check_page
from tests.browser import TEACHER, chromium, create_teacher, teacher_logged_in
from tests.history_helpers import wait_until_stored

pytestmark = pytest.mark.browser

# The FER labels (the test model's) as whole words: none may appear where emotions are off.
LABEL_WORD = re.compile(r"\b(angry|disgust|fear|happy|sad|surprise|neutral)\b", re.IGNORECASE)
# The fields of a live update that carry an estimate (classpulse.contracts.EMOTION_FIELDS).
ESTIMATE_KEYS = ("emotion", "confidence", "probs", "quality")
# "judgement" wording the pages must never use about attention.
VERDICT_WORD = re.compile(r"disengag|inattentive|distracted|not paying attention", re.IGNORECASE)


def updates_in(value: Any) -> list[dict[str, Any]]:
    """Every live update (a student's state) anywhere in a socket message: the message itself,
    a snapshot's students' latest updates, a student page's ``self`` messages."""
    found: list[dict[str, Any]] = []
    if isinstance(value, dict):
        if "student_id" in value and "t" in value and "presence" in value:
            found.append(value)
        for v in value.values():
            found += updates_in(v)
    elif isinstance(value, list):
        for v in value:
            found += updates_in(v)
    return found


def listen(page: Any, into: list[dict[str, Any]]) -> None:
    """Every JSON text message a page's sockets receive, from now on."""

    def on_socket(ws: Any) -> None:
        def on_frame(payload: Any) -> None:
            if isinstance(payload, str) and payload.startswith("{"):
                into.append(json.loads(payload))

        ws.on("framereceived", on_frame)

    page.on("websocket", on_socket)


def assert_no_emotion(messages: list[dict[str, Any]], who: str) -> None:
    for msg in messages:
        shown = dict(msg)
        # The snapshot names the model's vocabulary (its label order); no estimate is in it.
        shown.pop("labels", None)
        for update in updates_in(shown):
            carried = {k: update.get(k) for k in ESTIMATE_KEYS if update.get(k) is not None}
            assert not carried, (who, msg)
        assert not LABEL_WORD.search(json.dumps(shown)), (who, msg)


def assert_page_shows_no_emotion(page: Any, name: str) -> None:
    text = page.locator("body").inner_text()
    assert not LABEL_WORD.search(text), (name, LABEL_WORD.search(text))
    assert not VERDICT_WORD.search(text), (name, VERDICT_WORD.search(text))


def test_facing_the_screen_with_emotions_off(server, tmp_path):
    from playwright.sync_api import expect

    admin = server.login()
    create_teacher(server, admin)
    policy = server.api(
        "PUT", "/api/admin/policy", {"emotion_mode": "off", "attention": True}, admin
    )
    assert (policy["emotion_mode"], policy["attention"]) == ("off", True)
    token = server.login(*TEACHER)
    session = server.api("POST", "/api/sessions", {"title": "Maths 7C"}, token)
    dashboard = f"{server.base}/sessions/{session['id']}"

    with chromium(webcam=tmp_path / "webcam.y4m") as browser:
        teacher = teacher_logged_in(browser, server)
        teacher_messages: list[dict[str, Any]] = []
        listen(teacher, teacher_messages)
        teacher.goto(dashboard)
        expect(teacher.locator("#conn-state")).to_have_text("live", timeout=15_000)

        # Student: consent (the notice says what is observed), name; the camera comes on.
        student = browser.new_context(permissions=["camera"]).new_page()
        student_messages: list[dict[str, Any]] = []
        listen(student, student_messages)
        student.goto(session["join_url"])
        expect(student.locator("#consent-text")).to_contain_text("screen")
        # ...and what this school observes now, before the student agrees.
        expect(student.locator("#consent-mode")).to_contain_text(
            "whether your head faces the screen"
        )
        student.click("#consent-accept")
        student.fill("#display-name", "Ada")
        student.click("#join-submit")
        expect(student.locator("#stop")).to_be_enabled(timeout=15_000)
        # The page says what leaves it is observed for: the head's orientation, no expression.
        expect(student.locator("#attention-mode")).to_be_visible(timeout=15_000)
        expect(student.locator("#attention-mode")).to_contain_text(
            "whether your head faces the screen"
        )
        expect(student.locator("#attention-mode")).to_contain_text("no expression")

        # The teacher's tile: the observation in words, never an estimate.
        tile = teacher.locator("[data-student-id]").filter(has_text="Ada")
        expect(tile).to_have_count(1, timeout=20_000)
        facing = tile.locator(".facing")
        expect(facing).to_have_text(
            re.compile(r"^facing the screen \d+ % of the last 5 min$"), timeout=30_000
        )
        # The photo looks straight at the camera.
        expect(facing).to_have_text("facing the screen 100 % of the last 5 min", timeout=20_000)
        expect(tile.locator(".facing-line")).to_have_attribute("data-facing", "yes")
        expect(tile.locator(".away")).to_have_text("")
        expect(tile.locator(".emotion")).to_be_hidden()
        expect(tile.locator(".emotion")).to_have_attribute("data-emotion", "none")
        expect(tile.locator(".confidence")).to_have_text("")
        assert tile.locator(".probbar > *").count() == 0

        # The class panel: the share of observed students facing the screen, now and sampled.
        expect(teacher.locator("#facing-panel")).to_be_visible()
        expect(teacher.locator("#facing-now")).to_have_text("1 of 1 facing the screen")
        expect(teacher.locator("#facing-chart-text")).to_contain_text(
            "latest 100 % facing the screen", timeout=15_000
        )
        expect(teacher.locator("#class-mix")).to_contain_text("Emotion inference is off")
        expect(teacher.locator("#distribution-chart")).to_be_hidden()
        expect(teacher.locator("#timeline-chart")).to_be_hidden()

        # The student sees what the teacher sees.
        expect(student.locator("#self-facing")).to_contain_text(
            "facing the screen 100 % of the last 5 min", timeout=10_000
        )
        expect(student.locator("#self-emotion")).to_have_text("—")

        assert_page_shows_no_emotion(teacher, "dashboard")
        assert_page_shows_no_emotion(student, "student page")
        check_page(teacher, "dashboard-attention-emotions-off")

        # The history page: the stored share per bucket, still no expression anywhere.
        history = teacher.context.new_page()
        wait_until_stored(history, dashboard)
        history.goto(dashboard + "/history")
        expect(history.locator("#facing-section")).to_be_visible(timeout=15_000)
        expect(history.locator("#facing-text")).to_contain_text("observed frames faced the screen")
        expect(history.locator("#class-table thead")).to_contain_text("facing the screen")
        expect(history.locator("#mix-section")).to_be_hidden()
        # One student's share per bucket: offered while attention is on, whatever the mode.
        history.select_option("#student-select", label="Ada")
        expect(history.locator("#student-facing")).to_be_visible(timeout=10_000)
        expect(history.locator("#student-facing-text")).to_contain_text(
            "observed frames faced the screen"
        )
        expect(history.locator("#student-chart-box")).to_be_hidden()
        assert_page_shows_no_emotion(history, "history")
        check_page(history, "history-attention-emotions-off")

    # Both sockets carried the observation, and no estimate at all.
    teacher_updates = [u for m in teacher_messages for u in updates_in(m)]
    assert any(u.get("facing") is True for u in teacher_updates), teacher_messages[-5:]
    assert any(m.get("type") == "self" and m.get("facing") is True for m in student_messages)
    assert_no_emotion(teacher_messages, "dashboard socket")
    assert_no_emotion(student_messages, "student socket")


@pytest.mark.parametrize("mode", ["per_student", "aggregate_only"])
def test_facing_beside_each_emotion_mode_and_gone_when_switched_off(server, tmp_path, mode):
    """Attention has its own switch: the observation shows beside what the emotion mode shows,
    and when an admin turns attention off mid-class, the dashboard and the student page drop
    it at once (the policy message), whatever they had received."""
    from playwright.sync_api import expect

    admin = server.login()
    create_teacher(server, admin)
    server.api("PUT", "/api/admin/policy", {"emotion_mode": mode, "attention": True}, admin)
    token = server.login(*TEACHER)
    session = server.api("POST", "/api/sessions", {"title": "Art 8A"}, token)

    with chromium(webcam=tmp_path / "webcam.y4m") as browser:
        teacher = teacher_logged_in(browser, server)
        teacher.goto(f"{server.base}/sessions/{session['id']}")
        student = browser.new_context(permissions=["camera"]).new_page()
        student.goto(session["join_url"])
        student.click("#consent-accept")
        student.fill("#display-name", "Ada")
        student.click("#join-submit")
        expect(student.locator("#attention-mode")).to_contain_text(
            "Also observed: whether your head faces the screen", timeout=15_000
        )

        tile = teacher.locator("[data-student-id]").filter(has_text="Ada")
        expect(tile.locator(".facing")).to_have_text(
            "facing the screen 100 % of the last 5 min", timeout=30_000
        )
        expect(teacher.locator("#facing-now")).to_have_text("1 of 1 facing the screen")
        expect(teacher.locator("#policy-banner")).to_contain_text("Head orientation is observed")
        if mode == "per_student":
            expect(tile.locator(".emotion")).to_have_attribute("data-emotion", "happy")
        else:
            expect(tile.locator(".emotion")).to_be_hidden()
        check_page(teacher, f"dashboard-attention-{mode}")

        server.api("PUT", "/api/admin/policy", {"attention": False}, admin)
        expect(teacher.locator("#facing-panel")).to_be_hidden(timeout=10_000)
        expect(tile.locator(".facing-line")).to_have_attribute("data-facing", "none")
        expect(tile.locator(".facing-line")).to_be_hidden()
        expect(teacher.locator("#policy-banner")).not_to_contain_text("Head orientation")
        expect(student.locator("#attention-mode")).to_be_hidden(timeout=10_000)
        expect(student.locator("#self-facing")).to_be_hidden()
        # Nothing comes back: the service withholds the fields from now on.
        teacher.wait_for_timeout(3000)
        expect(tile.locator(".facing-line")).to_have_attribute("data-facing", "none")
        expect(teacher.locator("#facing-panel")).to_be_hidden()
