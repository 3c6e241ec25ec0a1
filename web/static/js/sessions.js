/* The teacher's session list: create, share (link and QR), open the dashboard, end. */
import * as CP from "./lib/all.js";

const list = document.getElementById("session-list");
const status = document.getElementById("sessions-status");
const rowTemplate = document.getElementById("session-row");
const createForm = document.getElementById("create-form");
const createError = document.getElementById("create-error");
const titleInput = document.getElementById("session-title");

function renderRow(session) {
  const row = rowTemplate.content.firstElementChild.cloneNode(true);
  row.dataset.sessionId = session.id;
  row.querySelector(".session-title").textContent = session.title;
  const state = row.querySelector(".session-state");
  state.textContent = session.ended_at ? "ended" : "active";
  state.classList.add(session.ended_at ? "ended" : "active");
  const students = session.student_count === 1 ? "1 student" : (session.student_count || 0) + " students";
  let meta = "Created " + CP.formatTime(session.created_at, true) + " · " + students;
  if (session.ended_at) meta += " · ended " + CP.formatTime(session.ended_at, true);
  row.querySelector(".session-meta").textContent = meta;

  const link = row.querySelector(".join-link");
  link.href = session.join_url;
  link.textContent = session.join_url;
  row.querySelector(".copy-link").addEventListener("click", function (event) {
    CP.copyText(session.join_url, event.currentTarget);
  });
  renderFigures(row.querySelector(".session-figures"), session.summary);
  row.querySelector(".history-link").href = "/sessions/" + encodeURIComponent(session.id) + "/history";
  const dashboard = row.querySelector(".dashboard-link");
  dashboard.href = "/sessions/" + encodeURIComponent(session.id);
  dashboard.textContent = session.ended_at ? "Dashboard" : "Live dashboard";

  const qr = row.querySelector(".show-qr");
  const end = row.querySelector(".end-session");
  if (session.ended_at) {
    row.querySelector(".join-line").hidden = true;
    qr.hidden = true;
    end.hidden = true;
  } else {
    qr.addEventListener("click", function () {
      CP.showQr(session.join_url);
    });
    end.addEventListener("click", function () {
      endSession(session, end);
    });
  }
  return row;
}

/** Summary figures of a session (from GET /api/sessions): duration, students, frames, mix. */
function renderFigures(el, summary) {
  if (!summary) return;
  const minutes = Math.round(summary.duration_s / 60);
  const parts = [
    minutes + " min",
    summary.students_seen + (summary.students_seen === 1 ? " student" : " students") + " on camera",
    summary.frames + " frames analysed",
  ];
  if (summary.dominant) parts.push("most frequent expression: " + summary.dominant);
  parts.push(summary.alerts === 1 ? "1 alert" : summary.alerts + " alerts");
  el.textContent = parts.join(" · ");
  el.hidden = false;
}

async function load() {
  let result;
  try {
    result = await CP.teacherApi("/api/sessions");
  } catch (_err) {
    status.textContent = "Can't reach the server.";
    return;
  }
  if (!result) return;
  if (!result.ok || !Array.isArray(result.data)) {
    status.textContent = CP.errorText(result, "Couldn't load your sessions (HTTP " + result.status + ").");
    return;
  }
  list.replaceChildren.apply(list, result.data.map(renderRow));
  status.textContent = result.data.length ? "" : "No sessions yet: create one above.";
}

async function endSession(session, button) {
  button.disabled = true;
  try {
    const result = await CP.teacherApi("/api/sessions/" + encodeURIComponent(session.id) + "/end", {
      method: "POST",
    });
    if (result && !result.ok) {
      status.textContent = CP.errorText(result, "Couldn't end the session.");
    }
  } catch (_err) {
    status.textContent = "Can't reach the server.";
  }
  button.disabled = false;
  await load();
}

createForm.addEventListener("submit", async function (event) {
  event.preventDefault();
  const title = titleInput.value.trim();
  if (!title) {
    CP.setError(createError, "Give the session a title.");
    titleInput.focus();
    return;
  }
  CP.setError(createError, "");
  const button = document.getElementById("create-session");
  button.disabled = true;
  try {
    const result = await CP.teacherApi("/api/sessions", { method: "POST", body: { title: title } });
    if (result && result.ok) {
      titleInput.value = "";
      await load();
    } else if (result) {
      CP.setError(createError, CP.errorText(result, "Couldn't create the session (HTTP " + result.status + ")."));
    }
  } catch (_err) {
    CP.setError(createError, "Can't reach the server.");
  } finally {
    button.disabled = false;
  }
});

load();
