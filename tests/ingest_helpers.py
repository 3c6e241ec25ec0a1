"""Helpers shared by test modules, moved out of tests/test_ingest.py: no test module
imports another (tests/test_layering.py)."""

from __future__ import annotations

import cv2
import numpy as np

from app import ingest
from classpulse import edge_wire

BOX = (100.0, 40.0, 60.0, 60.0)
KEYPOINTS = [(120, 60), (150, 60), (135, 75), (135, 90), (105, 65), (165, 65)]
FACE = (BOX, 0.9, KEYPOINTS)


def jpeg(w: int, h: int, noise: bool = False, quality: int = 70) -> bytes:
    """A camera-like picture (a smooth gradient with a face-sized blob), or uniform noise."""
    if noise:
        img = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    else:
        y, x = np.mgrid[0:h, 0:w]
        img = np.dstack([(x * 255 // w), (y * 255 // h), np.full((h, w), 120)]).astype(np.uint8)
        cv2.circle(img, (w // 2, h // 2), h // 4, (40, 90, 200), -1)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


def faces(n: int = 1, crops: bool = True, size: int = 64) -> bytes:
    data = bytes(size * size * n) if crops else None
    return edge_wire.encode(320, 240, [FACE] * n, crops=data, crop_size=size)


CAMERA = jpeg(320, 240)
PRESENCE = jpeg(ingest.PRESENCE_WIDTH, ingest.PRESENCE_HEIGHT)


def mutations(seed: int, n: int) -> list[bytes]:
    """Random damage to real JPEGs and faces messages: bit flips, cuts, insertions, splices."""
    rng = np.random.default_rng(seed)
    bases = [CAMERA, PRESENCE, jpeg(320, 240, noise=True), faces(), faces(2, crops=False)]
    out = []
    for _ in range(n):
        data = bytearray(bases[int(rng.integers(len(bases)))])
        for _ in range(int(rng.integers(1, 4))):
            op, i = int(rng.integers(4)), int(rng.integers(len(data)))
            if op == 0:
                data[i] ^= 1 << int(rng.integers(8))
            elif op == 1:
                del data[i:]
            elif op == 2:
                data[i:i] = rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
            else:
                data[i : i + 4] = b"\xff" + bytes([int(rng.integers(256))]) + b"\x00\x04"
            if not data:
                break
        out.append(bytes(data))
    return out
