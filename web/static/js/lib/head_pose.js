/* Head yaw and pitch from BlazeFace's six keypoints, and "facing the screen" (docs/attention.md).
 *
 * The twin of classpulse/head_pose.py, line by line: the method and where its constants come
 * from are described there. web/tests/head_pose.test.js checks this file against fixtures the
 * Python module wrote (tests/data/head_pose_fixtures.json) to 0.01°; change both together and
 * regenerate the fixtures (tests/test_head_pose.py says how). */

// The constants of classpulse/head_pose.py (the fixtures carry them: the test checks they match).
export const YAW_DEPTH_RATIO = 1.68;
export const PITCH_LEVEL_RATIO = -0.127;
export const PITCH_GAIN = 1.17;
export const FACING_YAW_DEG = 30.0;
export const FACING_PITCH_DEG = 25.0;
export const LIMIT_DEG = 90.0;

const DEG = 180 / Math.PI;
const clip = (a) => Math.max(-LIMIT_DEG, Math.min(LIMIT_DEG, a));

/** [yaw, pitch] in degrees from a face's box [x, y, w, h] and its six keypoints [x, y] in frame
 * pixels (right eye, left eye, nose tip, mouth, right ear tragion, left ear tragion). */
export function headPose(box, keypoints) {
  const [[rex, rey], [lex, ley], [nx, ny], [mx, my], [rtx, rty], [ltx, lty]] = keypoints;
  // The eye line is the x axis (roll removed), the ear midpoint the origin.
  let ux = lex - rex;
  let uy = ley - rey;
  if (!(Math.hypot(ux, uy) > 0)) return [0, 0];
  // An eye line steeper than 45° (or pointing left): the ear line, else the image's x axis.
  if (!(ux > Math.abs(uy))) {
    const ears = ltx - rtx > Math.abs(lty - rty);
    ux = ears ? ltx - rtx : 1;
    uy = ears ? lty - rty : 0;
  }
  const norm = Math.hypot(ux, uy);
  ux /= norm;
  uy /= norm;
  const ox = (rtx + ltx) / 2;
  const oy = (rty + lty) / 2;
  // Pitch reads heights in a frame turned by half the eye line's angle (its bisector with x).
  let hx = 1 + ux;
  let hy = uy;
  const half = Math.hypot(hx, hy);
  if (half > 0) {
    hx /= half;
    hy /= half;
  } else {
    hx = 1;
    hy = 0;
  }
  const along = (px, py) => (px - ox) * ux + (py - oy) * uy;
  const height = (px, py) => (py - oy) * hx - (px - ox) * hy;
  const noseX = along(nx, ny);
  const halfEars = (along(ltx, lty) - along(rtx, rty)) / 2;
  const eyeY = height((rex + lex) / 2, (rey + ley) / 2);
  const mouthY = height(mx, my);
  const yaw = Math.atan2(noseX, YAW_DEPTH_RATIO * halfEars) * DEG;
  const face = Math.max(mouthY - eyeY, 0.1 * box[3], 1e-6);
  const pitch = Math.atan(PITCH_GAIN * (PITCH_LEVEL_RATIO - eyeY / face)) * DEG;
  return [clip(yaw), clip(pitch)];
}

/** True when the head faces the screen: |yaw| and |pitch| within the thresholds. */
export function facing(yaw, pitch) {
  return Math.abs(yaw) <= FACING_YAW_DEG && Math.abs(pitch) <= FACING_PITCH_DEG;
}
