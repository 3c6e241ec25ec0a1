/* Reports: export a date range (optionally one teacher's or one session) as CSV, JSON or PDF,
 * with a visible working state while the export streams, and a clear word for an empty range. */

import * as A from "./admin_common.js";
import * as CP from "./lib/all.js";

const form = document.getElementById("export-form");
const from = document.getElementById("export-from");
const to = document.getElementById("export-to");
const teacherSelect = document.getElementById("export-teacher");
const sessionSelect = document.getElementById("export-session");
const progress = document.getElementById("export-progress");
const statusEl = document.getElementById("export-status");
const error = document.getElementById("export-error");
const submit = document.getElementById("export-submit");
let sessions = [];

from.value = A.utcDay(-30);
to.value = A.utcDay(0);

function fillSessions() {
  const teacher = teacherSelect.value;
  const mine = sessions.filter(function (s) {
    return !teacher || String(s.owner_id) === teacher;
  });
  A.options(
    sessionSelect,
    mine.map(function (s) {
      return [s.id, s.title + " (" + CP.formatTime(s.created_at, true) + ")"];
    }),
  );
}

async function load() {
  const users = await A.call("/api/admin/users");
  if (!users || !users.ok) return;
  A.options(
    teacherSelect,
    users.data.map(function (u) {
      return [String(u.id), u.display_name + " <" + u.email + ">"];
    }),
  );
  const list = await A.call("/api/sessions?all=1&limit=500");
  if (!list || !list.ok) return;
  sessions = list.data;
  fillSessions();
}

teacherSelect.addEventListener("change", fillSessions);

function working(on, text) {
  progress.hidden = !on;
  form.setAttribute("aria-busy", on ? "true" : "false");
  submit.disabled = on;
  statusEl.textContent = text || "";
}

/** Read the body, saying how much has arrived (a long export streams session by session). */
async function readAll(response) {
  if (!response.body || !response.body.getReader) return await response.blob();
  const reader = response.body.getReader();
  const parts = [];
  let received = 0;
  let lastShown = 0;
  for (;;) {
    const chunk = await reader.read();
    if (chunk.done) break;
    parts.push(chunk.value);
    received += chunk.value.length;
    if (Date.now() - lastShown > 1500) {
      // often enough to show life, rarely enough to read
      lastShown = Date.now();
      statusEl.textContent = "Exporting… " + Math.round(received / 1024) + " KB received.";
    }
  }
  return new Blob(parts, { type: response.headers.get("Content-Type") || "application/octet-stream" });
}

form.addEventListener("submit", async function (event) {
  event.preventDefault();
  CP.setError(error, "");
  if (!from.value || !to.value) {
    CP.setError(error, "Choose both dates.");
    return;
  }
  if (to.value < from.value) {
    CP.setError(error, "The last date must be on or after the first.");
    to.focus();
    return;
  }
  const fmt = form.querySelector("input[name=format]:checked").value;
  const params = new URLSearchParams({ from: from.value, to: to.value, format: fmt });
  if (teacherSelect.value) params.set("teacher", teacherSelect.value);
  if (sessionSelect.value) params.set("session", sessionSelect.value);
  working(true, "Preparing the " + fmt.toUpperCase() + " export… this can take a while for long ranges.");
  try {
    const response = await A.fetchFile("/api/admin/reports?" + params.toString());
    if (!response) return working(false);
    if (!response.ok) {
      const message = await A.responseError(response, "The export failed (HTTP " + response.status + ").");
      working(false);
      if (response.status === 404) statusEl.textContent = message;
      else CP.setError(error, message);
      return;
    }
    const count = Number(response.headers.get("X-ClassPulse-Sessions") || "0");
    if (count === 0) {
      await response.body.cancel();
      working(false, "No sessions were created in this range (with these filters): there is nothing to export.");
      return;
    }
    const blob = await readAll(response);
    const name = A.fileName(response, "classpulse-export." + fmt);
    A.saveBlob(blob, name);
    working(
      false,
      "Downloaded " +
        name +
        ": " +
        count +
        (count === 1 ? " session, " : " sessions, ") +
        Math.max(1, Math.round(blob.size / 1024)) +
        " KB.",
    );
  } catch (_err) {
    working(false);
    CP.setError(error, "The export was interrupted: can't reach the server.");
  }
});

load();
