"""Helpers the privacy tests share (no tests here): a class with an admin, a teacher and a
session in a running gateway, real webcam-like frames through the student socket, and the real
worker and aggregator driven in-process, one batch at a time."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import psycopg
import redis
from fastapi.testclient import TestClient

from classpulse import contracts as c
from classpulse.db import make_engine
from classpulse.settings import Settings
from tests.gateway_helpers import (
    bearer,
    client_for,
    join,
    make_user,
    new_session,
    next_json,
    token_protocols,
)
from tests.pipeline_helpers import Aggregator, InferenceWorker
from tests.stream_helpers import drain_worker, jpeg, run_aggregator
from worker.pipeline import FramePipeline


@dataclass
class Class:
    client: TestClient
    settings: Settings
    admin: dict[str, str]  # headers
    teacher: dict[str, str]
    session: dict[str, Any]

    def put_policy(self, **body: Any) -> dict[str, Any]:
        r = self.client.put("/api/admin/policy", json=body, headers=self.admin)
        assert r.status_code == 200, r.text
        return r.json()

    def join(self, name: str = "Ada", consent: bool = True) -> dict[str, Any]:
        if consent:
            return join(self.client, self.session["join_code"], name)
        r = self.client.post(
            f"/api/join/{self.session['join_code']}", json={"display_name": name, "consent": False}
        )
        assert r.status_code == 201, r.text
        return r.json()


@contextmanager
def a_class(settings: Settings) -> Iterator[Class]:
    admin_id = make_user(settings, "admin@school.example", role="admin")
    teacher_id = make_user(settings, "t@school.example")
    with client_for(settings) as client:
        teacher = bearer(settings, teacher_id)
        yield Class(
            client,
            settings,
            bearer(settings, admin_id, "admin"),
            teacher,
            new_session(client, teacher),
        )


def send_frames(client: TestClient, token: str, n: int = 1, face: bool = True) -> list[dict]:
    """Send n real JPEG frames over the student socket, as the page does (under the policy "off"
    at the presence size its config says); return their acks."""
    acks = []
    with client.websocket_connect("/ws/student", subprotocols=token_protocols(token)) as ws:
        config = ws.receive_json()
        box = (config["width"], config["height"])
        if config["emotion_mode"] == "off":
            box = (config["presence_width"], config["presence_height"])
        for _ in range(n):
            ws.send_bytes(fitted(jpeg(face=face), box))
            acks.append(next_json(ws, lambda m: m["type"] == "ack"))
    return acks


def fitted(data: bytes, box: tuple[int, int]) -> bytes:
    """The JPEG's picture fitted into box (width, height) as the page fits the camera's."""
    frame = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    h, w = frame.shape[:2]
    scale = min(box[0] / w, box[1] / h, 1)
    if scale == 1:
        return data
    size = (round(w * scale), round(h * scale))
    return cv2.imencode(".jpg", cv2.resize(frame, size, interpolation=cv2.INTER_AREA))[1].tobytes()


class Pipeline:
    """The real worker and aggregator on the test's Redis and PostgreSQL, run on demand."""

    def __init__(self, settings: Settings, r: redis.Redis, pipeline: FramePipeline) -> None:
        self.r = r
        self.engine = make_engine(settings.database_url or "")
        self.worker = InferenceWorker(settings, r, pipeline)
        self.aggregator = Aggregator(settings, r, self.engine)
        self.written: list[c.FrameResult] = []

    def run(self) -> int:
        """Analyse every frame in the stream and fold every result; return the frames analysed."""
        n = drain_worker(self.worker)
        # What the worker wrote, read before the aggregator stores (and deletes) it.
        self.written += [
            c.result_decoder.decode(f[c.R_DATA]) for _, f in self.r.xrange(c.RESULTS_STREAM)
        ]
        run_aggregator(self.aggregator)
        return n

    def results(self) -> list[c.FrameResult]:
        """The results the worker wrote, in every ``run`` so far."""
        return self.written

    def close(self) -> None:
        self.engine.dispose()


def rows(settings: Settings, sql: str, *params: Any) -> list[tuple]:
    with psycopg.connect(settings.database_url or "") as conn:
        return conn.execute(sql, params).fetchall()
