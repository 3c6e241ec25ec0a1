/* This student's frames as this tab sent them, kept across reloads of the tab (with the join)
 * so that what the server stored about the student never exceeds what this page says it sent:
 * acked + dropped <= sent, and frames analysed and kept <= sent (<= acked while the page stays
 * open; a reload can lose the acks of the frames in flight at that moment). */

import { $, COUNTS_KEY, state } from "./state.js";

export const counts = { sent: 0, acked: 0, dropped: 0, skipped: 0, droppedBy: {} };

export function renderCounts() {
  $("frames-sent").textContent = String(counts.sent);
  $("frames-acked").textContent = String(counts.acked);
  const why = Object.keys(counts.droppedBy).map((k) => k.replace(/_/g, " ") + " " + counts.droppedBy[k]);
  $("frames-dropped").textContent = String(counts.dropped) + (why.length ? " (" + why.join(", ") + ")" : "");
  $("frames-skipped").textContent = String(counts.skipped);
  if (state.join?.student_id) {
    try {
      sessionStorage.setItem(COUNTS_KEY, JSON.stringify(Object.assign({ student_id: state.join.student_id }, counts)));
    } catch {
      /* storage full or off: the counts start again with the next page */
    }
  }
}

/** The counts this tab kept for this student before a reload. */
export function restoreCounts() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(COUNTS_KEY) || "null");
    if (!saved || saved.student_id !== state.join.student_id) return;
    for (const k of ["sent", "acked", "dropped", "skipped"]) counts[k] = Number(saved[k]) || 0;
    counts.droppedBy = saved.droppedBy && typeof saved.droppedBy === "object" ? saved.droppedBy : {};
  } catch {
    /* unreadable: start from zero */
  }
}
