"""The live dashboard at class size, in Chromium at 1366×768.

Thirty simulated students (WebSocket clients, as bench/load_suite.py's) send real faces messages,
built by the worker's own detector and crop code from a face photo and from a frame without a
face; a few join and never start their camera. The whole service runs as deployed. On the
teacher's first screen, without scrolling, must be: the class mix and all 30 tiles, each saying
its state in words; the tiles ordered "needs a look" first by a visible sort control; the join
link and notices folded away once the class has started (the teacher's choice remembered).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import pytest
import websockets

from tests.a11y import SCREENSHOTS, check_page
from tests.browser import TEACHER, chromium, create_teacher, teacher_logged_in

pytestmark = pytest.mark.browser

VIEWPORT = {"width": 1366, "height": 768}
FACES, NO_FACE, CAMERA_OFF = 22, 5, 3  # 30 students
FPS = 1.0
# Thirty joins from one address within a minute: more than a classroom's limit allows.
LOAD_ENV = {
    "CLASSPULSE_JOINS_PER_MINUTE_PER_ADDRESS": "1000",
    "CLASSPULSE_JOINS_PER_MINUTE_PER_SESSION": "1000",
}


@pytest.fixture
def class_server(tmp_path, clean_db, redis_url, clean_redis):
    from classpulse.cli.devserver import DevServer

    with DevServer(
        tmp_path / "service", database_url=clean_db, redis_url=redis_url, env=LOAD_ENV
    ) as srv:
        yield srv


def payloads() -> tuple[bytes, bytes]:
    """The faces message a page sends for a face photo, and for a frame without a face."""
    from classpulse.settings import Settings
    from tests.chaos import frame_jpegs
    from tests.edge_helpers import faces_message
    from worker.pipeline import FramePipeline

    pipeline = FramePipeline.from_settings(Settings(providers=["cpu"]))
    face, empty = frame_jpegs()
    return faces_message(pipeline, face), faces_message(pipeline, empty)


async def simulated_student(url: str, token: str, payload: bytes | None, stop: asyncio.Event):
    """One page: camera on and one message per capture with at most max_in_flight unacked
    (``payload`` None: joined, camera never started)."""
    headers = {"Authorization": "Bearer " + token}
    async with websockets.connect(url, additional_headers=headers, compression=None) as ws:
        config = json.loads(await ws.recv())
        await ws.send(json.dumps({"type": "camera", "state": "on" if payload else "off"}))
        window = asyncio.Semaphore(int(config.get("max_in_flight", 2)))

        async def receive() -> None:
            async for message in ws:
                if isinstance(message, str) and json.loads(message).get("type") == "ack":
                    window.release()

        receiver = asyncio.create_task(receive())
        captured = 0
        try:
            while not stop.is_set():
                if payload is not None:
                    captured += 1
                    if not window.locked():
                        await window.acquire()
                        await ws.send(payload)
                    if captured % 3 == 0:
                        await ws.send(json.dumps({"type": "stats", "captured": 3}))
                with suppress(TimeoutError):  # one capture per 1 / FPS, until told to stop
                    await asyncio.wait_for(stop.wait(), 1 / FPS)
        finally:
            receiver.cancel()


@contextmanager
def simulated_class(server, join_code: str) -> Iterator[None]:
    """30 students joined and streaming in a background thread until the block ends."""
    face, empty = payloads()
    plan = [face] * FACES + [empty] * NO_FACE + [None] * CAMERA_OFF
    joins = [
        server.api(
            "POST",
            f"/api/join/{join_code}",
            {"display_name": f"Student {i + 1:02d}", "consent": True},
        )
        for i in range(len(plan))
    ]
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    url = server.ws_base + "/ws/student"

    async def run() -> None:
        await asyncio.gather(
            *(simulated_student(url, j["token"], p, stop) for j, p in zip(joins, plan, strict=True))
        )

    done: list[BaseException | None] = []

    def thread() -> None:
        try:
            loop.run_until_complete(run())
            done.append(None)
        except BaseException as exc:  # reported in the test's thread below
            done.append(exc)

    worker = threading.Thread(target=thread, daemon=True)
    worker.start()
    try:
        yield
    finally:
        loop.call_soon_threadsafe(stop.set)
        worker.join(timeout=15)
        loop.close()
    assert done == [None], done


def in_viewport(box, viewport=VIEWPORT) -> bool:
    return (
        box is not None
        and box["x"] >= 0
        and box["y"] >= 0
        and box["x"] + box["width"] <= viewport["width"]
        and box["y"] + box["height"] <= viewport["height"]
    )


def test_thirty_students_fit_the_first_screen(class_server):
    from playwright.sync_api import expect

    server = class_server
    create_teacher(server, server.login())
    token = server.login(*TEACHER)
    session = server.api("POST", "/api/sessions", {"title": "Year 9 — all of them"}, token)
    with chromium() as browser, simulated_class(server, session["join_code"]):
        page = teacher_logged_in(browser, server, viewport=VIEWPORT)
        page.goto(f"{server.base}/sessions/{session['id']}")
        tiles = page.locator("#tiles > .tile")
        expect(tiles).to_have_count(30, timeout=20_000)
        expect(tiles.locator(".emotion[data-emotion=happy]")).to_have_count(FACES, timeout=20_000)
        expect(tiles.locator(".presence", has_text="no face")).to_have_count(NO_FACE)

        # The join link and notices folded away once students joined.
        info = page.locator("#class-info")
        expect(info).not_to_have_attribute("open", "")
        page.wait_for_timeout(1500)  # the tiles' order settles (sorted at most once a second)

        assert page.evaluate("() => window.scrollY") == 0
        mix = page.locator("#class-mix")
        assert in_viewport(mix.bounding_box()), mix.bounding_box()
        boxes = [tiles.nth(i).bounding_box() for i in range(30)]
        outside = [i for i, box in enumerate(boxes) if not in_viewport(box)]
        assert not outside, (outside, boxes[outside[0]] if outside else None)

        # Every tile states its state in words, and "needs a look" comes first by default.
        texts = tiles.all_inner_texts()
        assert all(t.strip() for t in texts)
        expect(page.locator("#tile-sort")).to_be_visible()
        expect(page.locator("#tile-sort")).to_have_value("attention")
        looks = tiles.evaluate_all("els => els.map((el) => el.dataset.attention)")
        assert looks[:NO_FACE] == ["yes"] * NO_FACE, looks
        assert "yes" not in looks[NO_FACE:], looks
        assert all("needs a look: no face" in t for t in texts[:NO_FACE]), texts[:NO_FACE]
        expect(page.locator("#needs-look-summary")).to_contain_text(f"{NO_FACE} need a look")

        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "dashboard-30-students-1366x768.png"))
        check_page(page, "dashboard-30-students")  # and no serious a11y violation at class size

        # By name, then back; the teacher's choice to open the notices is remembered.
        page.select_option("#tile-sort", "name")
        page.wait_for_timeout(200)
        names = tiles.locator(".name").all_inner_texts()
        assert names == sorted(names)
        page.locator("#class-info > summary").click()
        expect(info).to_have_attribute("open", "")
        page.reload()
        expect(page.locator("#tiles > .tile")).to_have_count(30, timeout=20_000)
        expect(page.locator("#tile-sort")).to_have_value("name")
        page.wait_for_timeout(500)
        expect(page.locator("#class-info")).to_have_attribute("open", "")
