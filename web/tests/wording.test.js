// Wording shared by the pages (web/static/js/lib/wording.js).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { fallbackText, PRESENCE_TEXT, pct } from "../static/js/lib/wording.js";

// The reasons as the server declares them (classpulse/contracts.py), read from its source.
const contracts = readFileSync(new URL("../../classpulse/contracts.py", import.meta.url), "utf8");
const CAPTURE_FALLBACKS = Array.from(
  /^CAPTURE_FALLBACKS = \(([^)]*)\)/m.exec(contracts)[1].matchAll(/"([a-z_]+)"/g),
  (m) => m[1],
);

test("every fallback reason the server knows has its own words, to the student and the teacher", () => {
  const seen = new Set();
  for (const reason of CAPTURE_FALLBACKS) {
    for (const own of [true, false]) {
      const text = fallbackText(reason, own);
      assert.notEqual(text, fallbackText("something new", own), reason);
      seen.add(text);
    }
  }
  assert.equal(fallbackText("unsupported", true), "this browser can't run on-device detection");
  assert.equal(fallbackText("too_slow", false), "the device is too slow for on-device detection");
  assert.ok(seen.size >= CAPTURE_FALLBACKS.length, "one text per reason at least");
});

test("presence words for every state a tile can show", () => {
  for (const p of ["present", "no_face", "camera_off", "disconnected", "reconnecting", "withdrawn", "waiting"]) {
    assert.ok(PRESENCE_TEXT[p], p);
  }
  assert.equal(PRESENCE_TEXT.withdrawn, "withdrew");
});

test("pct rounds to a whole percent", () => {
  assert.equal(pct(0.424), "42 %");
  assert.equal(pct(1), "100 %");
});
