/* Joining: consent first, then a display name, then (only then) the camera. A join is kept in
 * this tab (sessionStorage) until it expires, so a reload continues the class. */

import { setError, show } from "../lib/dom.js";
import { api, errorText } from "../lib/http.js";
import { observedText } from "../lib/wording.js";
import { startCamera } from "./camera.js";
import { renderCounts, restoreCounts } from "./counts.js";
import { connect } from "./live.js";
import { MODE_TEXT, startPrivacyView } from "./privacy.js";
import { $, code, STORE_KEY, state } from "./state.js";

function step(id) {
  for (const s of ["consent-step", "declined-step", "name-step", "stream-step", "expired-step"]) show($(s), s === id);
}

/** The join this tab kept, unless it expired. */
export function loadStored() {
  try {
    const stored = JSON.parse(sessionStorage.getItem(STORE_KEY) || "null");
    if (stored?.token && stored.expires_at > Date.now()) return stored;
  } catch {
    /* unreadable: start over */
  }
  sessionStorage.removeItem(STORE_KEY);
  return null;
}

function joinFailure(status, fallback) {
  // Unknown codes and ended classes get the same answer (no oracle for code guessing).
  if (status === 404 || status === 410)
    return "This join link is unknown, or its class has ended. Check the link with your teacher.";
  if (status === 429) return "Too many attempts. Wait a minute, then try again.";
  return fallback;
}

export async function loadInvitation() {
  let result;
  try {
    result = await api("/api/join/" + encodeURIComponent(code));
  } catch {
    setError($("join-error"), "Can't reach the server. Check your connection and reload.");
    return;
  }
  if (!result.ok || !result.data) {
    setError($("join-error"), joinFailure(result.status, errorText(result, "This link can't be used.")));
    return;
  }
  const info = result.data;
  $("class-title").textContent = info.session_title;
  $("class-teacher").textContent = info.teacher ? "Teacher: " + info.teacher : "";
  state.consentVersion = info.consent_version;
  if (info.emotion_mode) {
    // What this school observes now, before the student agrees: the mode, and head orientation
    // when the policy observes it (the notice below explains both).
    const observed = observedText(info.attention, info.emotion_mode);
    $("consent-mode").textContent =
      "At this school now: " + (MODE_TEXT[info.emotion_mode] || info.emotion_mode) + (observed ? " " + observed : "");
  }
  $("consent-version").textContent = String(info.consent_version);
  $("consent-text").replaceChildren(...noticeNodes(info.consent_text));
  step("consent-step");
}

/** The consent notice as DOM nodes, its text only ever set as text (never parsed as HTML).
 * Its format (app/consent.py): blocks separated by a blank line; a block's first line is its
 * heading; "- " starts a list item and an indented line continues it; other lines run on
 * into one paragraph. */
function noticeNodes(notice) {
  const nodes = [];
  const blocks = String(notice || "")
    .replace(/\r\n?/g, "\n")
    .split(/\n\s*\n/);
  for (const block of blocks) {
    const lines = block.split("\n").filter((line) => line.trim());
    if (lines.length > 1 && !/^- /.test(lines[0])) {
      const heading = document.createElement("h3");
      heading.textContent = lines.shift().trim();
      nodes.push(heading);
    }
    let para = null;
    let list = null;
    let item = null;
    for (const line of lines) {
      if (/^- /.test(line)) {
        if (!list) {
          list = document.createElement("ul");
          nodes.push(list);
        }
        item = list.appendChild(document.createElement("li"));
        item.textContent = line.slice(2).trim();
        para = null;
      } else if (item && /^\s/.test(line)) {
        item.textContent += " " + line.trim();
      } else {
        list = item = null;
        if (!para) {
          para = document.createElement("p");
          nodes.push(para);
        }
        para.textContent += (para.textContent ? " " : "") + line.trim();
      }
    }
  }
  return nodes;
}

$("consent-accept").addEventListener("click", () => {
  step("name-step");
  $("display-name").focus();
});

$("consent-decline").addEventListener("click", () => {
  // Declining is an answer too: the student joins (recorded as declined) and attends
  // without analysis; the camera never starts on this page.
  state.declined = true;
  step("name-step");
  show($("declined-step"), true);
  $("join-submit").textContent = "Join without camera";
  $("display-name").focus();
});

$("name-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const name = $("display-name").value.trim();
  const error = $("join-error");
  if (!name) {
    setError(error, "Type the name your teacher should see.");
    $("display-name").focus();
    return;
  }
  setError(error, "");
  const button = $("join-submit");
  button.disabled = true;
  try {
    const result = await api("/api/join/" + encodeURIComponent(code), {
      method: "POST",
      body: { display_name: name, consent: !state.declined, consent_version: state.consentVersion },
    });
    if (result.status === 409) {
      // The consent notice changed since it was shown: show the new one before joining.
      await loadInvitation();
      setError(error, "The consent notice has changed. Please read it again.");
      return;
    }
    if (!result.ok || !result.data || !result.data.token) {
      setError(error, joinFailure(result.status, errorText(result, "Couldn't join (HTTP " + result.status + ").")));
      return;
    }
    const d = result.data;
    state.join = {
      token: d.token,
      student_id: d.student_id,
      session_id: d.session_id,
      session_title: d.session_title,
      display_name: name,
      expires_at: Date.now() + (Number(d.expires_in) || 3600) * 1000,
      analysis: d.analysis !== false,
    };
    sessionStorage.setItem(STORE_KEY, JSON.stringify(state.join));
    enterStream();
    if (state.join.analysis) startCamera(); // consent and name given just now: that click asks for it
  } catch {
    setError(error, "Can't reach the server. Check your connection and try again.");
  } finally {
    button.disabled = false;
  }
});

export function enterStream() {
  restoreCounts();
  renderCounts();
  setError($("join-error"), "");
  if (state.join.session_title) $("class-title").textContent = state.join.session_title;
  $("self-name").textContent = state.join.display_name || "";
  step("stream-step");
  startPrivacyView();
  connect();
}
