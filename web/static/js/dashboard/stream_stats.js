/* Per-student frame counters (backpressure made visible): polls /stream-stats and writes into
 * each tile what its page sends (edge capture or camera frames, in words) and one small
 * counters line. */

import { teacherApi } from "../lib/http.js";
import { captureText, frameCounts } from "./logic.js";
import { sessionPath, state } from "./state.js";

const EVERY_MS = 5000;

function line(st) {
  const c = frameCounts(st);
  const why = Object.keys(c.droppedBy)
    .map((k) => k.replace(/_/g, " ") + " " + c.droppedBy[k])
    .join(", ");
  return (
    "frames: captured " +
    c.captured +
    " · sent " +
    c.sent +
    " · analysed " +
    c.analysed +
    " · dropped " +
    c.dropped +
    (why ? " (" + why + ")" : "")
  );
}

function child(tile, cls) {
  let el = tile.querySelector("." + cls);
  if (!el) {
    el = document.createElement("div");
    el.className = cls + " muted";
    tile.appendChild(el);
  }
  return el;
}

async function poll() {
  let result;
  try {
    result = await teacherApi(sessionPath + "/stream-stats");
  } catch {
    return; // the next poll tries again
  }
  if (!result || !result.ok) return;
  for (const [id, st] of Object.entries(result.data.students || {})) {
    const s = state.students.get(id);
    if (!s) continue;
    const mode = child(s.el, "capture-mode");
    mode.dataset.capture = st.capture || "unknown";
    mode.dataset.fallback = st.fallback || "";
    mode.textContent = captureText(st, result.data.detectors);
    const stats = child(s.el, "stream-stats");
    const c = frameCounts(st);
    for (const k of ["captured", "sent", "analysed", "dropped"]) stats.dataset[k] = String(c[k]);
    stats.textContent = line(st);
  }
}

export function startStreamStats() {
  poll();
  setInterval(poll, EVERY_MS);
}
