"""Worker benchmark: frames/s through the real worker loop against the sum of its bare stages.

    .venv/bin/python bench/bench_worker.py [--frames 2000] [--redis-url redis://127.0.0.1:6379/15]
    .venv/bin/python bench/bench_worker.py --capture edge   # faces messages (edge capture) too

Stages measured alone on the same frames: JPEG decode, then the inference pipeline (detect,
crop, classify every face of a batch in one call) on batches of the worker's batch size. Then
the real InferenceWorker drains the same frames from a Redis stream (XREADGROUP, decode,
pipeline, result encoding, XADD results + XACK in one MULTI/EXEC, counters). The ratio is the
overhead of queues and serialisation our worker adds. One inference thread, like a worker
process per core. The Redis database given is flushed.

With ``--capture edge`` the worker also drains the faces messages pages would send for the same
frames (boxes and packed crops, made once by the worker's own detector and crop code), which skip
decode and detection: the ratio edge/frames is what edge capture saves per worker core.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import redis
from skimage import data as skdata

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from classpulse import contracts as c  # noqa: E402
from classpulse.settings import Settings  # noqa: E402
from worker.pipeline import FramePipeline, decode_jpeg  # noqa: E402
from worker.service import InferenceWorker  # noqa: E402


def frames(n: int) -> list[bytes]:
    """Webcam-like 320×240 JPEGs of a face at slightly different places and sizes."""
    face = cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR)[0:400, 60:460]
    out = []
    for i in range(16):
        side = 170 + 4 * i
        frame = np.full((240, 320, 3), 100, np.uint8)
        x, y = 5 * i, 240 - side
        frame[y:, x : x + side] = cv2.resize(face, (side, side))
        out.append(cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 70])[1].tobytes())
    return [out[i % len(out)] for i in range(n)]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=2000)
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--capture", choices=("frames", "edge"), default="frames")
    args = ap.parse_args()
    settings = Settings(redis_url=args.redis_url, providers=["cpu"], frame_max_age_ms=10**9)
    pipeline = FramePipeline.from_settings(settings)
    jpegs = frames(args.frames)
    batch = settings.worker_batch_size or 32
    r = redis.Redis.from_url(args.redis_url)

    def stages() -> float:
        t0 = time.perf_counter()
        for i in range(0, len(jpegs), batch):
            images = [decode_jpeg(j) for j in jpegs[i : i + batch]]
            pipeline.analyze(images)
        return time.perf_counter() - t0

    def worker_run(payloads: list[bytes] | None = None, kind: bytes = c.KIND_FRAME) -> float:
        payloads = jpegs if payloads is None else payloads
        field = c.F_FACES if kind == c.KIND_FACES else c.F_JPEG
        r.flushdb()
        worker = InferenceWorker(settings, r, pipeline)
        worker.setup()
        pipe = r.pipeline(transaction=False)
        now = str(time.time() * 1000).encode()
        for i, payload in enumerate(payloads):
            pipe.xadd(
                c.FRAMES_STREAM,
                {
                    c.F_VERSION: b"1",
                    c.F_SESSION: b"00000000-0000-0000-0000-000000000001",
                    c.F_STUDENT: b"00000000-0000-0000-0000-000000000002",
                    c.F_SEQ: str(i).encode(),
                    c.F_RECEIVED_MS: now,
                    c.F_EMOTION: b"1",
                    c.F_KIND: kind,
                    field: payload,
                },
            )
        pipe.execute()
        t0 = time.perf_counter()
        done = 0
        while done < len(payloads):
            resp = r.xreadgroup(c.WORKER_GROUP, worker.name, {c.FRAMES_STREAM: ">"}, count=batch)
            done += worker.process(resp[0][1])
        elapsed = time.perf_counter() - t0
        assert r.xlen(c.RESULTS_STREAM) == len(payloads)
        return elapsed

    stages()  # warm-up
    pairs = [(stages(), worker_run()) for _ in range(args.rounds)]
    bare = min(p[0] for p in pairs)
    full = min(p[1] for p in pairs)
    n = len(jpegs)
    print(
        f"{n} frames of 320×240 with one face, batches of {batch}, {pipeline.detector.model.providers}"
    )
    print(
        f"bare stages (decode + pipeline): {n / bare:7.1f} frames/s  ({bare / n * 1000:.3f} ms/frame)"
    )
    print(
        f"real worker loop (Redis in/out): {n / full:7.1f} frames/s  ({full / n * 1000:.3f} ms/frame)"
    )
    print(
        f"overhead of queues and serialisation: {full / bare:.3f}× ({(full / bare - 1) * 100:.1f}%)"
    )
    if args.capture == "edge":
        from tests.edge_helpers import faces_message

        messages = [faces_message(pipeline, j) for j in jpegs]
        edge = min(worker_run(messages, c.KIND_FACES) for _ in range(args.rounds))
        print(
            f"real worker loop, faces messages (edge capture, packed crops, "
            f"{sum(map(len, messages)) / n:.0f} B each): {n / edge:7.1f} frames/s  "
            f"({edge / n * 1000:.3f} ms/frame); edge / frames: {full / edge:.1f}×"
        )
    r.flushdb()
    return 0


if __name__ == "__main__":
    sys.exit(main())
