/* The class's current mix (bar chart) and the last five minutes sampled from it (stacked area).
 * Chart.js is the vendored classic script (window.Chart); without it the counts still show. */

import { areaLayer, chartsAvailable, LEGEND_BOTTOM } from "../lib/charts.js";
import { classCounts } from "./logic.js";
import { state } from "./state.js";
import { colorOf, viewOf } from "./tiles.js";

const SAMPLE_MS = 2000;
const TIMELINE_POINTS = 150; // 5 minutes at one sample every 2 s

let distributionChart = null;
let timelineChart = null;
let distributionPending = false;

function currentCounts() {
  return classCounts(Array.from(state.students.values(), viewOf), state.labels, state.policy);
}

export function setupCharts() {
  if (!chartsAvailable()) return;
  const labels = state.labels;
  if (distributionChart) distributionChart.destroy();
  distributionChart = new window.Chart(document.getElementById("distribution-chart"), {
    type: "bar",
    data: {
      labels: labels,
      datasets: [{ label: "students", data: labels.map(() => 0), backgroundColor: labels.map(colorOf) }],
    },
    options: {
      animation: false,
      maintainAspectRatio: false,
      plugins: { legend: { display: false } },
      scales: { y: { beginAtZero: true, ticks: { precision: 0 } } },
    },
  });
  if (timelineChart) timelineChart.destroy();
  timelineChart = new window.Chart(document.getElementById("timeline-chart"), {
    type: "line",
    data: {
      labels: [],
      datasets: labels.map((label, i) =>
        Object.assign(areaLayer(label, i, colorOf(label), [], "99"), { tension: 0.2 }),
      ),
    },
    options: {
      animation: false,
      maintainAspectRatio: false,
      interaction: { mode: "index", intersect: false },
      scales: {
        x: { ticks: { maxTicksLimit: 6, autoSkip: true } },
        y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } },
      },
      plugins: { legend: LEGEND_BOTTOM },
    },
  });
}

export function scheduleDistribution() {
  if (distributionPending) return;
  distributionPending = true;
  // Many updates per second arrive in a full class: redraw at most once per frame.
  requestAnimationFrame(() => {
    distributionPending = false;
    const c = currentCounts();
    document.getElementById("uncertain-count").textContent = String(c.uncertain);
    document.getElementById("noface-count").textContent = String(c.noFace);
    if (distributionChart) {
      distributionChart.data.datasets[0].data = state.labels.map((label) => c.counts[label]);
      distributionChart.update("none");
    }
  });
}

function sampleTimeline() {
  if (!timelineChart) return;
  const c = currentCounts();
  const data = timelineChart.data;
  data.labels.push(new Date().toLocaleTimeString());
  data.datasets.forEach((ds) => {
    ds.data.push(c.counts[ds.label] || 0);
  });
  if (data.labels.length > TIMELINE_POINTS) {
    data.labels.shift();
    data.datasets.forEach((ds) => {
      ds.data.shift();
    });
  }
  timelineChart.update("none");
}

export function startTimeline() {
  setInterval(sampleTimeline, SAMPLE_MS);
}
