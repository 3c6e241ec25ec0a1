"""How well classpulse/head_pose.py reads head yaw and pitch, and "facing the screen", from the
keypoints of the worker's own BlazeFace detector (docs/attention.md).

Ground truth: a real photograph of a face (scikit-image's astronaut, public domain) mapped onto
a 3D head shape and rendered at known yaw, pitch and roll, then run through the worker's
detector (models/face_detection_full_range.onnx, worker/detector.py). The head shape is an
ellipsoid (7.8 cm half width, 11.5 cm half height, 9.6 cm deep, centred on the ear axis) with a
nose and nose bridge added, scaled from the photo's own keypoints (6.4 cm between the eyes); the
photo is projected onto it from the front, rotated about the ear axis (pitch, then yaw), viewed
from 60 cm with perspective, splatted with a depth order and its holes inpainted, then turned in
the image plane (roll), on a plain grey background. What this means: the detector and the
geometry are real, the head is one face on an idealised shape (no neck, shoulders or hair
volume; the sides of the head are the photo stretched), so the numbers are for one person in
clean conditions — real classrooms (other faces, lighting, glasses, occluding hands) do worse.
(A MediaPipe face mesh would give a truer shape, but its model is not in any package installed
here: the ``mediapipe`` wheel ships no face-landmark weights.)

Usage:
  python bench/head_pose_accuracy.py              # errors per angle band, facing precision/recall
  python bench/head_pose_accuracy.py --fit        # refit head_pose's three constants
  python bench/head_pose_accuracy.py --write-fixtures   # tests/data/head_pose_fixtures.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from classpulse import head_pose as hp  # noqa: E402
from worker.detector import FaceDetector  # noqa: E402
from worker.runtime import OnnxModel  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "data" / "head_pose_fixtures.json"
EYES_CM = 6.4  # an adult's distance between the pupils
HEAD_CM = (7.8, 11.5, 9.6, -1.0)  # ellipsoid half width, half height, depth, centre y
CAMERA_CM = 60.0
SUPERSAMPLE = 3
BACKGROUND = 110
W, H = 640, 480
YAW_BANDS = ((0, 15), (15, 30), (30, 45), (45, 60), (60, 75))
PITCH_BANDS = ((0, 15), (15, 30), (30, 45))


class Head:
    """The photographed face on a 3D head: points (X, Y, Z) in cm (x right, y down, z towards
    the camera; origin between the ear tragions) and their colours."""

    def __init__(self, detector: FaceDetector) -> None:
        from skimage import data as skdata

        photo = cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR)
        kp = detector.detect(photo)[0].keypoints.astype(np.float64)
        self.px_per_cm = float(np.linalg.norm(kp[1] - kp[0])) / EYES_CM
        s, origin = self.px_per_cm, (kp[4] + kp[5]) / 2
        a, b, depth, yc = HEAD_CM
        x0, x1 = int(origin[0] - a * s), int(origin[0] + a * s) + 1
        y0, y1 = int(origin[1] + (yc - b) * s), int(origin[1] + (yc + b) * s) + 1
        tex = cv2.resize(photo[y0:y1, x0:x1], None, fx=SUPERSAMPLE, fy=SUPERSAMPLE)
        v, u = np.mgrid[0 : tex.shape[0], 0 : tex.shape[1]]
        x = ((u + 0.5) / SUPERSAMPLE + x0 - origin[0]) / s
        y = ((v + 0.5) / SUPERSAMPLE + y0 - origin[1]) / s
        q = (x / a) ** 2 + ((y - yc) / b) ** 2
        z = depth * np.sqrt(np.clip(1 - q, 0, None))
        nx, ny = (kp[2] - origin) / s
        # The nose: a 2 cm bump at the tip and a ridge up to the bridge.
        z += 2.0 * np.exp(-(((x - nx) / 1.0) ** 2) / 2 - ((y - ny) / 1.2) ** 2 / 2)
        z += np.exp(-(((x - nx) / 0.7) ** 2) / 2) * ((y < ny) & (y > ny - 4.5))
        inside = q < 1
        self.xyz = np.stack([x[inside], y[inside], z[inside]])
        self.colour = tex[inside]

    def render(self, yaw: float, pitch: float, roll: float, zoom: float, shift=(0, 0)):
        a, b = math.radians(yaw), math.radians(pitch)
        x, y, z = self.xyz
        y1, z1 = y * math.cos(b) - z * math.sin(b), y * math.sin(b) + z * math.cos(b)
        x2, z2 = x * math.cos(a) + z1 * math.sin(a), -x * math.sin(a) + z1 * math.cos(a)
        f = zoom * self.px_per_cm * CAMERA_CM
        px = W / 2 + shift[0] + f * x2 / (CAMERA_CM - z2)
        py = H / 2 + shift[1] + f * y1 / (CAMERA_CM - z2)
        order = np.argsort(z2)  # far first: the nearest point is written last
        xi = np.clip(px[order].astype(int), 0, W - 2)
        yi = np.clip(py[order].astype(int), 0, H - 2)
        out = np.full((H, W, 3), BACKGROUND, np.uint8)
        mask = np.zeros((H, W), np.uint8)
        for dy in (0, 1):
            for dx in (0, 1):
                out[yi + dy, xi + dx] = self.colour[order]
                mask[yi + dy, xi + dx] = 255
        closed = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
        out = cv2.inpaint(out, cv2.subtract(closed, mask), 2, cv2.INPAINT_TELEA)
        turn = cv2.getRotationMatrix2D((W / 2, H / 2), roll, 1.0)
        return cv2.warpAffine(out, turn, (W, H), borderValue=(BACKGROUND,) * 3)


def dataset(step: int = 5, seed: int = 1) -> list[dict]:
    """One render per (yaw, pitch) on a grid, random roll (±10°), size and position; the
    detector's best face in each (None where it found none)."""
    detector = FaceDetector(
        OnnxModel(ROOT / "models" / "face_detection_full_range.onnx", providers=["cpu"])
    )
    head = Head(detector)
    rng = np.random.default_rng(seed)
    rows = []
    for yaw in range(-75, 76, step):
        for pitch in range(-45, 46, step):
            roll, zoom = float(rng.uniform(-10, 10)), float(rng.uniform(1.0, 2.5))
            shift = (float(rng.uniform(-60, 60)), float(rng.uniform(-30, 30)))
            found = detector.detect(head.render(yaw, pitch, roll, zoom, shift))
            best = max(found, key=lambda d: d.score) if found else None
            rows.append(
                {
                    "true_yaw": yaw,
                    "true_pitch": pitch,
                    "box": [round(float(v), 3) for v in best.box] if best else None,
                    "keypoints": best.keypoints.round(3).tolist() if best else None,
                }
            )
    return rows


def stats(errors: np.ndarray) -> str:
    if len(errors) == 0:
        return "n=0"
    e = np.abs(errors)
    return (
        f"n={len(e):3d} mean {e.mean():5.2f}°  median {np.median(e):5.2f}°  "
        f"p95 {np.percentile(e, 95):5.2f}°"
    )


def report(rows: list[dict]) -> dict[str, float]:
    seen = [r for r in rows if r["box"] is not None]
    t = np.array([(r["true_yaw"], r["true_pitch"]) for r in seen], float)
    est = np.array([hp.head_pose(r["box"], r["keypoints"]) for r in seen])
    print(f"{len(seen)}/{len(rows)} renders had a face detected")
    print("yaw error by |true yaw| (renders with |pitch| ≤ 30°):")
    for lo, hi in YAW_BANDS:
        m = (abs(t[:, 0]) >= lo) & (abs(t[:, 0]) <= hi) & (abs(t[:, 1]) <= 30)
        total = sum(
            1 for r in rows if lo <= abs(r["true_yaw"]) <= hi and abs(r["true_pitch"]) <= 30
        )
        print(f"  {lo:2d}–{hi:2d}°: {stats(est[m, 0] - t[m, 0])}  (detected {m.sum()}/{total})")
    print("pitch error by |true pitch| (renders with |yaw| ≤ 45°):")
    for lo, hi in PITCH_BANDS:
        m = (abs(t[:, 1]) >= lo) & (abs(t[:, 1]) <= hi) & (abs(t[:, 0]) <= 45)
        print(f"  {lo:2d}–{hi:2d}°: {stats(est[m, 1] - t[m, 1])}")
    core = (abs(t[:, 0]) <= 45) & (abs(t[:, 1]) <= 45)
    print(f"within ±45° both: yaw {stats(est[core, 0] - t[core, 0])}")
    print(f"                  pitch {stats(est[core, 1] - t[core, 1])}")
    figures = facing_report(rows, est, t)
    figures["yaw_mean_45"] = float(np.abs(est[core, 0] - t[core, 0]).mean())
    figures["pitch_mean_45"] = float(np.abs(est[core, 1] - t[core, 1]).mean())
    return figures


def facing_report(rows: list[dict], est: np.ndarray, t: np.ndarray) -> dict[str, float]:
    """Precision and recall of facing() on the labelled renders: a render is labelled facing
    when its true angles are within the thresholds. Renders without a detected face count as
    "not facing" predictions (the worker observes nothing there)."""
    label = (abs(t[:, 0]) <= hp.FACING_YAW_DEG) & (abs(t[:, 1]) <= hp.FACING_PITCH_DEG)
    pred = np.array([hp.facing(y, p) for y, p in est])
    missed_facing = sum(
        1
        for r in rows
        if r["box"] is None
        and abs(r["true_yaw"]) <= hp.FACING_YAW_DEG
        and abs(r["true_pitch"]) <= hp.FACING_PITCH_DEG
    )
    tp = int((pred & label).sum())
    precision = tp / max(1, int(pred.sum()))
    recall = tp / max(1, int(label.sum()) + missed_facing)
    # The same away from the boundary (true angles more than 5° from a threshold).
    far = (abs(abs(t[:, 0]) - hp.FACING_YAW_DEG) > 5) & (
        abs(abs(t[:, 1]) - hp.FACING_PITCH_DEG) > 5
    )
    tp_far = int((pred & label & far).sum())
    far_precision = tp_far / max(1, int((pred & far).sum()))
    print(
        f'"facing the screen" (|yaw| ≤ {hp.FACING_YAW_DEG:g}°, |pitch| ≤ {hp.FACING_PITCH_DEG:g}°) '
        f"on {len(rows)} labelled renders: precision {precision:.3f}, recall {recall:.3f} "
        f"({missed_facing} facing renders without a detected face)"
    )
    print(
        f"  more than 5° from a threshold: precision {far_precision:.3f}, "
        f"recall {tp_far / max(1, int((label & far).sum())):.3f}"
    )
    return {"precision": precision, "recall": recall}


def fit(rows: list[dict]) -> None:
    """Least mean absolute error fit of head_pose's three constants (|yaw| ≤ 60°, |pitch| ≤ 45°)."""
    from scipy.optimize import minimize

    seen = [r for r in rows if r["box"] is not None and abs(r["true_yaw"]) <= 60]
    t = np.array([(r["true_yaw"], r["true_pitch"]) for r in seen], float)
    saved = hp.YAW_DEPTH_RATIO, hp.PITCH_LEVEL_RATIO, hp.PITCH_GAIN

    def loss(k: np.ndarray, column: int) -> float:
        hp.YAW_DEPTH_RATIO, hp.PITCH_LEVEL_RATIO, hp.PITCH_GAIN = k
        est = np.array([hp.head_pose(r["box"], r["keypoints"]) for r in seen])
        return float(np.abs(est[:, column] - t[:, column]).mean())

    yaw = minimize(
        lambda k: loss(np.array([k[0], *saved[1:]]), 0), [saved[0]], method="Nelder-Mead"
    )
    pitch = minimize(
        lambda k: loss(np.array([saved[0], *k]), 1), list(saved[1:]), method="Nelder-Mead"
    )
    hp.YAW_DEPTH_RATIO, hp.PITCH_LEVEL_RATIO, hp.PITCH_GAIN = saved
    print(f"YAW_DEPTH_RATIO = {yaw.x[0]:.3f} (mean |error| {yaw.fun:.2f}°)")
    print(f"PITCH_LEVEL_RATIO = {pitch.x[0]:.3f}, PITCH_GAIN = {pitch.x[1]:.3f} ({pitch.fun:.2f}°)")


EDGE_CASES = [  # not faces the detector gives: the twins must agree on them too
    {"box": [0, 0, 10, 10], "keypoints": [[0, 0]] * 6},  # all zero: (0, 0)
    {
        "box": [0, 0, 50, 50],
        "keypoints": [[20, 20], [20, 20], [25, 30], [25, 40], [5, 25], [45, 25]],
    },
    {
        "box": [0, 0, 50, 50],
        "keypoints": [[10, 20], [30, 20], [48, 30], [25, 40], [40, 25], [20, 25]],
    },
    {
        "box": [0, 0, 50, 50],
        "keypoints": [[10, 20], [30, 20], [20, 5], [20, 20], [0, 25], [40, 25]],
    },
    {
        "box": [5, 5, 40, 40],
        "keypoints": [[30, 10], [10, 12], [20, 20], [20, 30], [38, 14], [2, 12]],
    },
]


def write_fixtures(rows: list[dict], every: int = 3) -> None:
    """A fixed sample of the detected renders (every ``every``-th, |yaw| ≤ 75°) with their true
    and computed angles, and the edge cases: the Python and the page's tests read it."""
    seen = [r for r in rows if r["box"] is not None][::every]
    cases = []
    for r in seen + EDGE_CASES:
        yaw, pitch = hp.head_pose(r["box"], r["keypoints"])
        cases.append({**r, "yaw": yaw, "pitch": pitch, "facing": hp.facing(yaw, pitch)})
    constants = {
        name: getattr(hp, name)
        for name in (
            "YAW_DEPTH_RATIO",
            "PITCH_LEVEL_RATIO",
            "PITCH_GAIN",
            "FACING_YAW_DEG",
            "FACING_PITCH_DEG",
            "LIMIT_DEG",
        )
    }
    doc = {
        "about": "written by bench/head_pose_accuracy.py --write-fixtures: renders of a real "
        "face at known angles through the worker's BlazeFace, and edge cases; yaw/pitch as "
        "classpulse/head_pose.py computes them",
        "constants": constants,
        "cases": cases,
    }
    FIXTURES.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {len(cases)} cases to {FIXTURES.relative_to(ROOT)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--step", type=int, default=5, help="grid step in degrees (default 5)")
    ap.add_argument("--fit", action="store_true", help="refit head_pose's constants")
    ap.add_argument("--write-fixtures", action="store_true", help="rewrite the test fixtures")
    args = ap.parse_args()
    t0 = time.perf_counter()
    rows = dataset(args.step)
    print(f"rendered and detected {len(rows)} frames in {time.perf_counter() - t0:.1f} s")
    report(rows)
    if args.fit:
        fit(rows)
    if args.write_fixtures:
        write_fixtures(rows)


if __name__ == "__main__":
    main()
