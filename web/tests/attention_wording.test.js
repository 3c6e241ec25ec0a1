// The attention wording (web/static/js/lib/wording.js): an observation in words, never a verdict.
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  awayText,
  facingClassText,
  facingRowsText,
  facingText,
  observedText,
  spanText,
} from "../static/js/lib/wording.js";

test("spans: seconds under two minutes, then minutes, then hours and minutes", () => {
  assert.equal(spanText(0), "0 s");
  assert.equal(spanText(40.4), "40 s");
  assert.equal(spanText(119), "119 s");
  assert.equal(spanText(120), "2 min");
  assert.equal(spanText(300), "5 min");
  assert.equal(spanText(3599), "59 min");
  assert.equal(spanText(3600), "1 h");
  assert.equal(spanText(3900), "1 h 5 min");
  assert.equal(spanText(-3), "0 s");
});

test("a student's share facing the screen over the server's window", () => {
  assert.equal(facingText(0.8, 300), "facing the screen 80 % of the last 5 min");
  assert.equal(facingText(0, 300), "facing the screen 0 % of the last 5 min");
  assert.equal(facingText(1.2, 60), "facing the screen 100 % of the last 60 s");
  assert.equal(facingText(0.5), "facing the screen 50 %");
  // Not observed (attention off, no face yet): nothing, never "0 %".
  for (const none of [null, undefined, Number.NaN, "0.5"]) assert.equal(facingText(none, 300), "");
});

test("looking away, in seconds then minutes", () => {
  assert.equal(awayText(40), "looking away for 40 s");
  assert.equal(awayText(600), "looking away for 10 min");
  assert.equal(awayText(null), "");
  assert.equal(awayText(undefined), "");
  assert.equal(awayText(-1), "");
});

test("the class now, and nothing when nobody's head orientation is observed", () => {
  assert.equal(facingClassText(18, 24), "18 of 24 facing the screen");
  assert.equal(facingClassText(0, 3), "0 of 3 facing the screen");
  assert.equal(facingClassText(0, 0), "");
});

test("no judgement words in any of it", () => {
  const texts = [facingText(0.1, 300), awayText(900), facingClassText(1, 30), spanText(5000)];
  for (const text of texts) assert.doesNotMatch(text, /disengag|inattentive|distract|attention|score|focus/i);
});

test("stored buckets' share in a sentence: overall, lowest and highest bucket", () => {
  const rows = [
    { bucket_start: "2026-01-01T10:00:00Z", attention_frames: 10, facing_frames: 9, facing_share: 0.9 },
    { bucket_start: "2026-01-01T10:01:00Z", attention_frames: null, facing_frames: null, facing_share: null },
    { bucket_start: "2026-01-01T10:02:00Z", attention_frames: 30, facing_frames: 15, facing_share: 0.5 },
  ];
  const text = facingRowsText(rows);
  assert.match(text, /^From .+ to .+: 60 % of 40 observed frames faced the screen; /);
  assert.match(text, /lowest 50 %, highest 90 % \(2 of 3 buckets observed\)\.$/);
  assert.equal(facingRowsText([{ bucket_start: "x", facing_share: null }]), "");
  assert.equal(facingRowsText([]), "");
});

test("the student is told what is observed of their head, and nothing while it is off", () => {
  assert.equal(
    observedText(true, "off"),
    "Observed from your camera: whether your head faces the screen (its orientation only); no expression.",
  );
  assert.match(observedText(true, "per_student"), /^Also observed: whether your head faces the screen/);
  assert.match(observedText(true, "aggregate_only"), /not an expression/);
  for (const off of [false, null, undefined, "1"]) assert.equal(observedText(off, "off"), "");
});
