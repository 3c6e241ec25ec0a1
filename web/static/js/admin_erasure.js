/* Erasure on request: find a student by session and name; erase one student's data or one
 * session's, after a confirmation that says exactly what goes and what stays. */

import * as A from "./admin_common.js";
import * as CP from "./lib/all.js";

const form = document.getElementById("find-form");
const sessionSelect = document.getElementById("find-session");
const nameInput = document.getElementById("find-name");
const eraseSession = document.getElementById("erase-session");
const tbody = document.querySelector("#found-table tbody");
const statusEl = document.getElementById("erasure-status");
let sessions = [];

function plural(n, one, many) {
  return n + " " + (n === 1 ? one : many);
}

async function loadSessions() {
  const list = await A.call("/api/sessions?all=1&limit=500");
  if (!list || !list.ok) return;
  sessions = list.data;
  A.options(
    sessionSelect,
    sessions.map(function (s) {
      return [s.id, s.title + " (" + CP.formatTime(s.created_at, true) + ")"];
    }),
  );
}

sessionSelect.addEventListener("change", function () {
  eraseSession.disabled = !sessionSelect.value;
});

async function eraseStudent(st) {
  const yes = await A.confirm({
    title: "Erase " + st.display_name + "'s data?",
    body: [
      {
        heading: "Deleted now, for good:",
        items: [
          'the name "' + st.display_name + '" and the record that this student joined ' + st.session_title,
          plural(st.emotion_buckets, "stored time bucket", "stored time buckets") +
            " of presence and expression estimates",
          plural(st.consent_records, "consent record", "consent records"),
          plural(st.alerts, "alert", "alerts") + " about this student",
          "their live connection, if they are still connected",
        ],
      },
      {
        heading: "Kept:",
        items: [
          "the session and its class-level figures",
          "an audit entry recording this erasure: you, the time, your address, the student's id and the counts above (not the name)",
        ],
      },
    ],
    confirm: "Erase this student",
  });
  if (!yes) return;
  const r = await A.call("/api/admin/students/" + encodeURIComponent(st.id), { method: "DELETE" });
  if (!r) return;
  if (!r.ok) {
    statusEl.textContent = CP.errorText(r, "Couldn't erase (HTTP " + r.status + ").");
    return;
  }
  await search(st.display_name + "'s data was erased; the audit log records it.");
}

eraseSession.addEventListener("click", async function () {
  const id = sessionSelect.value;
  if (!id) return;
  const r = await A.call("/api/admin/sessions/" + encodeURIComponent(id) + "/data");
  if (!r) return;
  if (!r.ok) {
    statusEl.textContent = CP.errorText(r, "Couldn't read the session (HTTP " + r.status + ").");
    return;
  }
  const d = r.data;
  const yes = await A.confirm({
    title: 'Erase all student data of "' + d.title + '"?',
    body: [
      {
        heading: "Deleted now, for good:",
        items: [
          plural(d.students, "student", "students") + ": their names and join records",
          plural(d.emotion_buckets, "stored time bucket", "stored time buckets") + " per student",
          plural(d.class_buckets, "class-level time bucket", "class-level time buckets"),
          plural(d.consent_records, "consent record", "consent records"),
          plural(d.alerts, "alert", "alerts"),
        ],
      },
      {
        heading: "Kept:",
        items: [
          "the session itself (title, teacher, times), listed as ended, with nobody in it" +
            (d.ended_at ? "" : "; it ends now"),
          "an audit entry recording this erasure with the counts above",
        ],
      },
    ],
    confirm: "Erase the session's data",
  });
  if (!yes) return;
  const del = await A.call("/api/admin/sessions/" + encodeURIComponent(id) + "/data", { method: "DELETE" });
  if (!del) return;
  if (!del.ok) {
    statusEl.textContent = CP.errorText(del, "Couldn't erase (HTTP " + del.status + ").");
    return;
  }
  await search('The data of "' + d.title + '" was erased; the audit log records it.');
});

async function search(message) {
  const params = new URLSearchParams();
  if (sessionSelect.value) params.set("session", sessionSelect.value);
  const name = nameInput.value.trim();
  if (name) params.set("name", name);
  statusEl.textContent = "Searching…";
  const r = await A.call("/api/admin/students?" + params.toString());
  if (!r) return;
  if (!r.ok) {
    statusEl.textContent = CP.errorText(r, "Couldn't search (HTTP " + r.status + ").");
    return;
  }
  tbody.replaceChildren.apply(
    tbody,
    r.data.map(function (st) {
      const erase = A.button(
        "Erase…",
        function () {
          eraseStudent(st);
        },
        "small danger",
      );
      erase.setAttribute("aria-label", "Erase " + st.display_name + " (" + st.session_title + ")");
      const stored =
        plural(st.emotion_buckets, "bucket", "buckets") +
        ", " +
        plural(st.consent_records, "consent record", "consent records") +
        ", " +
        plural(st.alerts, "alert", "alerts");
      const tr = A.row(
        [
          st.display_name + (st.withdrawn_at ? " (withdrawn)" : ""),
          st.session_title,
          st.teacher_email,
          CP.formatTime(st.joined_at, true),
          stored,
          erase,
        ],
        true,
      );
      tr.dataset.studentId = st.id;
      return tr;
    }),
  );
  const found = r.data.length ? plural(r.data.length, "student", "students") + " found." : "No student matches.";
  statusEl.textContent = message ? message + " " + found : found;
}

form.addEventListener("submit", function (event) {
  event.preventDefault();
  search();
});

loadSessions();
