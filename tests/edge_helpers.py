"""Helpers for edge capture (no tests here): the faces message a student page would send for a
frame, built with the worker's own detector and crop code, so that a faces message and the JPEG
of the same frame must give the same results. Shared by tests/test_edge_capture.py and the load
suite's simulated students (bench/load_suite.py --capture edge)."""

from __future__ import annotations

import time

from classpulse import edge_wire
from worker.pipeline import FramePipeline, decode_jpeg


def faces_message(
    pipeline: FramePipeline,
    jpeg: bytes,
    *,
    crops: bool = True,
    detector_ms: float = 8.0,
    packed: bool = True,
) -> bytes:
    """The faces message for the frame this JPEG decodes to: the worker's detections (boxes,
    scores, keypoints) and, with ``crops``, the classifier's crops of them, packed as the pages
    send them (``packed``)."""
    frame = decode_jpeg(jpeg)  # the very pixels the worker would see in the JPEG
    h, w = frame.shape[:2]
    detections = pipeline.detector.detect(frame)
    faces = [(d.box, d.score, d.keypoints.tolist()) for d in detections]
    if not crops or pipeline.classifier is None:
        return edge_wire.encode(w, h, faces, detector_ms=detector_ms, capture_ms=now_ms())
    clf = pipeline.classifier
    cut = clf.crops(frame, [d.box for d in detections])
    return edge_wire.encode(
        w,
        h,
        faces,
        crops=memoryview(cut),
        crop_size=clf.size[0],
        detector_ms=detector_ms,
        capture_ms=now_ms(),
        packed=packed,
    )


def now_ms() -> float:
    return time.time() * 1000


def parity_clip(frames: int = 40, size: tuple[int, int] = (640, 480)) -> list:
    """A webcam-like clip (BGR frames) for the edge/server parity test: skimage's astronaut
    (a real photograph) at laptop distance over a real photo's background, moving, turning a
    little, nearer and further, lighter and darker; every tenth frame a second student beside
    her (mirrored) and every eighth one nobody in view."""
    import cv2
    import numpy as np
    from skimage import data as skdata

    w, h = size
    rng = np.random.default_rng(2024)
    background = cv2.resize(cv2.cvtColor(skdata.coffee(), cv2.COLOR_RGB2BGR), (w, h))
    person = cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR)[0:400, 60:460]
    out = []
    for i in range(frames):
        frame = background.copy()
        if i % 8 != 7:
            people = 2 if i % 10 == 4 else 1
            for p in range(people):
                side = int(rng.integers(300, 460)) if people == 1 else 380
                img = cv2.resize(person if p == 0 else person[:, ::-1], (side, side))
                angle = float(rng.uniform(-12, 12))
                gain = float(rng.uniform(0.7, 1.25))
                turn = cv2.getRotationMatrix2D((side / 2, side / 2), angle, 1.0)
                img = cv2.warpAffine(img, turn, (side, side), borderMode=cv2.BORDER_REPLICATE)
                img = np.clip(img.astype(np.float32) * gain, 0, 255).astype(np.uint8)
                x = int(rng.integers(0, w - side)) if people == 1 else p * (w - side)
                y = int(rng.integers(0, h - side + 1)) if side < h else 0
                frame[y : y + side, x : x + side] = img[: h - y]
        out.append(frame)
    return out
