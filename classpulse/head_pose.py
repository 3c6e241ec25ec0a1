"""Head yaw and pitch from BlazeFace's six keypoints, and whether the head faces the screen.

The contract is docs/attention.md: yaw > 0 when the nose moves towards the image's right side,
pitch > 0 when the face tilts up, both in degrees clipped to [-90, 90]. The page computes the
same numbers with ``web/static/js/lib/head_pose.js`` (a line-by-line twin, checked against
``tests/data/head_pose_fixtures.json``), so change both together and regenerate the fixtures.

Method (cheap: a few dozen float operations per face, no numpy, so the gateway and the page
can run it too):

1. Roll is removed first: every keypoint is expressed in a frame whose x axis runs along the
   eye line (right eye → left eye, i.e. image left → right for a face looking at the camera;
   where that line is steeper than 45° or points left, as the detector may place the hidden
   eye near a profile, the ear line, else the image's x axis) and whose origin is the midpoint
   of the two ear tragions, the head's vertical rotation axis.
2. Yaw. Turning the head by θ moves the nose tip, which sits a depth ``d`` in front of the ear
   axis, sideways by ``d·sin θ`` and shrinks the ear-to-ear half width ``w`` to ``w·cos θ``. So
   ``θ = atan2(nose_x, YAW_DEPTH_RATIO · half_ear_width)`` with ``YAW_DEPTH_RATIO = d / w``;
   atan2 also covers the profile, where the projected ear width goes to zero (or the ears cross,
   beyond 90°, which the clip catches).
3. Pitch. Tilting the face up moves the eyes, which sit in front of the ear axis, up relative to
   the tragions. That height, divided by the eye-to-mouth distance (a length of the face that
   turning does not foreshorten), minus its value when level, maps through an arctangent:
   ``φ = atan(PITCH_GAIN · (PITCH_LEVEL_RATIO − eye_height / eye_to_mouth))``. Heights are read
   in a frame turned by only half the eye line's angle: on a turned head the eyes lie far to the
   side of the ear midpoint, so the eye line's angle, which is noisy there (the detector places
   the hidden eye loosely; turning and tilting together slant it), would leak sideways offsets
   into heights. Halving it measured best on the bench's renders (mean pitch error within
   ±45°: full roll correction 4.2°, half 3.2°, none 3.4°, heads rolled up to ±10°).

The three constants were fitted (least mean absolute error) in ``bench/head_pose_accuracy.py``
on a photographed face mapped onto a 3D head shape, rendered at known yaw, pitch and roll and
run through the worker's own BlazeFace full-range model: what the detector's keypoints actually
do, not an idealised face. That bench prints the errors per angle band; tests/test_head_pose.py
holds a fixed sample of it to the bounds measured there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

# Nose-tip depth in front of the ear axis over half the ear-to-ear width (fitted; an adult's
# anthropometric value, ≈ 10 cm over ≈ 7.2 cm, is 1.4: the detector's tragions sit a little
# closer together than the anatomical ones).
YAW_DEPTH_RATIO = 1.68
# Pitch: eye height above the tragions per eye-to-mouth distance when the head is level
# (negative: the detector puts the tragions below the eyes), and the arctangent's gain.
PITCH_LEVEL_RATIO = -0.127
PITCH_GAIN = 1.17
# "Facing the screen": the head within these angles of the camera. A laptop's screen sits just
# below its camera, and students glance across it; beyond these angles the face is turned away.
# Their precision and recall on labelled renders: bench/head_pose_accuracy.py.
FACING_YAW_DEG = 30.0
FACING_PITCH_DEG = 25.0
LIMIT_DEG = 90.0  # every angle is clipped to ±LIMIT_DEG

Point = Sequence[float]


def head_pose(box: Sequence[float], keypoints: Sequence[Point]) -> tuple[float, float]:
    """(yaw, pitch) in degrees from a face's box (x, y, w, h) and its six keypoints (x, y) in
    frame pixels, MediaPipe's order: right eye, left eye, nose tip, mouth, right ear tragion,
    left ear tragion. Degenerate keypoints (all zero, coincident eyes) give (0, 0)."""
    (rex, rey), (lex, ley), (nx, ny), (mx, my), (rtx, rty), (ltx, lty) = (
        (float(p[0]), float(p[1])) for p in keypoints[:6]
    )
    # The eye line's direction is the frame's x axis; its perpendicular (image y points down)
    # the y axis. Without an eye line there is no face geometry to read.
    ux, uy = lex - rex, ley - rey
    if not math.hypot(ux, uy) > 0.0:
        return 0.0, 0.0
    # Near a profile the detector may put the hidden eye above, below or beyond the other: an
    # eye line steeper than 45° (or pointing left) is no roll a student's head takes, so the ear
    # line stands in for it, and failing that the image's own x axis.
    if not ux > abs(uy):
        ux, uy = (ltx - rtx, lty - rty) if ltx - rtx > abs(lty - rty) else (1.0, 0.0)
    norm = math.hypot(ux, uy)
    ux, uy = ux / norm, uy / norm
    ox, oy = (rtx + ltx) / 2.0, (rty + lty) / 2.0  # the ear midpoint: the origin
    # Pitch reads heights in a frame turned by half the eye line's angle (its bisector with the
    # image's x axis): see the module's docstring.
    hx, hy = 1.0 + ux, uy
    half = math.hypot(hx, hy)
    hx, hy = (hx / half, hy / half) if half > 0.0 else (1.0, 0.0)

    def along(px: float, py: float) -> float:  # x in the eye line's frame
        return (px - ox) * ux + (py - oy) * uy

    def height(px: float, py: float) -> float:  # y in the half-turned frame (down: positive)
        return (py - oy) * hx - (px - ox) * hy

    nose_x = along(nx, ny)
    half_ears = (along(ltx, lty) - along(rtx, rty)) / 2.0
    eye_y = height((rex + lex) / 2.0, (rey + ley) / 2.0)
    mouth_y = height(mx, my)
    yaw = math.degrees(math.atan2(nose_x, YAW_DEPTH_RATIO * half_ears))
    # The eye-to-mouth distance, never below a tenth of the box's height (a collapsed face).
    face = max(mouth_y - eye_y, 0.1 * float(box[3]), 1e-6)
    pitch = math.degrees(math.atan(PITCH_GAIN * (PITCH_LEVEL_RATIO - eye_y / face)))
    return _clip(yaw), _clip(pitch)


def facing(yaw: float, pitch: float) -> bool:
    """True when the head faces the screen: |yaw| and |pitch| within the thresholds."""
    return abs(yaw) <= FACING_YAW_DEG and abs(pitch) <= FACING_PITCH_DEG


def _clip(angle: float) -> float:
    return max(-LIMIT_DEG, min(LIMIT_DEG, angle))
