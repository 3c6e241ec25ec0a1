// Attention on the dashboard without the DOM (web/static/js/dashboard/attention.js).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import {
  ATTENTION_FIELDS,
  addSample,
  attentionOf,
  classFacing,
  newSeries,
  observed,
  seriesRange,
  shareOf,
  withoutAttention,
} from "../static/js/dashboard/attention.js";

// The field names as the server declares them (classpulse/contracts.py), read from its source.
const contracts = readFileSync(new URL("../../classpulse/contracts.py", import.meta.url), "utf8");
const SERVER_FIELDS = Array.from(
  /^ATTENTION_FIELDS = \(([^)]*)\)/m.exec(contracts)[1].matchAll(/"([a-z_]+)"/g),
  (m) => m[1],
);

function student(update, emotionAt) {
  return { emotion: Object.assign({ presence: "present", t: 10 }, update), emotionAt: emotionAt, withdrawn: false };
}

test("the attention fields are the server's", () => {
  assert.deepEqual(ATTENTION_FIELDS, SERVER_FIELDS);
});

test("a tile's observation: share, facing, and away counted on by this browser's clock", () => {
  const facing = attentionOf(student({ facing: true, facing_share: 0.8, away_s: null }, 1000), "present", 1500);
  assert.deepEqual(facing, { facing: true, share: 0.8, away: null });
  const away = attentionOf(student({ facing: false, facing_share: 0.4, away_s: 40 }, 1000), "present", 3000);
  assert.deepEqual(away, { facing: false, share: 0.4, away: 42 });
  // A facing student's away_s (should the server send one) is not shown: they face it now.
  assert.equal(attentionOf(student({ facing: true, away_s: 5 }, 1000), "present", 1000).away, null);
  assert.equal(attentionOf(student({ facing_share: 1.3 }, 1000), "present", 1000).share, 1);
});

test("not observed: absent or null fields, no update, not present, withdrawn, nothing recent", () => {
  const none = { facing: null, share: null, away: null };
  assert.deepEqual(attentionOf(student({}, 1000), "present", 1000), none);
  assert.deepEqual(
    attentionOf(student({ facing: null, facing_share: null, away_s: null }, 1000), "present", 1000),
    none,
  );
  assert.deepEqual(attentionOf({ emotion: null, emotionAt: 0 }, "present", 1000), none);
  const s = student({ facing: false, facing_share: 0.5, away_s: 3 }, 1000);
  assert.deepEqual(attentionOf(s, "camera_off", 1000), none);
  assert.deepEqual(attentionOf(Object.assign({}, s, { withdrawn: true }), "present", 1000), none);
  // No update for longer than NO_DATA_S: no frames, so no observation (and no counting on).
  assert.deepEqual(attentionOf(s, "present", 1000 + 10_001), none);
  assert.equal(observed(none), false);
  assert.equal(observed({ facing: null, share: 0, away: null }), true);
});

test("the policy turning attention off forgets the fields received before", () => {
  const u = { type: "student", emotion: "happy", facing: true, facing_share: 0.9, away_s: null };
  const out = withoutAttention(u);
  assert.deepEqual(out, { type: "student", emotion: "happy", facing: null, facing_share: null, away_s: null });
  assert.equal(u.facing, true, "the original is left alone");
  assert.equal(withoutAttention(null), null);
});

test("the class now counts only students whose orientation is observed", () => {
  const list = [
    { facing: true },
    { facing: true },
    { facing: false },
    { facing: null, share: 0.5 },
    { facing: null, share: null },
  ];
  assert.deepEqual(classFacing(list), { facing: 2, observed: 3 });
  assert.deepEqual(classFacing([]), { facing: 0, observed: 0 });
});

test("the session's series stays bounded and keeps the whole session, weighted", () => {
  const series = newSeries(8);
  for (let i = 0; i < 1000; i += 1) {
    addSample(series, i * 5000, { facing: i < 500 ? 3 : 1, observed: 4 });
    assert.ok(series.points.length <= 8, "bounded at every step");
  }
  assert.equal(series.points[0].t, 0, "the session's start is still there");
  assert.equal(series.points[series.points.length - 1].end, 999 * 5000);
  assert.equal(
    series.points.reduce((n, p) => n + p.n, 0),
    1000,
    "every sample counted once",
  );
  assert.equal(shareOf(series.points[0]), 0.75);
  assert.equal(shareOf(series.points[series.points.length - 1]), 0.25);
  const r = seriesRange(series);
  assert.equal(r.low, 0.25);
  assert.equal(r.high, 0.75);
  assert.equal(r.latest, 0.25);
  assert.equal(r.from, 0);
});

test("a merged point's share is weighted by the students observed; nobody observed is a gap", () => {
  const series = newSeries(2);
  addSample(series, 0, { facing: 1, observed: 1 });
  addSample(series, 1, { facing: 0, observed: 3 });
  addSample(series, 2, { facing: 0, observed: 0 });
  assert.equal(series.span, 2);
  assert.equal(shareOf(series.points[0]), 0.25);
  assert.equal(shareOf(series.points[1]), null);
  assert.equal(seriesRange(newSeries(4)), null);
  const empty = newSeries(4);
  addSample(empty, 0, { facing: 0, observed: 0 });
  assert.equal(seriesRange(empty), null);
});
