"""The student page in headless Chromium against the gateway (uvicorn in a thread; no worker
needed): one socket per student, and unknown or ended join codes told alike.

A second tab of the same student (its stored join copied into the new tab, as a reload keeps
it) takes the class over: the first tab's socket is closed with 4409 and the page says the class
is open in another tab and stops, instead of reconnecting and taking it back.
"""

from __future__ import annotations

import json
import time

import pytest
import requests

from tests.browser import chromium, student_joined
from tests.fuzz_harness import serve
from tests.gateway_helpers import bearer, make_user

pytestmark = pytest.mark.browser


def test_a_second_tab_takes_over_and_the_first_stops(settings):
    from playwright.sync_api import expect

    teacher = bearer(settings, make_user(settings, "t@school.example"))
    with serve(settings) as (base, _errors), chromium() as browser:
        r = requests.post(f"{base}/api/sessions", json={"title": "Maths"}, headers=teacher)
        session = r.json()
        code = session["join_code"]
        first = student_joined(browser, f"{base}/join/{code}", "Ada")
        conn = first.locator("#conn-state")
        expect(conn).to_have_attribute("data-state", "open", timeout=10_000)
        key = "classpulse.join." + code
        stored = first.evaluate("key => sessionStorage.getItem(key)", key)
        assert json.loads(stored)["token"]

        # A second tab with the same join (what a reloaded or duplicated tab has).
        second = browser.new_context(permissions=["camera"]).new_page()
        second.add_init_script(f"sessionStorage.setItem({json.dumps(key)}, {json.dumps(stored)})")
        second.goto(f"{base}/join/{code}")
        expect(second.locator("#conn-state")).to_have_attribute(
            "data-state", "open", timeout=10_000
        )
        expect(first.locator("#stream-error")).to_contain_text(
            "open in another tab", timeout=10_000
        )
        expect(conn).to_have_attribute("data-state", "closed")
        time.sleep(3)  # longer than the first reconnect's backoff: nobody takes it back
        expect(conn).to_have_attribute("data-state", "closed")
        expect(second.locator("#conn-state")).to_have_attribute("data-state", "open")
        students = requests.get(f"{base}/api/sessions/{session['id']}/students", headers=teacher)
        assert len(students.json()) == 1  # one join, two tabs

        # Unknown and ended codes: the same words on the page.
        texts = []
        requests.post(f"{base}/api/sessions/{session['id']}/end", headers=teacher)
        for wrong in ("NEVERUSED", code):
            page = browser.new_context().new_page()
            page.goto(f"{base}/join/{wrong}")
            error = page.locator("#join-error")
            expect(error).to_be_visible(timeout=10_000)
            texts.append(error.inner_text())
        assert texts[0] == texts[1] and "has ended" in texts[0], texts
