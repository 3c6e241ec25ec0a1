/* The stored history of this session, on request: dominant emotions per time bucket as a
 * stacked bar chart and a table (the full viewer is the history page). */

import { chartsAvailable, LEGEND_BOTTOM } from "../lib/charts.js";
import { fillTable, show } from "../lib/dom.js";
import { errorText, teacherApi } from "../lib/http.js";
import { formatTime } from "../lib/wording.js";
import { groupBuckets } from "./logic.js";
import { sessionPath, state } from "./state.js";
import { colorOf } from "./tiles.js";

let historyChart = null;

function renderHistory(data) {
  const histLabels = Array.isArray(data.labels) && data.labels.length ? data.labels : state.labels;
  const columns = histLabels.concat(["uncertain"]);
  const rows = groupBuckets(data.buckets || [], columns);
  const status = document.getElementById("history-status");
  if (!rows.length) {
    status.textContent = "No stored data for this session yet.";
    return;
  }
  status.textContent = rows.length + " buckets of " + (data.bucket_seconds || "?") + " s.";

  fillTable(
    document.getElementById("history-table"),
    ["time", "students", "frames", "with face"].concat(columns),
    rows.map((g) => [formatTime(g.start), g.students, g.frames, g.withFace].concat(columns.map((c) => g.counts[c]))),
  );
  show(document.getElementById("history-details"), true);

  if (!chartsAvailable()) return;
  show(document.getElementById("history-chart-box"), true);
  if (historyChart) historyChart.destroy();
  historyChart = new window.Chart(document.getElementById("history-chart"), {
    type: "bar",
    data: {
      labels: rows.map((g) => formatTime(g.start)),
      datasets: columns.map((label) => ({
        label: label,
        data: rows.map((g) => g.counts[label]),
        backgroundColor: label === "uncertain" ? "#bdbdbd" : colorOf(label),
      })),
    },
    options: {
      animation: false,
      maintainAspectRatio: false,
      scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } },
      plugins: { legend: LEGEND_BOTTOM },
    },
  });
}

document.getElementById("load-history").addEventListener("click", async (event) => {
  const button = event.currentTarget;
  const status = document.getElementById("history-status");
  button.disabled = true;
  status.textContent = "Loading…";
  try {
    const result = await teacherApi(sessionPath + "/timeline");
    if (!result) return;
    if (!result.ok) {
      status.textContent = errorText(result, "Couldn't load the history (HTTP " + result.status + ").");
      return;
    }
    renderHistory(result.data || {});
    button.textContent = "Reload history";
  } catch {
    status.textContent = "Can't reach the server.";
  } finally {
    button.disabled = false;
  }
});
