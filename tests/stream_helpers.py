"""Helpers shared by test modules, moved out of tests/test_stream_services.py: no test module
imports another (tests/test_layering.py)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import cv2
import pytest
import redis
from skimage import data as skdata
from sqlalchemy import select
from sqlalchemy.orm import Session

from classpulse import contracts as c
from classpulse.db import EmotionBucket
from tests.pipeline_helpers import Aggregator, InferenceWorker
from worker.pipeline import FramePipeline


@pytest.fixture(scope="module")
def pipeline() -> FramePipeline:
    from classpulse.settings import Settings

    return FramePipeline.from_settings(Settings(providers=["cpu"]))


def jpeg(face: bool = True, size=(320, 240)) -> bytes:
    image = cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR)
    frame = cv2.resize(image[0:400, 60:460], (size[1], size[1]))
    canvas = (
        cv2.copyMakeBorder(frame, 0, 0, 40, 40, cv2.BORDER_CONSTANT) if face else frame * 0 + 90
    )
    return cv2.imencode(".jpg", canvas)[1].tobytes()


def add_frame(
    r: redis.Redis, roster, student="ada", data: bytes | None = None, age_ms=0.0, seq=1, **extra
):
    fields = {
        c.F_VERSION: b"1",
        c.F_SESSION: roster["session"],
        c.F_STUDENT: roster[student],
        c.F_SEQ: str(seq),
        c.F_RECEIVED_MS: str(time.time() * 1000 - age_ms),
        c.F_EMOTION: b"1",
        c.F_JPEG: data if data is not None else jpeg(),
    }
    fields.update(extra)
    return r.xadd(c.FRAMES_STREAM, fields)


def drain_worker(worker: InferenceWorker) -> int:
    worker.setup()
    total = 0
    while entries := worker.r.xreadgroup(
        c.WORKER_GROUP, worker.name, {c.FRAMES_STREAM: ">"}, count=32
    ):
        total += worker.process(entries[0][1])
    return total


def stats(r: redis.Redis) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in r.hgetall(c.STATS_KEY).items()}


def make_result(
    roster, student: str, t_ms: float, happy: float | None, frame_id: str | None = None
):
    faces = []
    if happy is not None:
        rest = (1 - happy) / 6
        probs = {k: rest for k in ("angry", "disgust", "fear", "sad", "surprise", "neutral")}
        probs = {"happy": happy, **probs}
        faces = [c.Face(box=(10, 10, 80, 80), score=0.9, probs=probs)]
    return c.FrameResult(
        frame_id=frame_id or f"{int(t_ms)}-{uuid.uuid4().int % 1000}",
        session_id=roster["session"],
        student_id=roster[student],
        seq=1,
        received_ms=t_ms,
        processed_ms=t_ms + 20,
        width=320,
        height=240,
        faces=faces,
        models={"emotion": "x"},
        timings_ms={},
    )


def push(r: redis.Redis, results) -> None:
    for res in results:
        r.xadd(c.RESULTS_STREAM, {c.R_DATA: c.encoder.encode(res)})


def buckets(engine) -> list[EmotionBucket]:
    with Session(engine) as db:
        return list(
            db.scalars(
                select(EmotionBucket).order_by(EmotionBucket.student_id, EmotionBucket.bucket_start)
            )
        )


@contextmanager
def loops_running(loops: Iterable[InferenceWorker | Aggregator], join_s: float) -> Iterator[list]:
    """Each loop's ``run`` in a thread while the block runs; then a stop, and a join of each
    thread for up to ``join_s`` seconds. Yields the threads."""
    stop = threading.Event()
    threads = [threading.Thread(target=x.run, args=(stop,)) for x in loops]
    for t in threads:
        t.start()
    try:
        yield threads
    finally:
        stop.set()
        for t in threads:
            t.join(join_s)


def wait_for_frames(engine, frames: int, timeout_s: float) -> None:
    """Until the buckets hold ``frames`` frames, or ``timeout_s`` has passed."""
    deadline = time.time() + timeout_s
    while time.time() < deadline and sum(b.frames for b in buckets(engine)) < frames:
        time.sleep(0.1)


def run_aggregator(agg: Aggregator) -> None:
    from classpulse.streams import ensure_group

    ensure_group(agg.r, c.RESULTS_STREAM, c.AGGREGATOR_GROUP)
    while entries := agg.read_batch():
        agg.handle(entries)
