"""Emotion classification of detected faces: square crops, grey, model-sized, one batch.

Labels, input size and normalisation come from each model's metadata. Several classifiers with
the same labels can be averaged (an ensemble); horizontal-flip averaging is optional. Both are
off by default until a benchmark shows they pay (see bench/bench_inference.py).

A model whose metadata carries a temperature (``classpulse.temperature``, fitted on a labelled
held-out set by training/calibrate.py) has its probabilities calibrated before anything else:
``softmax(log(p) / T)``, then the ensemble averages the calibrated probabilities.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import cv2
import numpy as np

from classpulse.modelmeta import Calibration, ModelContract
from classpulse.settings import DEFAULT_UNCERTAIN_BELOW
from worker.runtime import OnnxModel

_TINY = np.float32(1e-30)  # log(0) guard: a float32 softmax can underflow to exactly 0


def to_probabilities(out: np.ndarray, output: str, temperature: float = 1.0) -> np.ndarray:
    """A model's raw output as probabilities, tempered: ``softmax(z / T)`` with ``z`` the logits,
    or ``log(p)`` for a model that outputs probabilities (logits up to a constant per row, which
    the softmax cancels). T = 1 leaves probabilities as they are."""
    if output == "probabilities" and temperature == 1.0:
        return out
    z = np.log(np.maximum(out, _TINY)) if output == "probabilities" else out.astype(np.float32)
    z = z / np.float32(temperature)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32, copy=False)


def temperature_of(contract: ModelContract) -> float:
    """The model's fitted temperature; 1.0 (as it is) when it is not calibrated."""
    return contract.calibration.temperature if contract.calibration is not None else 1.0


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
        calibrated: bool = True,
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
        # False: raw model outputs (``classpulse evaluate`` measures both).
        self.calibrated = calibrated
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

    @property
    def calibration(self) -> Calibration | None:
        """The calibration that describes this classifier's output as a whole: the single
        model's, when it is calibrated and applied with nothing averaged into it; else None (an
        average of calibrated models, or of mirrored faces, was not itself measured)."""
        if not self.calibrated or self.flip_average or len(self.models) != 1:
            return None
        return self.models[0].contract.calibration

    def published(self, uncertain_below: float | None = None) -> dict[str, str]:
        """What the workers publish in the model info hash (``cp:models``) for pages and the
        aggregator: ``calibration`` (JSON: calibrated or not, why, and the figures measured on
        which set) and ``uncertain_below``, the threshold in force (the setting when given,
        else the calibrated model's, else the default) with where it came from."""
        cal = self.calibration
        info: dict[str, object]
        if cal is not None:
            c = self.models[0].contract
            info = {"calibrated": True, "model": f"{c.name}@{c.version}", **cal.summary()}
        else:
            why = "the model carries no temperature"
            if len(self.models) > 1:
                why = "an average of several models was not itself calibrated"
            elif self.flip_average:
                why = "averaging with the mirrored face was not itself calibrated"
            info = {"calibrated": False, "why": why}
        if uncertain_below is not None:
            threshold, source = uncertain_below, "setting"
        elif cal is not None and cal.uncertain_below is not None:
            threshold, source = cal.uncertain_below, "calibration"
        else:
            threshold, source = DEFAULT_UNCERTAIN_BELOW, "default"
        info["threshold"] = {"uncertain_below": threshold, "source": source}
        return {
            "calibration": json.dumps(info, separators=(",", ":")),
            "uncertain_below": repr(float(threshold)),
        }

    def member_probs(self, crops: np.ndarray) -> list[np.ndarray]:
        """Each model's probabilities (N, labels), calibrated when ``calibrated``, flips averaged."""
        if len(crops) == 0:
            return [np.zeros((0, len(self.labels)), np.float32) for _ in self.models]
        batch = crops
        if self.flip_average:
            batch = np.concatenate([crops, crops[:, :, ::-1]])
        out = []
        for model in self.models:
            c = model.contract
            x = (batch.astype(np.float32) - np.float32(c.mean)) * np.float32(1.0 / c.std)
            x = x[..., None] if c.layout == "NHWC" else x[:, None]
            raw = model.predict(np.ascontiguousarray(x))[0]
            t = temperature_of(c) if self.calibrated else 1.0
            probs = to_probabilities(raw, c.output, t)
            if self.flip_average:
                probs = (probs[: len(crops)] + probs[len(crops) :]) / 2
            out.append(probs)
        return out

    def classify_crops(self, crops: np.ndarray) -> np.ndarray:
        """Probabilities (N, labels) for uint8 crops (N, H, W); all faces in one call per model;
        each model calibrated by its own temperature, then the models averaged."""
        members = self.member_probs(crops)
        total = members[0] if len(members) == 1 else sum(members[1:], members[0]) / len(members)
        return total.astype(np.float32, copy=False)
