// The dashboard's rules without the DOM (web/static/js/dashboard/logic.js).
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  captureText,
  classCounts,
  estimateText,
  frameCounts,
  honestView,
  lookReason,
  lookSummary,
} from "../static/js/dashboard/logic.js";

const LABELS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"];
const NEGATIVE = ["angry", "disgust", "fear", "sad"];

function student(emotion, extra) {
  const e = Object.assign({ presence: "present", emotion: emotion, confidence: 0.8, t: 10 }, extra);
  return { presence: null, emotion: e, withdrawn: false, emotionAt: 1000 };
}

test("frame counters never contradict themselves: analysed + dropped <= sent <= captured", () => {
  const c = frameCounts({ captured: 5, received: 3, processed: 4, dropped: { queue_full: 2, too_big: 0 } });
  assert.deepEqual(c, { captured: 6, sent: 6, analysed: 4, dropped: 2, droppedBy: { queue_full: 2 } });
  const cases = [
    {},
    { captured: 100, received: 90, processed: 80, dropped: { stale: 5 } },
    { captured: 0, received: 10, processed: 0 },
    { processed: "7", dropped: { a: 1, b: 2 } },
  ];
  for (const st of cases) {
    const k = frameCounts(st);
    assert.ok(k.analysed + k.dropped <= k.sent && k.sent <= k.captured, JSON.stringify(k));
  }
});

test("honestView: a reason instead of a bare label", () => {
  assert.equal(honestView(student("happy"), 2000).emotion, "happy");
  const small = honestView(student("happy", { quality: "face_too_small" }), 2000);
  assert.equal(small.emotion, "face too small");
  assert.equal(small.confidence, null);
  assert.equal(small.stale, false);
  const old = honestView(student("happy"), 1000 + 10001);
  assert.equal(old.emotion, "no data");
  assert.equal(old.stale, true);
});

test("lookReason: no face, stalled, negative, uncertain, else nothing", () => {
  const now = 2000;
  assert.equal(lookReason({ presence: "no_face" }, LABELS, NEGATIVE), "no face");
  assert.equal(lookReason({ presence: "disconnected" }, LABELS, NEGATIVE), "stalled");
  assert.equal(lookReason({ presence: "reconnecting" }, LABELS, NEGATIVE), "stalled");
  assert.equal(lookReason(honestView(student("sad"), now), LABELS, NEGATIVE), "negative");
  assert.equal(lookReason(honestView(student("happy"), now), LABELS, NEGATIVE), "");
  const small = honestView(student("happy", { quality: "face_too_small" }), now);
  assert.equal(lookReason(small, LABELS, NEGATIVE), "uncertain");
  assert.equal(lookReason(honestView(student("sad"), 99999), LABELS, NEGATIVE), "stalled");
  assert.equal(lookReason({ presence: "camera_off" }, LABELS, NEGATIVE), "");
  assert.equal(lookReason(honestView(student("sad"), now), LABELS, []), "", "negative is the server's list");
});

test("lookSummary counts the reasons", () => {
  assert.equal(lookSummary([], 0), "");
  assert.equal(lookSummary([], 3), "No student needs a look now.");
  assert.equal(lookSummary(["negative"], 3), "1 needs a look: 1 negative");
  assert.equal(lookSummary(["no face", "negative", "no face"], 5), "3 need a look: 2 no face, 1 negative");
});

test("classCounts per student: labels counted, the rest uncertain, no face apart", () => {
  const views = [
    { presence: "present", emotion: "happy" },
    { presence: "present", emotion: "happy" },
    { presence: "present", emotion: "face too small" },
    { presence: "no_face", emotion: null },
    { presence: "camera_off", emotion: null },
  ];
  const c = classCounts(views, LABELS, { mode: "per_student" });
  assert.equal(c.counts.happy, 2);
  assert.equal(c.counts.sad, 0);
  assert.equal(c.uncertain, 1);
  assert.equal(c.noFace, 1);
});

test("classCounts outside per_student: the aggregator's mix, none when suppressed or off", () => {
  const views = [{ presence: "present", emotion: "happy" }, { presence: "no_face" }];
  const klass = { counts: { sad: 3, happy: 2 }, uncertain: 1, present: 6, suppressed: false };
  const agg = classCounts(views, LABELS, { mode: "aggregate_only", klass: klass });
  assert.equal(agg.counts.sad, 3);
  assert.equal(agg.counts.happy, 2, "not the tile's own estimate");
  assert.equal(agg.uncertain, 1);
  assert.equal(agg.noFace, 1);
  const hidden = classCounts(views, LABELS, { mode: "aggregate_only", klass: { ...klass, suppressed: true } });
  assert.equal(
    Object.values(hidden.counts).reduce((a, b) => a + b, 0),
    0,
  );
  const off = classCounts(views, LABELS, { mode: "off", klass: klass });
  assert.equal(
    Object.values(off.counts).reduce((a, b) => a + b, 0),
    0,
  );
  assert.equal(off.noFace, 1);
});

test("estimateText words the calibration, never a fixed claim", () => {
  assert.equal(estimateText(null, 0.5), "estimate (not calibrated)");
  const c = {
    calibrated: true,
    dataset: "FER val",
    size: 100,
    reliability: [
      { lo: 0, hi: 0.5, count: 0, accuracy: 0 },
      { lo: 0.5, hi: 1, count: 40, accuracy: 0.72 },
    ],
  };
  assert.match(estimateText(c, 0.3), /no image there had this confidence/);
  assert.equal(
    estimateText(c, 1),
    "estimate, calibrated: right about 72 % of the time at this confidence on FER val (40 of 100 images)",
  );
});

test("captureText: what leaves the device, in words", () => {
  assert.equal(
    captureText({ capture: "edge", detector_ms: 12.4 }),
    "Face found on the device, 12 ms per frame; only face crops are sent",
  );
  assert.equal(
    captureText({ capture: "frames", fallback: "too_slow" }),
    "Sending camera frames: the device is too slow for on-device detection (face found on the server)",
  );
  assert.equal(captureText({ capture: "frames" }), "Sending camera frames (face found on the server)");
  assert.equal(captureText({}), "");
  const detectors = { device: "face_detection_short_range", server: "face_detection_full_range" };
  assert.match(
    captureText({ capture: "edge", detector_ms: 9 }, detectors),
    /on the device by face_detection_short_range, 9 ms/,
  );
  assert.match(captureText({ capture: "frames" }, detectors), /on the server by face_detection_full_range\)$/);
  assert.match(captureText({ capture: "frames" }, { device: "x", server: null }), /on the server\)$/);
});
