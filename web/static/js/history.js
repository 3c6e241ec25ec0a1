/* A session's history: summary, class expression mix and presence over time, the share facing
 * the screen (when the rows carry attention), alerts, and a per-student drill-down (when the
 * organisation's policy shows per-student data: estimates, or attention). */
import * as CP from "./lib/all.js";
import { areaLayer, chartsAvailable, LEGEND_BOTTOM, SHARE_AXIS, shareLine } from "./lib/charts.js";
import { facingRowsText } from "./lib/wording.js";

const root = document.getElementById("history");
const sessionId = root.dataset.sessionId;
const sessionPath = "/api/sessions/" + encodeURIComponent(sessionId);
const statusEl = document.getElementById("history-status");
const errorBox = document.getElementById("history-error");
let studentChart = null;
let studentFacingChart = null;
const FACING_COLOR = "#1565c0";

function colorOf(label) {
  return CP.emotionColor(label);
}

function duration(seconds) {
  const m = Math.floor(seconds / 60);
  return m >= 60 ? Math.floor(m / 60) + " h " + (m % 60) + " min" : m + " min " + Math.round(seconds % 60) + " s";
}

function mixChart(canvas, labels, rows) {
  return new Chart(canvas, {
    type: "line",
    data: {
      labels: rows.map((r) => CP.formatTime(r.bucket_start)),
      datasets: labels.map((label, i) =>
        Object.assign(
          areaLayer(
            label,
            i,
            colorOf(label),
            rows.map((r) => (r.probs ? r.probs[label] || 0 : null)),
            "b3",
          ),
          { spanGaps: false },
        ),
      ),
    },
    options: {
      animation: false,
      maintainAspectRatio: false,
      interaction: { mode: "index", intersect: false },
      scales: {
        x: { ticks: { maxTicksLimit: 8, autoSkip: true } },
        y: Object.assign({ stacked: true }, SHARE_AXIS),
      },
      plugins: { legend: LEGEND_BOTTOM },
    },
  });
}

/** Whether the API sent the share facing the screen for any row (none while attention is off). */
function hasFacing(rows) {
  return rows.some((r) => typeof r.facing_share === "number");
}

function facingCell(r) {
  return typeof r.facing_share === "number" ? CP.pct(r.facing_share) : "—";
}

function facingChart(canvas, rows) {
  const data = rows.map((r) => (typeof r.facing_share === "number" ? r.facing_share : null));
  return new Chart(canvas, {
    type: "line",
    data: {
      labels: rows.map((r) => CP.formatTime(r.bucket_start)),
      datasets: [shareLine("share facing the screen", FACING_COLOR, data)],
    },
    options: {
      animation: false,
      maintainAspectRatio: false,
      scales: { x: { ticks: { maxTicksLimit: 8, autoSkip: true } }, y: SHARE_AXIS },
      plugins: { legend: { display: false } },
    },
  });
}

function renderSummary(data) {
  const s = data.summary;
  const figures = [
    ["Duration", duration(s.duration_s)],
    ["Students joined", s.students_joined],
    ["Seen on camera", s.students_seen],
    ["Peak present", s.peak_present],
    ["Frames analysed", s.frames + " (" + s.frames_with_face + " with a face)"],
  ];
  if (data.policy.emotion_mode !== "off") {
    // Under "off" there are no expressions to sum up.
    figures.push(
      ["Most frequent class expression", s.dominant || "—"],
      ["Negative expressions (share)", typeof s.negative_share === "number" ? CP.pct(s.negative_share) : "—"],
    );
  }
  if (typeof s.facing_share === "number") figures.push(["Facing the screen (observed frames)", CP.pct(s.facing_share)]);
  figures.push(["Alerts", s.alerts]);
  const dl = document.getElementById("summary");
  dl.replaceChildren();
  figures.forEach(function (f) {
    const wrap = document.createElement("div");
    const dt = document.createElement("dt");
    const dd = document.createElement("dd");
    dt.textContent = f[0];
    dd.textContent = String(f[1]);
    dd.dataset.figure = f[0];
    wrap.append(dt, dd);
    dl.appendChild(wrap);
  });
}

function renderPolicy(data) {
  const note = document.getElementById("policy-note");
  const p = data.policy;
  if (p.emotion_mode === "aggregate_only") {
    note.textContent =
      "Class aggregates only (organisation policy): no per-student view, and time buckets with fewer than " +
      p.min_group_size +
      " students present show no expressions.";
  } else if (p.emotion_mode === "off") {
    note.textContent = p.attention
      ? "Emotion inference is off (organisation policy): presence and whether heads face the screen only."
      : "Emotion inference is off (organisation policy): presence only.";
  }
  CP.show(note, p.emotion_mode !== "per_student");
  CP.show(document.getElementById("mix-section"), p.emotion_mode !== "off"); // no expressions to chart
}

// How far the estimates can be trusted, from the model's calibration metadata (the workers
// publish it; the history endpoint passes it on): never a fixed sentence.
function renderCalibration(c, mode) {
  let note = document.getElementById("calibration-note");
  if (!note) {
    note = document.createElement("p");
    note.id = "calibration-note";
    note.className = "muted";
    const anchor = document.getElementById("policy-note");
    anchor.parentNode.insertBefore(note, anchor.nextSibling);
  }
  if (!c || !c.calibrated) {
    note.textContent =
      "Expressions: estimate (not calibrated). A percentage is the model's own score, not how often it is right.";
  } else if (typeof c.uncertain_below === "number" && typeof c.accuracy_above === "number") {
    note.textContent =
      "Expressions: estimate, calibrated: right about " +
      CP.pct(c.accuracy_above) +
      " of the time at a confidence of " +
      CP.pct(c.uncertain_below) +
      " or more on " +
      c.dataset +
      " (" +
      c.size +
      " images); the figures below are averages of such estimates.";
  } else {
    note.textContent =
      "Expressions: estimate, calibrated on " +
      c.dataset +
      " (" +
      c.size +
      " images, accuracy " +
      CP.pct(c.accuracy) +
      " there); the figures below are averages of such estimates.";
  }
  note.hidden = mode === "off"; // presence only: no estimates to qualify
}

function renderAlerts(alerts) {
  const list = document.getElementById("alert-list");
  list.replaceChildren();
  if (!alerts.length) {
    const li = document.createElement("li");
    li.className = "muted";
    li.textContent = "No alerts in this session.";
    list.appendChild(li);
    return;
  }
  alerts.forEach(function (a) {
    const li = document.createElement("li");
    li.className = "alert-item";
    li.dataset.rule = a.rule;
    const when = document.createElement("span");
    when.className = "muted";
    when.textContent = CP.formatTime(a.started_at) + " – " + (a.ended_at ? CP.formatTime(a.ended_at) : "open") + " · ";
    const text = document.createElement("span");
    text.textContent = a.message;
    li.append(when, text);
    list.appendChild(li);
  });
}

function renderTable(labels, rows) {
  const facing = hasFacing(rows);
  CP.fillTable(
    document.getElementById("class-table"),
    ["time", "present", "frames", "with face"].concat(labels, facing ? ["facing the screen"] : []),
    rows.map((r) =>
      [CP.formatTime(r.bucket_start), r.students_present, r.frames, r.frames_with_face].concat(
        labels.map((l) => (r.probs ? CP.pct(r.probs[l] || 0) : r.suppressed ? "hidden" : "—")),
        facing ? [facingCell(r)] : [],
      ),
    ),
  );
}

/** The class's share facing the screen per bucket, with its numbers in words beside it. */
function renderFacing(rows) {
  const on = hasFacing(rows);
  CP.show(document.getElementById("facing-section"), on);
  if (!on) return;
  document.getElementById("facing-text").textContent = facingRowsText(rows);
  if (chartsAvailable()) facingChart(document.getElementById("facing-chart"), rows);
}

function renderStudentFacing(rows) {
  const on = hasFacing(rows);
  CP.show(document.getElementById("student-facing"), on);
  document.getElementById("student-facing-text").textContent = on ? facingRowsText(rows) : "";
  if (studentFacingChart) studentFacingChart.destroy();
  studentFacingChart = null;
  if (on && chartsAvailable()) studentFacingChart = facingChart(document.getElementById("student-facing-chart"), rows);
}

function setupStudents(data) {
  const perStudent = data.policy.emotion_mode === "per_student";
  if (!(perStudent || data.policy.attention) || !data.students.length) return;
  const section = document.getElementById("student-section");
  const select = document.getElementById("student-select");
  data.students.forEach(function (s) {
    const option = document.createElement("option");
    option.value = s.student_id;
    option.textContent = s.display_name;
    select.appendChild(option);
  });
  section.hidden = false;
  select.addEventListener("change", async function () {
    const st = document.getElementById("student-status");
    if (!select.value) return;
    st.textContent = "Loading…";
    const result = await CP.teacherApi(sessionPath + "/history/students/" + encodeURIComponent(select.value));
    if (!result) return;
    if (!result.ok) {
      st.textContent = CP.errorText(result, "Couldn't load this student's timeline.");
      return;
    }
    const rows = result.data.rows || [];
    st.textContent = rows.length
      ? rows.length + " time buckets for " + result.data.display_name + "."
      : "No stored data for " + result.data.display_name + ".";
    renderStudentFacing(rows);
    const mix = perStudent && rows.some((r) => r.probs);
    document.getElementById("student-chart-box").hidden = !mix;
    if (studentChart) studentChart.destroy();
    studentChart = null;
    if (chartsAvailable() && mix) studentChart = mixChart(document.getElementById("student-chart"), data.labels, rows);
  });
}

async function load() {
  let result;
  try {
    result = await CP.teacherApi(sessionPath + "/history");
  } catch (_err) {
    CP.setError(errorBox, "Can't reach the server.");
    return;
  }
  if (!result) return;
  if (!result.ok) {
    statusEl.textContent = "";
    CP.setError(
      errorBox,
      result.status === 404 ? "This session doesn't exist." : CP.errorText(result, "Couldn't load the history."),
    );
    return;
  }
  const data = result.data;
  const s = data.session;
  document.getElementById("session-title").textContent = s.title + " · history";
  document.title = s.title + " · history · ClassPulse";
  document.getElementById("session-meta").textContent =
    "Started " +
    CP.formatTime(s.created_at, true) +
    (s.ended_at ? " · ended " + CP.formatTime(s.ended_at, true) : " · still running");
  document.getElementById("live-link").href = "/sessions/" + encodeURIComponent(sessionId);
  ["csv", "json", "pdf"].forEach(function (fmt) {
    document.getElementById("report-" + fmt).href = sessionPath + "/report?format=" + fmt;
  });
  renderPolicy(data);
  renderCalibration(data.calibration, data.policy.emotion_mode);
  renderSummary(data);
  renderAlerts(data.alerts || []);
  const rows = data.rows || [];
  // Under "off" there are no expressions: no column of them, not even empty ones.
  renderTable(data.policy.emotion_mode === "off" ? [] : data.labels, rows);
  renderFacing(rows);
  setupStudents(data);
  statusEl.textContent = rows.length
    ? rows.length + " time buckets of " + data.bucket_seconds + " s."
    : "No stored data for this session yet.";
  if (!chartsAvailable() || !rows.length) return;
  mixChart(document.getElementById("mix-chart"), data.labels, rows);
  new Chart(document.getElementById("presence-chart"), {
    type: "bar",
    data: {
      labels: rows.map((r) => CP.formatTime(r.bucket_start)),
      datasets: [{ label: "students present", data: rows.map((r) => r.students_present), backgroundColor: "#1565c0" }],
    },
    options: {
      animation: false,
      maintainAspectRatio: false,
      scales: {
        x: { ticks: { maxTicksLimit: 8, autoSkip: true } },
        y: { beginAtZero: true, ticks: { precision: 0 } },
      },
      plugins: { legend: { display: false } },
    },
  });
}

load();
