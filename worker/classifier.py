"""Emotion classification of detected faces: square crops, grey, model-sized, one batch.

Labels, input size and normalisation come from each model's metadata. Several classifiers with
the same labels can be averaged (an ensemble); horizontal-flip averaging is optional. Both are
off by default until a benchmark shows they pay (see bench/bench_inference.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from worker.runtime import OnnxModel


def square_crop_box(
    box: Sequence[float], frame_w: int, frame_h: int, scale: float
) -> tuple[int, int, int, int]:
    """A square around the box's centre, ``scale`` × its longer side, clipped to the frame."""
    x, y, w, h = box
    side = max(w, h) * scale
    cx, cy = x + w / 2, y + h / 2
    # floor(v + 0.5), not round(): banker's rounding would make crops one pixel off-square.
    x1 = math.floor(max(0.0, cx - side / 2) + 0.5)
    y1 = math.floor(max(0.0, cy - side / 2) + 0.5)
    x2 = math.floor(min(float(frame_w), cx + side / 2) + 0.5)
    y2 = math.floor(min(float(frame_h), cy + side / 2) + 0.5)
    return x1, y1, max(x1 + 1, x2), max(y1 + 1, y2)


class EmotionClassifier:
    """Classifies faces given grey frames and boxes; returns probabilities in ``labels`` order."""

    def __init__(
        self,
        models: Sequence[OnnxModel],
        *,
        crop_scale: float = 1.1,
        flip_average: bool = False,
    ) -> None:
        if not models:
            raise ValueError("at least one emotion model is needed")
        first = models[0].contract
        for m in models:
            c = m.contract
            if c.kind != "emotion_classifier":
                raise ValueError(f"{m.path.name} is a {c.kind}, not an emotion classifier")
            if c.labels != first.labels:
                raise ValueError(f"{m.path.name}: labels {c.labels} differ from {first.labels}")
            if c.colour != "grey" or (c.input_height, c.input_width) != (
                first.input_height,
                first.input_width,
            ):
                raise ValueError(f"{m.path.name}: ensemble members need the same grey input")
        self.models = list(models)
        self.labels: tuple[str, ...] = first.labels
        self.size = (first.input_width, first.input_height)
        self.crop_scale = crop_scale
        self.flip_average = flip_average
        self.version = "+".join(f"{m.contract.name}@{m.contract.version}" for m in self.models)

    def crops(self, frame: np.ndarray, boxes: Sequence[Sequence[float]]) -> np.ndarray:
        """uint8 grey crops (N, H, W) at the model's input size from a BGR or grey frame.

        Grey, then bilinear resize, as fer's pipeline did; a BGR frame is converted crop by
        crop, which is cheaper than converting the whole frame for a face or two.
        """
        h, w = frame.shape[:2]
        out = np.empty((len(boxes), self.size[1], self.size[0]), np.uint8)
        for i, box in enumerate(boxes):
            x1, y1, x2, y2 = square_crop_box(box, w, h, self.crop_scale)
            region = frame[y1:y2, x1:x2]
            if region.ndim == 3:
                region = cv2.cvtColor(region, cv2.COLOR_BGR2GRAY)
            out[i] = cv2.resize(region, self.size, interpolation=cv2.INTER_LINEAR)
        return out

    def classify_crops(self, crops: np.ndarray) -> np.ndarray:
        """Probabilities (N, labels) for uint8 crops (N, H, W); all faces in one call per model."""
        if len(crops) == 0:
            return np.zeros((0, len(self.labels)), np.float32)
        batch = crops
        if self.flip_average:
            batch = np.concatenate([crops, crops[:, :, ::-1]])
        total = None
        for model in self.models:
            c = model.contract
            x = (batch.astype(np.float32) - np.float32(c.mean)) * np.float32(1.0 / c.std)
            x = x[..., None] if c.layout == "NHWC" else x[:, None]
            probs = model.predict(np.ascontiguousarray(x))[0]
            total = probs if total is None else total + probs
        assert total is not None
        total = total / len(self.models)
        if self.flip_average:
            total = (total[: len(crops)] + total[len(crops) :]) / 2
        return total.astype(np.float32, copy=False)
