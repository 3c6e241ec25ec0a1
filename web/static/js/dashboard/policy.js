/* The privacy policy in force (issue 5) decides what this page may show. The server already
 * strips what a mode forbids; this page says why something is absent, and forgets estimates it
 * received under an earlier, more open mode. */

import { show } from "../lib/dom.js";
import { withoutAttention } from "./attention.js";
import { scheduleDistribution } from "./charts.js";
import { forgetFacing, renderFacingPanel } from "./facing.js";
import { root, state } from "./state.js";
import { renderTile, showCalibration } from "./tiles.js";

const POLICY_TEXT = {
  per_student: "Policy: per-student estimates. Views of this page are recorded in the audit log.",
  aggregate_only: "Policy: class aggregates only. No per-student estimates are shown or stored.",
  off: "Policy: emotion inference off: no estimates are made, shown or stored.",
};
// What else the policy observes, said after the mode: attention has its own switch.
const ATTENTION_TEXT = " Head orientation is observed: whether each student faces the screen.";
const PRESENCE_ONLY_TEXT = " Presence only.";

/** A policy from the snapshot or a live "policy" message; ``klass``: the snapshot's class mix. */
export function applyPolicy(p, klass) {
  const policy = state.policy;
  if (p?.emotion_mode) {
    policy.mode = p.emotion_mode;
    policy.minGroup = Number(p.min_group_size) || policy.minGroup;
  }
  // Attention has its own switch (docs/attention.md), whatever the emotion mode.
  const attentionOff = p?.attention === false && state.attention !== false;
  if (typeof p?.attention === "boolean") state.attention = p.attention;
  showCalibration();
  if (klass !== undefined) policy.klass = klass;
  if (policy.mode !== "per_student" || attentionOff) {
    // Estimates (observations) received under the earlier policy go too.
    state.students.forEach((s) => {
      if (s.emotion && policy.mode !== "per_student") {
        s.emotion = Object.assign({}, s.emotion, { emotion: null, confidence: null, probs: null });
      }
      if (attentionOff) s.emotion = withoutAttention(s.emotion);
      renderTile(s);
    });
  }
  if (attentionOff) forgetFacing();
  renderFacingPanel();
  if (policy.mode !== "aggregate_only") policy.klass = null;
  renderPolicy();
  scheduleDistribution();
}

/** The aggregator's class mix (aggregate_only). */
export function applyClassUpdate(msg) {
  if (state.policy.mode !== "aggregate_only") return;
  state.policy.klass = msg;
  renderPolicy();
  scheduleDistribution();
}

function renderPolicy() {
  const policy = state.policy;
  root.dataset.emotionMode = policy.mode;
  const banner = document.getElementById("policy-banner");
  banner.dataset.mode = policy.mode;
  const also = state.attention === true ? ATTENTION_TEXT : policy.mode === "off" ? PRESENCE_ONLY_TEXT : "";
  banner.textContent = (POLICY_TEXT[policy.mode] || "Policy: " + policy.mode) + also;
  show(banner, true);
  let note = "";
  if (policy.mode === "off") {
    note = "Emotion inference is off: there is no class mix to show.";
  } else if (policy.mode === "aggregate_only") {
    const k = policy.klass;
    const present = k ? Number(k.present) || 0 : 0;
    note =
      !k || k.suppressed
        ? "Fewer than " + policy.minGroup + " students present (" + present + " now): the class mix is not shown."
        : present + " students present.";
  }
  const el = document.getElementById("class-note");
  el.textContent = note;
  show(el, Boolean(note));
}
