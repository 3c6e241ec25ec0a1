"""In Chromium against the whole service: the dashboard tile and the history page word the
estimate from the model's calibration as the worker published it — "estimate, calibrated: right
about N % of the time at this confidence on <dataset>" for a calibrated model, "estimate (not
calibrated)" for the shipped ones — never a fixed sentence."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from classpulse import contracts as c
from classpulse.cli.devserver import ADMIN_EMAIL, ADMIN_PASSWORD
from tests.browser import chromium, create_teacher, teacher_logged_in
from tests.calibration_helpers import MINI, overconfident
from tests.history_helpers import seed_session
from training.calibrate import calibration_for, softmax_t, write_calibrated
from worker.classifier import EmotionClassifier
from worker.runtime import OnnxModel

TEACHER = ("calibration@school.test", "teacher-password-1")


@pytest.fixture
def calibrated_server(tmp_path: Path, clean_db: str, redis_url: str, clean_redis) -> Iterator:
    """The service with a calibrated copy of the shipped mini-Xception as its emotion model."""
    from classpulse.cli.devserver import DevServer

    z, y = overconfident(500, 1.8)
    cal = calibration_for(softmax_t(z, 1.0), y, "synthetic test set", 0.6)
    model = tmp_path / "mini_calibrated.onnx"
    write_calibrated(MINI, model, cal)
    env = {"CLASSPULSE_EMOTION_MODEL": str(model)}
    with DevServer(tmp_path / "service", database_url=clean_db, redis_url=redis_url, env=env) as s:
        yield s, cal


@pytest.mark.browser
def test_tile_and_history_say_what_the_percentage_means(calibrated_server, settings):
    from playwright.sync_api import expect

    server, cal = calibrated_server
    created = create_teacher(server, server.login(), TEACHER, display_name="Ms C")
    seeded = seed_session(settings, created["id"], "Chemistry 10A")
    with chromium() as browser, redis.Redis.from_url(settings.redis_url) as r:
        deadline = time.monotonic() + 60
        while not r.hget(c.MODEL_INFO_KEY, "calibration") and time.monotonic() < deadline:
            time.sleep(0.2)  # the worker publishes its model info when it has loaded
        published = json.loads(r.hget(c.MODEL_INFO_KEY, "calibration"))
        assert published["calibrated"] and published["dataset"] == "synthetic test set"

        page = teacher_logged_in(browser, server, TEACHER)
        page.goto(f"{server.base}/sessions/{seeded.session_id}/history")
        note = page.locator("#calibration-note")
        assert cal.uncertain_below is not None and cal.accuracy_above is not None
        expect(note).to_contain_text(
            f"estimate, calibrated: right about {round(cal.accuracy_above * 100)} % of the time"
            f" at a confidence of {round(cal.uncertain_below * 100)} % or more on synthetic test"
            " set (500 images)"
        )

        page.goto(f"{server.base}/sessions/{seeded.session_id}")
        update = {
            "type": "student",
            "session_id": seeded.session_id,
            "student_id": seeded.ada,
            "presence": "present",
            "emotion": "happy",
            "quality": None,
            "confidence": 0.9,
            "faces": 1,
            "probs": {"happy": 0.9, "neutral": 0.1},
            "t": 2e9,
        }
        expect(page.locator("#calibration-note")).to_contain_text(
            "calibrated on synthetic test set"
        )
        r.publish(c.live_channel(seeded.session_id), json.dumps(update))
        confidence = page.locator(f"[data-student-id='{seeded.ada}'] .confidence")
        expect(confidence).to_have_text("90 %")
        got = cal.accuracy_at(0.9)
        assert got is not None
        accuracy, count = got
        expect(confidence).to_have_attribute(
            "title",
            f"estimate, calibrated: right about {round(accuracy * 100)} % of the time at this"
            f" confidence on synthetic test set ({count} of 500 images)",
        )
        # The admin's status page summarises it (not the whole reliability table).
        admin = teacher_logged_in(browser, server, (ADMIN_EMAIL, ADMIN_PASSWORD))
        admin.goto(server.base + "/admin/status")
        expect(admin.locator("#models-list")).to_contain_text(
            f"calibrated on synthetic test set (500 images): T = {cal.temperature}"
        )
        admin.close()

        # A worker with the shipped (uncalibrated) model publishes so; the pages say so.
        shipped = EmotionClassifier([OnnxModel(MINI, providers=("cpu",))]).published()
        r.hset(c.MODEL_INFO_KEY, mapping=shipped)
        page.reload()
        expect(page.locator("#calibration-note")).to_contain_text("estimate (not calibrated)")
        r.publish(c.live_channel(seeded.session_id), json.dumps({**update, "t": 2e9 + 1}))
        expect(confidence).to_have_attribute("title", "estimate (not calibrated)")
        page.goto(f"{server.base}/sessions/{seeded.session_id}/history")
        expect(page.locator("#calibration-note")).to_contain_text("estimate (not calibrated)")
