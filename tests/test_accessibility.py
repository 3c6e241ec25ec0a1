"""Accessibility of every page in the states the browser tests reach, in Chromium.

axe-core (WCAG 2.1 A/AA, tests/a11y.py) must find no serious or critical violation on: the
login page, the teacher's sessions, the live dashboard with a student streaming (frame counters
and notices folded, then unfolded), the history, the join page's consent, name, streaming,
declined and withdrawn states, and the privacy notice. Each check leaves a screenshot in
artifacts/screenshots/. Then the keyboard alone: a student goes through consent, name and camera
with Tab, Enter and Space, and a teacher reaches every student tile and the dashboard's
controls, each showing where the focus is. And the consent notice reads as what it is
(headings, lists) and is never cut off, from a 360 px phone to a 1920 px screen. The
plain-HTTP device help page of `classpulse run --lan` too.
"""

from __future__ import annotations

import re

import pytest

from classpulse.settings import REPO_ROOT
from tests.a11y import AXE_SHA256, AXE_VERSION, check_page, verified_axe
from tests.browser import (
    TEACHER,
    chromium,
    create_teacher,
    student_joined,
    teacher_logged_in,
)

pytestmark = pytest.mark.browser


def test_vendored_axe_matches_the_recorded_checksum() -> None:
    assert verified_axe() == AXE_VERSION
    readme = (REPO_ROOT / "web" / "static" / "vendor" / "README.md").read_text(encoding="utf-8")
    assert AXE_SHA256 in readme
    assert re.search(rf"`axe-core/axe\.min\.js`.*\| {re.escape(AXE_VERSION)} \| MPL-2\.0", readme)
    licence = REPO_ROOT / "web" / "static" / "vendor" / "axe-core" / "LICENSE"
    assert "Mozilla Public License" in licence.read_text(encoding="utf-8")[:200]


def test_every_page_passes_axe(server, tmp_path):
    from playwright.sync_api import expect

    create_teacher(server, server.login())
    token = server.login(*TEACHER)
    session = server.api("POST", "/api/sessions", {"title": "Biology 9B"}, token)
    dashboard = f"{server.base}/sessions/{session['id']}"

    with chromium(webcam=tmp_path / "webcam.y4m") as browser:
        anonymous = browser.new_context().new_page()
        anonymous.goto(server.base + "/login")
        check_page(anonymous, "login")
        anonymous.goto(server.base + "/privacy")
        check_page(anonymous, "privacy")

        teacher = teacher_logged_in(browser, server)
        expect(teacher.locator(".session")).to_have_count(1)
        check_page(teacher, "sessions")

        student = browser.new_context(permissions=["camera"]).new_page()
        student.goto(session["join_url"])
        expect(student.locator("#consent-step")).to_be_visible()
        expect(student.locator("#consent-text h3").first).to_be_visible()
        check_page(student, "join-consent")
        student.click("#consent-accept")
        expect(student.locator("#name-step")).to_be_visible()
        check_page(student, "join-name")
        student.fill("#display-name", "Ada")
        student.click("#join-submit")
        expect(student.locator("#self-emotion")).to_have_attribute(
            "data-emotion", "happy", timeout=30_000
        )
        check_page(student, "join-streaming")
        student.set_viewport_size({"width": 360, "height": 800})  # a phone: nothing sideways
        assert student.evaluate("() => document.documentElement.scrollWidth") <= 360
        check_page(student, "join-streaming-360px")

        teacher.goto(dashboard)
        tile = teacher.locator("[data-student-id]").filter(has_text="Ada")
        expect(tile.locator(".emotion")).to_have_attribute("data-emotion", "happy", timeout=20_000)
        check_page(teacher, "dashboard-live")
        teacher.click("#tile-details")  # the frame counters on each tile, and the notices
        teacher.click("#class-info > summary")
        expect(tile.locator(".stream-stats")).to_be_visible(timeout=10_000)
        check_page(teacher, "dashboard-live-details")

        # The other ends of the join flow: declined (no camera), and withdrawn.
        declined = student_joined(browser, session["join_url"], "Bo", consent=False)
        expect(declined.locator("#camera-state")).to_contain_text("without analysis")
        check_page(declined, "join-declined")
        student.click("#withdraw")
        expect(student.locator("#withdrawn-step")).to_be_visible()
        check_page(student, "join-withdrawn")
        expect(tile.locator(".presence")).to_have_text("withdrew", timeout=10_000)
        check_page(teacher, "dashboard-withdrawn-and-declined")

        teacher.goto(dashboard + "/history")
        expect(teacher.locator("#history-status")).not_to_have_text("Loading…", timeout=10_000)
        check_page(teacher, "history")


FOCUSED = """() => {
  const el = document.activeElement;
  const style = getComputedStyle(el);
  return {id: el.id, tag: el.tagName, cls: el.className, student: el.dataset.studentId || null,
          ring: style.boxShadow !== "none" || style.outlineStyle !== "none"};
}"""


def tab_to(page, selector: str, limit: int = 40, key: str = "Tab") -> dict:
    """Press Tab until ``selector`` has the focus; what has it, with a visible focus ring."""
    for _ in range(limit):
        page.keyboard.press(key)
        if page.evaluate("(s) => document.activeElement.matches(s)", selector):
            focused = page.evaluate(FOCUSED)
            assert focused["ring"], f"no visible focus on {selector}: {focused}"
            return focused
    raise AssertionError(f"{selector} never got the focus in {limit} presses of {key}")


def test_keyboard_only_join_and_dashboard(server, tmp_path):
    from playwright.sync_api import expect

    create_teacher(server, server.login())
    token = server.login(*TEACHER)
    session = server.api("POST", "/api/sessions", {"title": "Biology 9B"}, token)
    with chromium(webcam=tmp_path / "webcam.y4m") as browser:
        # Student: consent (Enter), name (typed), join (Space), camera off and on again.
        student = browser.new_context(permissions=["camera"]).new_page()
        student.goto(session["join_url"])
        expect(student.locator("#consent-step")).to_be_visible()
        tab_to(student, "#consent-accept")
        student.keyboard.press("Enter")
        expect(student.locator("#name-step")).to_be_visible()
        expect(student.locator("#display-name")).to_be_focused()
        student.keyboard.type("Ada")
        tab_to(student, "#join-submit")
        student.keyboard.press("Space")
        expect(student.locator("#stop")).to_be_enabled(timeout=15_000)
        tab_to(student, "#stop")
        student.keyboard.press("Space")
        expect(student.locator("#start")).to_be_enabled()
        tab_to(student, "#start", key="Shift+Tab")
        student.keyboard.press("Enter")
        expect(student.locator("#stop")).to_be_enabled(timeout=15_000)

        # Teacher: every tile and every control of the dashboard is reached by Tab, in order.
        teacher = teacher_logged_in(browser, server)
        teacher.goto(f"{server.base}/sessions/{session['id']}")
        expect(teacher.locator("[data-student-id]")).to_have_count(1, timeout=20_000)
        reached: list[dict] = []
        for _ in range(40):
            teacher.keyboard.press("Tab")
            focused = teacher.evaluate(FOCUSED)
            if focused["tag"] == "BODY":
                break
            reached.append(focused)
        assert all(f["ring"] for f in reached), [f for f in reached if not f["ring"]]
        ids = [f["id"] for f in reached]
        for control in ("tile-sort", "tile-details"):
            assert control in ids, ids
        assert "SUMMARY" in [f["tag"] for f in reached], reached
        assert [f["student"] for f in reached if f["student"]] == [
            teacher.locator("[data-student-id]").first.get_attribute("data-student-id")
        ]
        # Enter on the folded notices opens them; Space on the counters button presses it.
        teacher.locator("#class-info > summary").focus()
        teacher.keyboard.press("Enter")
        expect(teacher.locator("#class-info")).to_have_attribute("open", "")
        teacher.locator("#tile-details").focus()
        teacher.keyboard.press("Space")
        expect(teacher.locator("#tile-details")).to_have_attribute("aria-pressed", "true")


NOTICE_OVERFLOW = """() => {
  const step = document.getElementById("consent-step");
  const over = [];
  for (const el of [step, ...step.querySelectorAll("*")]) {
    if (el.clientWidth > 0 && el.scrollWidth > el.clientWidth) over.push(el.tagName + "#" + el.id);
    const r = el.getBoundingClientRect();
    if (r.width > 0 && (r.left < 0 || r.right > document.documentElement.clientWidth)) {
      over.push(el.tagName + " outside the window");
    }
  }
  const text = document.getElementById("consent-text");
  if (text.scrollHeight > text.clientHeight) over.push("the notice scrolls inside its box");
  return {over: over, page: document.documentElement.scrollWidth - window.innerWidth,
          text: text.innerText, headings: text.querySelectorAll("h3").length,
          items: text.querySelectorAll("ul > li").length};
}"""


def test_consent_notice_is_structured_and_never_cut_off(server):
    from playwright.sync_api import expect

    create_teacher(server, server.login())
    token = server.login(*TEACHER)
    session = server.api("POST", "/api/sessions", {"title": "Biology 9B"}, token)
    notice = server.api("GET", f"/api/join/{session['join_code']}")["consent_text"]
    words = re.sub(r"(?m)^\s*- ", "", notice).split()
    headings = [b.splitlines()[0] for b in notice.strip().split("\n\n")]
    with chromium() as browser:
        for width in (360, 768, 1920):
            page = browser.new_context(viewport={"width": width, "height": 800}).new_page()
            page.goto(session["join_url"])
            expect(page.locator("#consent-step")).to_be_visible()
            got = page.evaluate(NOTICE_OVERFLOW)
            assert got["over"] == [] and got["page"] <= 0, (width, got["over"], got["page"])
            assert got["text"].split() == words, width  # all of it, in order, nothing added
            assert got["headings"] == len(headings) and got["items"] == notice.count("\n- ")
            for heading in headings:
                expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
            if width == 360:
                check_page(page, "join-consent-360px")
            page.context.close()


def test_lan_help_page_passes_axe(tmp_path, monkeypatch):
    """The plain-HTTP page of `classpulse run --lan` that says how each device trusts the
    certificate: its own small server (classpulse/cli/lan.py), at 1280 px and on a phone."""
    import argparse

    from classpulse.cli import lan
    from classpulse.cli.devserver import free_port
    from classpulse.settings import Settings

    monkeypatch.setenv("CLASSPULSE_HOST", "127.0.0.1")
    parser = argparse.ArgumentParser()
    parser.add_argument("--host")
    lan.add_arguments(parser)
    args = parser.parse_args(["--lan", "--tls-name", "classroom.test"])
    setup = lan.prepare(args, Settings(data_dir=tmp_path / "data", host="127.0.0.1"))
    assert setup is not None
    port = free_port()
    helper = lan.HelpServer(setup, port).start()
    try:
        with chromium() as browser:
            page = browser.new_context().new_page()
            page.goto(f"http://127.0.0.1:{port}/join/ABCD2345")
            check_page(page, "lan-help-join")
            page.set_viewport_size({"width": 360, "height": 800})
            assert page.evaluate("() => document.documentElement.scrollWidth") <= 360
            check_page(page, "lan-help-360px")
    finally:
        helper.stop()
