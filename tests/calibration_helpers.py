"""Helpers shared by test modules, moved out of tests/test_calibration.py: no test module
imports another (tests/test_layering.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.calibrate import (
    softmax_t,
)

REPO = Path(__file__).resolve().parents[1]
MINI = REPO / "models" / "emotion_mini_xception.onnx"


def overconfident(n: int, t_true: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose labels are drawn from softmax(z / t_true): a model t_true× overconfident."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 3, (n, 7))
    p = softmax_t(z, t_true)
    y = np.array([rng.choice(7, p=row) for row in p])
    return z, y
