/* The dashboard's rules, without the DOM: what a tile says, why a student needs a look, the
 * class counts and frame counters. Unit-tested in web/tests/. */

import { fallbackText, pct, studentView } from "../lib/wording.js";

// Uncertainty shown honestly (issue 5): a reason instead of a bare label when the face is too
// small, too few frames arrived since the stream (re)started, or none arrived recently.
export const NO_DATA_S = 10;
const QUALITY_TEXT = { face_too_small: "face too small", few_frames: "no data" };

/** A student's view (lib/wording.js studentView) with the reason why an estimate isn't shown.
 * ``s``: {presence, emotion, withdrawn, emotionAt (this browser's clock, ms)}. */
export function honestView(s, now) {
  const v = studentView(s.presence, s.emotion, s.withdrawn);
  if (v.presence !== "present" || !s.emotion || !v.emotion) return v;
  const reason = now - (s.emotionAt || 0) > NO_DATA_S * 1000 ? "no data" : QUALITY_TEXT[s.emotion.quality];
  if (reason) {
    v.emotion = reason;
    v.confidence = null;
    v.probs = null;
    v.stale = reason === "no data";
  }
  return v;
}

/** Why a student needs a look, in words (not only a colour): no face in view, a negative or
 * uncertain estimate, or no update for a while (stalled); "" when nothing. A prompt to look,
 * not a judgement. ``negative``: the labels the server counts as negative. */
export function lookReason(v, labels, negative) {
  if (v.presence === "no_face") return "no face";
  if (v.presence === "disconnected" || v.presence === "reconnecting" || v.stale) return "stalled";
  if (v.presence !== "present" || !v.emotion) return "";
  if (negative.includes(v.emotion)) return "negative";
  if (!labels.includes(v.emotion)) return "uncertain"; // uncertain, face too small
  return "";
}

/** The summary line above the tiles: how many need a look, and why. */
export function lookSummary(looks, total) {
  if (!looks.length) return total ? "No student needs a look now." : "";
  const why = {};
  for (const look of looks) why[look] = (why[look] || 0) + 1;
  const reasons = Object.keys(why).map((k) => why[k] + " " + k);
  return looks.length + (looks.length === 1 ? " needs" : " need") + " a look: " + reasons.join(", ");
}

/** What a tile's percentage means, worded from the model's calibration as the workers publish
 * it (snapshot.calibration): how often the model was right at that confidence on the set it
 * was calibrated on, or that it is not calibrated. Never a fixed claim. */
export function estimateText(c, confidence) {
  if (!c || !c.calibrated) return "estimate (not calibrated)";
  const bin = (c.reliability || []).find((b) => confidence >= b.lo && (confidence < b.hi || b.hi >= 1));
  if (!bin || !bin.count) return "estimate, calibrated on " + c.dataset + " (no image there had this confidence)";
  return (
    "estimate, calibrated: right about " +
    pct(bin.accuracy) +
    " of the time at this confidence on " +
    c.dataset +
    " (" +
    bin.count +
    " of " +
    c.size +
    " images)"
  );
}

/** The note above the tiles on what the percentages are. */
export function calibrationNote(c) {
  return c?.calibrated
    ? "Percentages: estimate, calibrated on " +
        c.dataset +
        " (" +
        c.size +
        " images); a percentage's tooltip says how often the model was right at that confidence there."
    : "Percentages: estimate (not calibrated). The model's own score, not how often it is right.";
}

/** Class counts per label, plus how many are uncertain or show no face. ``views``: the tiles'
 * honest views. Outside per_student the tiles carry no estimates: the mix is the aggregator's
 * (``klass``), shown only when it isn't suppressed, and none at all when inference is off. */
export function classCounts(views, labels, policy) {
  const counts = {};
  for (const label of labels) counts[label] = 0;
  let uncertain = 0;
  let noFace = 0;
  for (const v of views) {
    if (v.presence === "no_face") noFace += 1;
    if (policy.mode !== "per_student") continue;
    if (v.emotion && v.emotion in counts) counts[v.emotion] += 1;
    else if (v.emotion) uncertain += 1; // uncertain, face too small, no data
  }
  if (policy.mode === "per_student") return { counts: counts, uncertain: uncertain, noFace: noFace };
  const k = policy.klass;
  if (policy.mode === "off" || !k || k.suppressed || !k.counts) return { counts: counts, uncertain: 0, noFace: noFace };
  for (const label of Object.keys(k.counts)) counts[label] = Number(k.counts[label]) || 0;
  return { counts: counts, uncertain: Number(k.uncertain) || 0, noFace: noFace };
}

/** One student's frame counters as the tile shows them. Each is counted where it happens and
 * flushed on its own clock (the page reports its captures every 5 s, the gateway its counts
 * every second, workers with each batch), so a later stage can be a moment ahead of an
 * earlier one. Every frame analysed or dropped was sent, and every frame sent was captured:
 * each figure is shown as at least what follows from it, so the line never contradicts itself
 * (analysed + dropped <= sent <= captured). */
export function frameCounts(st) {
  const droppedBy = {};
  for (const [why, n] of Object.entries(st.dropped || {})) if (n > 0) droppedBy[why] = n;
  const dropped = Object.values(droppedBy).reduce((n, v) => n + v, 0);
  const analysed = Number(st.processed) || 0;
  const sent = Math.max(Number(st.received) || 0, analysed + dropped);
  const captured = Math.max(Number(st.captured) || 0, sent);
  return { captured: captured, sent: sent, analysed: analysed, dropped: dropped, droppedBy: droppedBy };
}

/** What leaves this student's device, as the page last reported it; with ``detectors`` (the
 * stream-stats' {device, server}: pages and workers run different detectors by default) which
 * detector found the face. */
export function captureText(st, detectors) {
  const device = detectors?.device ? " by " + detectors.device : "";
  const server = detectors?.server ? " by " + detectors.server : "";
  if (st.capture === "edge") {
    const ms = typeof st.detector_ms === "number" ? ", " + Math.round(st.detector_ms) + " ms per frame" : "";
    return "Face found on the device" + device + ms + "; only face crops are sent";
  }
  if (st.capture === "frames" && st.fallback) {
    return "Sending camera frames: " + fallbackText(st.fallback, false) + " (face found on the server" + server + ")";
  }
  if (st.capture === "frames") return "Sending camera frames (face found on the server" + server + ")";
  return "";
}
