/* The audit log: filter by day, action, who and what, page through it, download it as CSV
 * (escaped against spreadsheet formulas by the server; the download is itself audited). */

import * as A from "./admin_common.js";
import * as CP from "./lib/all.js";

const PAGE = 50;
const form = document.getElementById("audit-form");
const tbody = document.querySelector("#audit-table tbody");
const statusEl = document.getElementById("audit-status");
const older = document.getElementById("audit-older");
const newer = document.getElementById("audit-newer");
const pageLabel = document.getElementById("audit-page");
let pages = [null]; // the before_id of each page seen so far (null: the newest)
let next = null;

function nextDay(day) {
  const d = new Date(day + "T00:00:00Z");
  d.setUTCDate(d.getUTCDate() + 1);
  return d.toISOString().slice(0, 10);
}

function filters() {
  const params = new URLSearchParams();
  const from = document.getElementById("audit-from").value;
  const to = document.getElementById("audit-to").value;
  if (from) params.set("from", from + "T00:00:00Z");
  if (to) params.set("to", nextDay(to) + "T00:00:00Z");
  [
    ["audit-action", "action"],
    ["audit-actor", "actor"],
    ["audit-target", "target"],
  ].forEach(function (pair) {
    const value = document.getElementById(pair[0]).value.trim();
    if (value) params.set(pair[1], value);
  });
  return params;
}

function subject(e) {
  const parts = [];
  if (e.target_type) parts.push(e.target_type + (e.target_id ? " " + e.target_id : ""));
  const d = e.detail || {};
  if (d.session_id && d.session_id !== e.target_id) parts.push("session " + d.session_id);
  if (d.student_id && d.student_id !== e.target_id) parts.push("student " + d.student_id);
  return parts.join("; ");
}

function details(detail) {
  const text = JSON.stringify(detail || {});
  return text === "{}" ? "" : text.length > 300 ? text.slice(0, 300) + "…" : text;
}

async function show(index) {
  const params = filters();
  params.set("limit", String(PAGE));
  if (pages[index]) params.set("before_id", String(pages[index]));
  statusEl.textContent = "Loading…";
  let result;
  try {
    result = await A.call("/api/admin/audit?" + params.toString());
  } catch (_err) {
    statusEl.textContent = "Can't reach the server.";
    return;
  }
  if (!result) return;
  if (!result.ok) {
    statusEl.textContent = CP.errorText(result, "Couldn't read the audit log (HTTP " + result.status + ").");
    return;
  }
  const entries = result.data.entries;
  tbody.replaceChildren.apply(
    tbody,
    entries.map(function (e) {
      const tr = A.row(
        [CP.formatTime(e.at, true), e.actor_email || "system", e.action, subject(e), e.ip || "—", details(e.detail)],
        true,
      );
      tr.dataset.action = e.action;
      return tr;
    }),
  );
  pages = pages.slice(0, index + 1);
  next = result.data.next_before_id;
  older.disabled = !next;
  newer.disabled = index === 0;
  pageLabel.textContent = "Page " + (index + 1);
  statusEl.textContent = entries.length
    ? entries.length + (entries.length === 1 ? " entry" : " entries") + " on this page, newest first."
    : "No entries match these filters.";
}

older.addEventListener("click", function () {
  if (!next) return;
  pages.push(next);
  show(pages.length - 1);
});
newer.addEventListener("click", function () {
  if (pages.length > 1) show(pages.length - 2);
});

form.addEventListener("submit", function (event) {
  event.preventDefault();
  pages = [null];
  show(0);
});

document.getElementById("audit-csv").addEventListener("click", async function (event) {
  const button = event.currentTarget;
  const params = filters();
  params.set("format", "csv");
  params.set("limit", "100000");
  button.disabled = true;
  statusEl.textContent = "Preparing the CSV…";
  try {
    const response = await A.fetchFile("/api/admin/audit?" + params.toString());
    if (!response) return;
    if (!response.ok) {
      statusEl.textContent = await A.responseError(response, "The download failed (HTTP " + response.status + ").");
      return;
    }
    const blob = await response.blob();
    const name = A.fileName(response, "classpulse-audit.csv");
    A.saveBlob(blob, name);
    statusEl.textContent = "Downloaded " + name + " (the download is itself in the audit log).";
  } catch (_err) {
    statusEl.textContent = "Can't reach the server.";
  } finally {
    button.disabled = false;
  }
});

show(0);
