"""Frame counters that never contradict each other, in Chromium, on the whole service.

A student streams from a fake webcam; the teacher's dashboard shows the frame counters on the
student's tile. Sampled again and again while frames flow, and across a reload of the student's
page, each page must agree with itself and with what the other showed earlier:

- student page: acknowledged + dropped <= sent; frames analysed and kept <= acknowledged
  (<= sent after a reload, which can lose the acks of the frames then in flight); of them with
  a face <= analysed and kept;
- teacher's tile: analysed + dropped <= sent <= captured;
- across the two (the tile read first): what the tile says was analysed <= what the student's
  page says was acknowledged since.
"""

from __future__ import annotations

import re
import time

import pytest

from tests.browser import TEACHER, chromium, create_teacher, student_joined, teacher_logged_in

pytestmark = pytest.mark.browser

STUDENT_COUNTS = """() => {
  const n = (id) => parseInt(document.getElementById(id).textContent, 10) || 0;
  return {sent: n("frames-sent"), acked: n("frames-acked"), dropped: n("frames-dropped"),
          kept: n("sofar-frames"), faced: n("sofar-faced")};
}"""


def tile_counts(tile) -> dict[str, int]:
    stats = tile.locator(".stream-stats")
    text = stats.inner_text()
    counts = {k: int(stats.get_attribute(f"data-{k}") or -1) for k in ("captured", "sent")}
    counts |= {k: int(stats.get_attribute(f"data-{k}") or -1) for k in ("analysed", "dropped")}
    # The words say the same as the data: "frames: captured 7 · sent 7 · analysed 6 · dropped 0"
    for k, v in counts.items():
        assert re.search(rf"\b{k} {v}\b", text), (k, v, text)
    return counts


def check(tile: dict[str, int], student: dict[str, int], reloaded: bool = False) -> None:
    assert tile["analysed"] + tile["dropped"] <= tile["sent"] <= tile["captured"], tile
    assert student["acked"] + student["dropped"] <= student["sent"], student
    assert student["faced"] <= student["kept"] <= student["sent" if reloaded else "acked"], student
    assert tile["analysed"] <= student["sent" if reloaded else "acked"], (tile, student)


def test_counters_never_contradict_each_other(server, tmp_path):
    from playwright.sync_api import expect

    create_teacher(server, server.login())
    token = server.login(*TEACHER)
    session = server.api("POST", "/api/sessions", {"title": "Chemistry 10A"}, token)

    with chromium(webcam=tmp_path / "webcam.y4m") as browser:
        teacher = teacher_logged_in(browser, server)
        teacher.goto(f"{server.base}/sessions/{session['id']}")
        student = student_joined(browser, session["join_url"], "Ada")
        expect(student.locator("#stop")).to_be_enabled(timeout=15_000)

        tile = teacher.locator("[data-student-id]").filter(has_text="Ada")
        teacher.click("#tile-details")
        expect(teacher.locator("#tile-details")).to_have_attribute("aria-pressed", "true")
        expect(tile.locator(".stream-stats")).to_be_visible(timeout=15_000)

        samples = 0
        deadline = time.monotonic() + 12
        while time.monotonic() < deadline:
            check(tile_counts(tile), student.evaluate(STUDENT_COUNTS))
            samples += 1
            teacher.wait_for_timeout(700)

        # A reload keeps this tab's counts: the stored frames (now above zero) stay within them.
        before = student.evaluate(STUDENT_COUNTS)
        assert before["acked"] > 0
        student.reload()
        expect(student.locator("#stream-step")).to_be_visible()
        expect(student.locator("#sofar-frames")).not_to_have_text("0", timeout=15_000)
        after = student.evaluate(STUDENT_COUNTS)
        assert after["sent"] >= before["sent"] and after["acked"] >= before["acked"], after
        check(tile_counts(tile), student.evaluate(STUDENT_COUNTS), reloaded=True)
        assert samples >= 5
