"""Head yaw/pitch from BlazeFace's keypoints (classpulse/head_pose.py, docs/attention.md): its
sign conventions and invariances on an anthropometric face, its accuracy on renders of a real
face through the worker's detector (a fixed sample of bench/head_pose_accuracy.py's, held to the
bounds measured there), and the fixtures the page's twin (web/static/js/lib/head_pose.js) is
tested against in node (web/tests/head_pose.test.js).

After changing head_pose.py (and its twin), rewrite the fixtures:
``.venv/bin/python bench/head_pose_accuracy.py --write-fixtures``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from classpulse import head_pose as hp

FIXTURES = Path(__file__).parent / "data" / "head_pose_fixtures.json"
DOC = json.loads(FIXTURES.read_text(encoding="utf-8"))
RENDERS = [c for c in DOC["cases"] if "true_yaw" in c]

# An adult head's six keypoints in cm (x right, y down, z towards the camera; origin between the
# tragions), in MediaPipe's order: right eye, left eye, nose tip, mouth, right and left tragion.
FACE_CM = np.array(
    [[-3.2, -2.0, 8.0], [3.2, -2.0, 8.0], [0, 2.0, 10.5], [0, 5.0, 9.0], [-7.2, 0, 0], [7.2, 0, 0]]
)


def project(yaw: float, pitch: float, roll: float = 0.0, scale=10.0, at=(320.0, 240.0)):
    """The model face turned (pitch, then yaw, then roll in the image), projected with a camera
    60 cm away; (box, keypoints) in pixels."""
    a, b, r = (math.radians(v) for v in (yaw, pitch, roll))
    x, y, z = FACE_CM.T
    y, z = y * math.cos(b) - z * math.sin(b), y * math.sin(b) + z * math.cos(b)
    x, z = x * math.cos(a) + z * math.sin(a), -x * math.sin(a) + z * math.cos(a)
    x, y = x * 60 / (60 - z), y * 60 / (60 - z)
    x, y = x * math.cos(r) - y * math.sin(r), x * math.sin(r) + y * math.cos(r)
    points = np.stack([at[0] + scale * x, at[1] + scale * y], 1)
    lo, hi = points.min(0) - 10, points.max(0) + 10
    return (*lo, *(hi - lo)), points.tolist()


def test_signs_follow_the_contract():
    """yaw > 0 when the nose moves to the image's right, pitch > 0 when the face tilts up."""
    assert hp.head_pose(*project(30, 0))[0] > 15
    assert hp.head_pose(*project(-30, 0))[0] < -15
    assert hp.head_pose(*project(0, 20))[1] > 10
    assert hp.head_pose(*project(0, -20))[1] < -10
    for yaw, pitch in ((0, 0), (10, -5), (-25, 15)):  # monotone in each angle
        y0, p0 = hp.head_pose(*project(yaw, pitch))
        assert hp.head_pose(*project(yaw + 5, pitch))[0] > y0
        assert hp.head_pose(*project(yaw, pitch + 5))[1] > p0


def test_position_size_and_roll():
    """Position and size never matter; roll does not change yaw, nor pitch of a face turned to
    the camera. Pitch corrects only half the roll (head_pose's docstring says why): on a turned
    head a roll moves it a little, 2.5° for 10° at a yaw of 20°."""
    base = hp.head_pose(*project(20, -10))
    for scale, at in ((4, (50, 60)), (30, (900, 700))):
        assert hp.head_pose(*project(20, -10, 0, scale, at)) == pytest.approx(base, abs=1e-6)
    for roll in (-25, -10, 10, 25):
        assert hp.head_pose(*project(20, -10, roll))[0] == pytest.approx(base[0], abs=1e-6)
        assert hp.head_pose(*project(0, 15, roll)) == pytest.approx(hp.head_pose(*project(0, 15)))
    for roll in (-10, 10):
        assert abs(hp.head_pose(*project(20, -10, roll))[1] - base[1]) < 3.0


def test_limits_and_degenerate_keypoints():
    assert hp.head_pose((0, 0, 10, 10), [(0, 0)] * 6) == (0.0, 0.0)  # no eye line
    for yaw in (-89, 89, 120, -150):  # a profile or beyond: ears crossed, still within ±90
        y, p = hp.head_pose(*project(yaw, 0))
        assert -90 <= y <= 90 and -90 <= p <= 90 and math.copysign(1, y) == math.copysign(1, yaw)
    assert hp.facing(0, 0) and hp.facing(hp.FACING_YAW_DEG, -hp.FACING_PITCH_DEG)
    assert not hp.facing(hp.FACING_YAW_DEG + 0.1, 0) and not hp.facing(0, -hp.FACING_PITCH_DEG - 1)


def test_the_fixtures_are_what_head_pose_computes():
    """The page's twin is tested against these numbers: they must be this module's."""
    for name, value in DOC["constants"].items():
        assert getattr(hp, name) == value, name
    assert len(DOC["cases"]) > 100
    for case in DOC["cases"]:
        yaw, pitch = hp.head_pose(case["box"], case["keypoints"])
        assert (yaw, pitch) == pytest.approx((case["yaw"], case["pitch"]), abs=1e-9), case
        assert hp.facing(yaw, pitch) is case["facing"]


def _errors(max_angle: float) -> np.ndarray:
    rows = [
        r for r in RENDERS if abs(r["true_yaw"]) <= max_angle and abs(r["true_pitch"]) <= max_angle
    ]
    est = np.array([hp.head_pose(r["box"], r["keypoints"]) for r in rows])
    return np.abs(est - np.array([(r["true_yaw"], r["true_pitch"]) for r in rows]))


def test_accuracy_on_rendered_faces_through_the_detector():
    """Measured on this sample (bench/head_pose_accuracy.py has the full set): within ±45° of
    the camera, yaw mean 3.0° (p95 8.2°), pitch mean 3.9° (p95 9.9°); within ±20°, median
    1.4° and 2.6°. A little slack only."""
    errors = _errors(45)
    assert len(errors) >= 80
    mean, p95 = errors.mean(0), np.percentile(errors, 95, axis=0)
    assert mean[0] <= 3.5 and p95[0] <= 9.0, (mean, p95)
    assert mean[1] <= 4.5 and p95[1] <= 11.0, (mean, p95)
    assert np.median(_errors(20), axis=0).max() <= 3.0


def test_facing_precision_and_recall_on_labelled_renders():
    """Labelled facing when the true angles are within the thresholds; measured on this sample:
    precision 0.84, recall 0.82; more than 10° from a threshold, recall 1.0 and precision 0.79
    (the misses there: heads turned 50–70° and tilted 45° down, read as nearly frontal)."""
    label = np.array(
        [
            abs(r["true_yaw"]) <= hp.FACING_YAW_DEG and abs(r["true_pitch"]) <= hp.FACING_PITCH_DEG
            for r in RENDERS
        ]
    )
    pred = np.array([hp.facing(*hp.head_pose(r["box"], r["keypoints"])) for r in RENDERS])
    tp = int((label & pred).sum())
    assert label.sum() >= 30 and (~label).sum() >= 30
    assert tp / pred.sum() >= 0.8 and tp / label.sum() >= 0.8
    far = np.array(
        [
            abs(abs(r["true_yaw"]) - hp.FACING_YAW_DEG) > 10
            and abs(abs(r["true_pitch"]) - hp.FACING_PITCH_DEG) > 10
            for r in RENDERS
        ]
    )
    assert (label & far <= pred).all()  # far inside the thresholds: always facing
    assert (pred & far & ~label).sum() <= 3
