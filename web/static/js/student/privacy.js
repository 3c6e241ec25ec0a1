/* Privacy on the student page (issue 5): the policy in force (its emotion mode, and whether it
 * observes head orientation), the consent state, and what is kept about this student so far
 * (/api/student/me, on a timer and after a policy change). */

import { renderCapture } from "../edge_capture.js";
import { show } from "../lib/dom.js";
import { api } from "../lib/http.js";
import { observedText, pct } from "../lib/wording.js";
import { setButtons } from "./camera.js";
import { $, analysing, root, state } from "./state.js";

export const MODE_TEXT = {
  per_student: "Your teacher sees your estimated expression. It is kept per student for the retention period.",
  aggregate_only:
    "Your school keeps class totals only: your teacher sees no estimate about you, and none is stored about you.",
  off: "Emotion estimates are switched off at your school: only whether you are connected and a face is seen.",
};
const SO_FAR_EVERY_MS = 15000;
let soFarTimer = null;
let soFarLoading = false; // one /api/student/me request in flight at a time

/** Show the policy in force. It only renders: renderSoFar calls it with every
 * /api/student/me answer, so fetching from here would loop request after request. */
export function applyPolicy(p) {
  if (!p || !p.emotion_mode) return;
  $("policy-mode").textContent = MODE_TEXT[p.emotion_mode] || p.emotion_mode;
  root.dataset.emotionMode = p.emotion_mode;
  state.policyMode = p.emotion_mode; // under "off" the faces messages carry no crops
  // A policy without the field (a server from before attention) leaves what the page knew.
  if (typeof p.attention === "boolean") state.attention = p.attention;
  const text = observedText(state.attention, state.policyMode);
  $("attention-mode").textContent = text;
  show($("attention-mode"), Boolean(text));
  root.dataset.attention = state.attention ? "on" : "off";
  renderCapture();
}

function renderSoFar(me) {
  applyPolicy(me.policy);
  const consent =
    me.consent === "accepted"
      ? "given (notice version " + me.consent_version + ")"
      : me.consent === "declined"
        ? "declined: you attend without analysis"
        : "withdrawn: analysis stopped";
  $("self-consent").textContent = consent;
  $("sofar-frames").textContent = String(me.frames);
  $("sofar-faced").textContent = String(me.frames_with_face);
  let estimate = "not kept about you (school policy)";
  if (me.probs) {
    const top = Object.keys(me.probs).sort((a, b) => me.probs[b] - me.probs[a])[0];
    estimate = top + " " + Math.round(me.probs[top] * 100) + " % on average";
  } else if (me.policy && me.policy.emotion_mode === "per_student") {
    estimate = "no estimate yet";
  }
  $("sofar-estimate").textContent = estimate;
  $("sofar-facing").textContent =
    typeof me.facing_share === "number" ? pct(me.facing_share) + " of the frames where it was observed" : "—";
}

/** Called by the refresh timer, on start and by a live policy message only. */
export async function loadSoFar() {
  if (!state.join || soFarLoading) return;
  soFarLoading = true;
  try {
    const result = await api("/api/student/me", { token: state.join.token });
    if (result.ok && result.data) renderSoFar(result.data);
  } catch {
    /* offline: the next refresh tries again */
  } finally {
    soFarLoading = false;
  }
}

export function startPrivacyView() {
  $("withdraw").hidden = !analysing(); // nothing to withdraw from
  setButtons();
  loadSoFar();
  clearInterval(soFarTimer);
  soFarTimer = setInterval(loadSoFar, SO_FAR_EVERY_MS);
}
