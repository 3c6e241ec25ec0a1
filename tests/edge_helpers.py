"""Helpers for edge capture (no tests here): the faces message a student page would send for a
frame, built with the worker's own detector and crop code, so that a faces message and the JPEG
of the same frame must give the same results. Shared by tests/test_edge_capture.py and the load
suite's simulated students (bench/load_suite.py --capture edge)."""

from __future__ import annotations

import time

from classpulse import edge_wire
from worker.pipeline import FramePipeline, decode_jpeg


def faces_message(
    pipeline: FramePipeline, jpeg: bytes, *, crops: bool = True, detector_ms: float = 8.0
) -> bytes:
    """The faces message for the frame this JPEG decodes to: the worker's detections (boxes,
    scores, keypoints) and, with ``crops``, the classifier's crops of them."""
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
    )


def now_ms() -> float:
    return time.time() * 1000
