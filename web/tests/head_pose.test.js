// lib/head_pose.js against the fixtures classpulse/head_pose.py wrote
// (tests/data/head_pose_fixtures.json, by bench/head_pose_accuracy.py --write-fixtures): the
// page and the worker read the same angles from the same keypoints, to 0.01°.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { encodeFaces } from "../static/js/edge/wire.js";
import {
  FACING_PITCH_DEG,
  FACING_YAW_DEG,
  facing,
  headPose,
  LIMIT_DEG,
  PITCH_GAIN,
  PITCH_LEVEL_RATIO,
  YAW_DEPTH_RATIO,
} from "../static/js/lib/head_pose.js";

const fixtures = JSON.parse(readFileSync(new URL("../../tests/data/head_pose_fixtures.json", import.meta.url), "utf8"));

test("the constants are the Python module's", () => {
  const here = {
    YAW_DEPTH_RATIO,
    PITCH_LEVEL_RATIO,
    PITCH_GAIN,
    FACING_YAW_DEG,
    FACING_PITCH_DEG,
    LIMIT_DEG,
  };
  assert.deepEqual(here, fixtures.constants);
});

test("headPose and facing equal classpulse/head_pose.py on every fixture, to 0.01°", () => {
  assert.ok(fixtures.cases.length > 100);
  let worst = 0;
  for (const c of fixtures.cases) {
    const [yaw, pitch] = headPose(c.box, c.keypoints);
    worst = Math.max(worst, Math.abs(yaw - c.yaw), Math.abs(pitch - c.pitch));
    assert.equal(facing(yaw, pitch), c.facing, JSON.stringify(c));
  }
  assert.ok(worst <= 0.01, `largest difference ${worst}°`);
});

test("encodeFaces writes version 2 with each face's yaw and pitch after its keypoints", () => {
  const c = fixtures.cases[0];
  const face = { box: c.box, score: 0.75, keypoints: c.keypoints };
  const view = new DataView(encodeFaces(640, 480, [face, face], null, 64, 3, 0, null));
  assert.equal(view.byteLength, 24 + 2 * 76);
  assert.equal(view.getUint8(4), 2, "version");
  const second = 24 + 76;
  assert.equal(view.getFloat32(second + 20, true), Math.fround(c.keypoints[0][0]));
  assert.ok(Math.abs(view.getFloat32(second + 68, true) - c.yaw) <= 0.01, "yaw");
  assert.ok(Math.abs(view.getFloat32(second + 72, true) - c.pitch) <= 0.01, "pitch");
});
