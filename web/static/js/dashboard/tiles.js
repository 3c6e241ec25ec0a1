/* One tile per student: presence, estimate, probabilities, head orientation in words (when the
 * policy observes it), "needs a look", and their order. */

import { recall, remember, show } from "../lib/dom.js";
import { ago, awayText, emotionColor, facingText, PRESENCE_TEXT, pct } from "../lib/wording.js";
import { attentionOf, NOT_OBSERVED } from "./attention.js";
import { calibrationNote, estimateText, honestView, lookReason, lookSummary, NO_DATA_S } from "./logic.js";
import { state } from "./state.js";

const tiles = document.getElementById("tiles");
const tileTemplate = document.getElementById("tile-template");

export function colorOf(label) {
  return emotionColor(label, state.labels);
}

export function viewOf(s) {
  return honestView(s, Date.now());
}

export function ensureStudent(id, name, onNew) {
  let s = state.students.get(id);
  if (!s) {
    const el = tileTemplate.content.firstElementChild.cloneNode(true);
    el.dataset.studentId = id;
    s = { id: id, name: name || "Student", withdrawn: false, presence: null, emotion: null, el: el };
    s.order = state.joinedOrder++;
    state.students.set(id, s);
    tiles.appendChild(el);
    updateCount();
    if (onNew) onNew();
  } else if (name && name !== s.name) {
    s.name = name;
  }
  return s;
}

export function clearTiles() {
  state.students.clear();
  state.joinedOrder = 0;
  tiles.replaceChildren();
}

export function updateCount() {
  document.getElementById("student-count").textContent = String(state.students.size);
  show(document.getElementById("no-students"), state.students.size === 0);
}

export function showCalibration() {
  let note = document.getElementById("calibration-note");
  if (!note) {
    note = document.createElement("p");
    note.id = "calibration-note";
    note.className = "muted";
    tiles.parentNode.insertBefore(note, tiles);
  }
  note.textContent = calibrationNote(state.calibration);
  note.hidden = state.policy.mode === "off"; // no emotion estimates at all
}

function renderProbs(bar, probs) {
  if (!probs) {
    bar.replaceChildren();
    return;
  }
  const segments = state.labels.map((label) => {
    const seg = document.createElement("span");
    const p = Number(probs[label]) || 0;
    seg.className = "seg";
    seg.style.width = (p * 100).toFixed(1) + "%";
    seg.style.backgroundColor = colorOf(label);
    seg.title = label + " " + pct(p);
    return seg;
  });
  bar.replaceChildren(...segments);
}

export function renderTile(s) {
  const v = viewOf(s);
  s.shownStale = Boolean(v.stale);
  const el = s.el;
  el.dataset.presence = v.presence;
  el.querySelector(".name").textContent = s.name;
  const presence = el.querySelector(".presence");
  presence.dataset.presence = v.presence;
  presence.textContent = PRESENCE_TEXT[v.presence] || v.presence;
  const emotion = el.querySelector(".emotion");
  emotion.dataset.emotion = v.emotion || "none";
  emotion.textContent = v.emotion || "—";
  // The colour is a swatch beside the word (CSS), never the text's colour: some emotion
  // colours are too light for text, and the word says it anyway.
  const swatch = Boolean(v.emotion && state.labels.includes(v.emotion));
  emotion.dataset.swatch = swatch ? "yes" : "no";
  emotion.style.setProperty("--emo", swatch ? colorOf(v.emotion) : "transparent");
  const conf = el.querySelector(".confidence");
  conf.textContent = v.emotion && typeof v.confidence === "number" ? pct(v.confidence) : "";
  conf.title = conf.textContent ? estimateText(state.calibration, v.confidence) : "";
  renderProbs(el.querySelector(".probbar"), v.probs);
  const face = el.querySelector(".face");
  face.textContent = v.faces === null ? "" : v.faces > 0 ? "face seen" : "no face";
  const when = el.querySelector(".ago");
  when.dataset.t = String(v.t || "");
  when.textContent = v.t ? ago(v.t) : "";
  renderFacing(s, v.presence);
  s.look = lookReason(v, state.labels, state.negative);
  el.dataset.attention = s.look ? "yes" : "no";
  el.querySelector(".look").textContent = s.look ? "needs a look: " + s.look : "";
  scheduleSort();
}

/** The observation in words: "facing the screen 80 % of the last 5 min", and while the
 * student doesn't face it, "looking away for 40 s". Not a judgement, and no part of "needs a
 * look". Kept on the record (``s.attention``) for the class panel. */
function renderFacing(s, presence) {
  const a = state.attention === false ? NOT_OBSERVED : attentionOf(s, presence, Date.now());
  s.attention = a;
  const share = facingText(a.share, state.attentionWindowS);
  const away = awayText(a.away);
  const line = s.el.querySelector(".facing-line");
  line.dataset.facing = !share && !away ? "none" : a.facing === null ? "unknown" : a.facing ? "yes" : "no";
  line.querySelector(".facing").textContent = share;
  line.querySelector(".away").textContent = away;
}

/** Every second: the "12 s ago" texts, how long a student has looked away, and estimates
 * that just went stale. */
export function refreshTiles() {
  tiles.querySelectorAll(".ago").forEach((el) => {
    const t = Number(el.dataset.t);
    if (t) el.textContent = ago(t);
  });
  state.students.forEach((s) => {
    if (s.emotion && !s.shownStale && Date.now() - (s.emotionAt || 0) > NO_DATA_S * 1000) renderTile(s);
    else if (s.attention && s.el.dataset.presence) renderFacing(s, s.el.dataset.presence);
  });
}

// --- the order of the tiles ------------------------------------------------------------------
const SORT_KEY = "classpulse.dashboard.sort";
const sortSelect = document.getElementById("tile-sort");
let sortTimer = null;
let lastSort = 0;

function rank(s) {
  if (s.look) return 0;
  return s.el.dataset.presence === "present" ? 1 : 2; // then camera off, not started, no analysis, withdrawn
}

function scheduleSort() {
  // At most once a second: a full class sends many updates, and tiles should not jitter.
  if (!sortTimer) sortTimer = setTimeout(sortTiles, Math.max(0, lastSort + 1000 - Date.now()));
}

function sortTiles() {
  clearTimeout(sortTimer);
  sortTimer = null;
  lastSort = Date.now();
  const by = sortSelect.value;
  const list = Array.from(state.students.values()).sort((a, b) => {
    if (by === "attention" && rank(a) !== rank(b)) return rank(a) - rank(b);
    if (by === "joined") return a.order - b.order;
    return a.name.localeCompare(b.name) || a.order - b.order;
  });
  const focused = document.activeElement;
  list.forEach((s, i) => {
    if (tiles.children[i] !== s.el) tiles.insertBefore(s.el, tiles.children[i] || null);
  });
  // Moving a tile blurs it: a keyboard user keeps their place.
  if (focused && focused !== document.activeElement && tiles.contains(focused)) focused.focus({ preventScroll: true });
  const summary = lookSummary(
    list.filter((s) => s.look).map((s) => s.look),
    state.students.size,
  );
  const status = document.getElementById("needs-look-summary");
  if (status.textContent !== summary) status.textContent = summary; // a status: say changes only
}

const saved = recall(SORT_KEY);
if (Array.from(sortSelect.options).some((o) => o.value === saved)) sortSelect.value = saved;
sortSelect.addEventListener("change", () => {
  remember(SORT_KEY, sortSelect.value);
  sortTiles();
});
