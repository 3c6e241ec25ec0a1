// The student page's config: defaults, and the server's config message checked value by value
// (web/static/js/student/config.js).
import assert from "node:assert/strict";
import { test } from "node:test";
import { DEFAULT_CONFIG, nextConfig } from "../static/js/student/config.js";

test("a server from before edge capture: JPEG frames, frames allowed, defaults kept", () => {
  const c = nextConfig(DEFAULT_CONFIG, { fps: 3 });
  assert.equal(c.fps, 3);
  assert.equal(c.capture, "frames");
  assert.equal(c.frames_allowed, true);
  assert.equal(c.width, 320);
  assert.equal(c.detector_score_threshold, null);
});

test("edge capture asked for, and required", () => {
  const c = nextConfig(DEFAULT_CONFIG, { capture: "edge", frames_allowed: false, detector_url: "/models/x.onnx" });
  assert.equal(c.capture, "edge");
  assert.equal(c.frames_allowed, false);
  assert.equal(c.detector_url, "/models/x.onnx");
  const other = nextConfig(DEFAULT_CONFIG, { detector_url: "https://elsewhere.example/x.onnx" });
  assert.equal(other.detector_url, DEFAULT_CONFIG.detector_url, "only a path on this origin");
});

test("values out of range are clamped to what the page and the wire can carry", () => {
  const c = nextConfig(DEFAULT_CONFIG, {
    max_in_flight: 0,
    width: 3,
    height: 2.7,
    jpeg_quality: 5,
    crop_size: 1000,
    max_faces: 999,
    crop_scale: 0.5,
    detector_iou_threshold: 7,
    detector_score_threshold: 1.5,
  });
  assert.equal(c.max_in_flight, 1);
  assert.equal(c.width, 16);
  assert.equal(c.height, 16);
  assert.equal(c.jpeg_quality, 1);
  assert.equal(c.crop_size, 255, "one byte in the faces message");
  assert.equal(c.max_faces, 255);
  assert.equal(c.crop_scale, 1);
  assert.equal(c.detector_iou_threshold, 1);
  assert.equal(c.detector_score_threshold, null, "the model's own threshold");
  assert.equal(nextConfig(DEFAULT_CONFIG, { detector_score_threshold: 0.6 }).detector_score_threshold, 0.6);
});

test("negative, missing or non-numeric values leave the current value", () => {
  const c = nextConfig(DEFAULT_CONFIG, { fps: -1, width: "wide", height: null, max_fps: Number.NaN });
  assert.equal(c.fps, DEFAULT_CONFIG.fps);
  assert.equal(c.width, DEFAULT_CONFIG.width);
  assert.equal(c.height, DEFAULT_CONFIG.height);
  assert.equal(c.max_fps, DEFAULT_CONFIG.max_fps);
  assert.notEqual(c, DEFAULT_CONFIG, "a new object: the defaults are never changed");
});
