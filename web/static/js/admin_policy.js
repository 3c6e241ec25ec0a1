/* The privacy policy: show it, change it (confirming first when a change loosens it). */

import * as A from "./admin_common.js";
import * as CP from "./lib/all.js";

const form = document.getElementById("policy-form");
const current = document.getElementById("policy-current");
const result = document.getElementById("policy-result");
const error = document.getElementById("policy-error");
const groupInput = document.getElementById("min-group-size");
const retentionInput = document.getElementById("retention-days");
const attentionInput = document.getElementById("attention");
// Higher is stricter (classpulse.policy._RANK).
const RANK = { per_student: 0, aggregate_only: 1, off: 2 };
const NAMES = { per_student: "per student", aggregate_only: "class aggregates only", off: "off (presence only)" };
let saved = null;

function describe(p) {
  let text =
    "Now: emotion estimates " +
    NAMES[p.emotion_mode] +
    "; minimum group size " +
    p.min_group_size +
    "; kept " +
    p.retention_days +
    " days; facing the screen " +
    (p.attention ? "observed" : "not observed") +
    ".";
  if (p.updated_at) {
    text += " Last changed " + CP.formatTime(p.updated_at, true) + (p.updated_by ? " by " + p.updated_by : "") + ".";
  }
  return text;
}

function show(p) {
  saved = p;
  form.dataset.mode = p.emotion_mode;
  document.getElementById("mode-" + p.emotion_mode).checked = true;
  groupInput.value = p.min_group_size;
  retentionInput.value = p.retention_days;
  attentionInput.checked = Boolean(p.attention);
  current.textContent = describe(p);
}

function wanted() {
  const mode = form.querySelector("input[name=emotion_mode]:checked");
  return {
    emotion_mode: mode ? mode.value : saved.emotion_mode,
    min_group_size: Number(groupInput.value),
    retention_days: Number(retentionInput.value),
    attention: attentionInput.checked,
  };
}

/** What in ``next`` loosens ``before``: a sentence per change. */
function loosening(before, next) {
  const out = [];
  if (RANK[next.emotion_mode] < RANK[before.emotion_mode]) {
    out.push(
      "Emotion estimates go from " +
        NAMES[before.emotion_mode] +
        " to " +
        NAMES[next.emotion_mode] +
        (next.emotion_mode === "per_student"
          ? ": teachers will see each student's estimated expression."
          : ": the class's mix will be estimated and shown."),
    );
  }
  if (next.attention && !before.attention) {
    out.push(
      "Facing the screen goes from not observed to observed: teachers will see whether each student faces the screen and for how long they look away.",
    );
  }
  if (next.min_group_size < before.min_group_size) {
    out.push(
      "The minimum group size goes down from " +
        before.min_group_size +
        " to " +
        next.min_group_size +
        ": class figures show with fewer students present, which makes single students easier to pick out.",
    );
  }
  if (next.retention_days > before.retention_days) {
    out.push("Data is kept longer: " + next.retention_days + " days instead of " + before.retention_days + ".");
  }
  return out;
}

async function load() {
  const r = await A.call("/api/admin/policy");
  if (!r) return;
  if (!r.ok) {
    current.textContent = CP.errorText(r, "Couldn't load the policy (HTTP " + r.status + ").");
    return;
  }
  show(r.data);
}

form.addEventListener("submit", async function (event) {
  event.preventDefault();
  if (!saved) return;
  CP.setError(error, "");
  result.textContent = "";
  const next = wanted();
  if (!Number.isInteger(next.min_group_size) || next.min_group_size < 1 || next.min_group_size > 1000) {
    CP.setError(error, "The minimum group size must be a whole number from 1 to 1000.");
    groupInput.focus();
    return;
  }
  if (!Number.isInteger(next.retention_days) || next.retention_days < 1 || next.retention_days > 3650) {
    CP.setError(error, "The retention must be a whole number of days from 1 to 3650.");
    retentionInput.focus();
    return;
  }
  const looser = loosening(saved, next);
  if (looser.length) {
    const yes = await A.confirm({
      title: "Loosen the privacy policy?",
      body: [
        { heading: "This change collects or shows more about students:", items: looser },
        "It applies from the next frame of every class (retention: at the next sweep) and is written to the audit log. Check that your organisation may do this: in the EU, emotion recognition in schools is prohibited by the AI Act except for medical or safety reasons.",
      ],
      confirm: "Loosen the policy",
    });
    if (!yes) return;
  }
  const button = document.getElementById("policy-save");
  button.disabled = true;
  try {
    const r = await A.call("/api/admin/policy", { method: "PUT", body: next });
    if (!r) return;
    if (r.ok) {
      show(r.data);
      result.textContent = "Saved. " + describe(r.data);
    } else {
      CP.setError(error, CP.errorText(r, "Couldn't save the policy (HTTP " + r.status + ")."));
    }
  } catch (_err) {
    CP.setError(error, "Can't reach the server.");
  } finally {
    button.disabled = false;
  }
});

load();
