/* The class panel "Facing the screen" (docs/attention.md): how many of the students whose head
 * orientation is observed now face the screen, and that share over the session, sampled while
 * this page is open, in bounded memory (attention.js). Shown only while the policy observes
 * attention; the chart has its numbers in words beside it. */

import { chartsAvailable, SHARE_AXIS, shareLine } from "../lib/charts.js";
import { show } from "../lib/dom.js";
import { facingClassText, formatTime, pct, spanText } from "../lib/wording.js";
import { addSample, classFacing, NOT_OBSERVED, newSeries, observed, seriesRange, shareOf } from "./attention.js";
import { root, state } from "./state.js";

const SAMPLE_MS = 5000;
// 20 minutes at one sample per 5 s before neighbours first merge; a whole school day later a
// point covers a few minutes, and the page never holds more than this many.
const MAX_POINTS = 240;
const LINE_COLOR = "#1565c0";

const panel = document.getElementById("facing-panel");
const nowText = document.getElementById("facing-now");
const chartText = document.getElementById("facing-chart-text");
let series = newSeries(MAX_POINTS);
let chart = null;

/** Whether the panel and the tiles' lines show: the policy's word when one came, else
 * whether any student's update carries an observation (the server withholds them when off). */
function attentionShown() {
  if (state.attention !== null) return state.attention;
  for (const s of state.students.values()) if (s.attention && observed(s.attention)) return true;
  return false;
}

function countNow() {
  return classFacing(Array.from(state.students.values(), (s) => s.attention || NOT_OBSERVED));
}

/** Every second, and on a policy change: the panel's words for the class now. */
export function renderFacingPanel() {
  const on = attentionShown();
  root.dataset.attention = on ? "on" : "off";
  show(panel, on);
  if (!on) return;
  const c = countNow();
  const text = c.observed ? facingClassText(c.facing, c.observed) : "No student's head orientation is observed now.";
  if (nowText.textContent !== text) nowText.textContent = text;
  if (!series.points.length && c.observed) sample(); // the chart starts with the first observation
}

function describe() {
  const r = seriesRange(series);
  const step = spanText((SAMPLE_MS / 1000) * series.span);
  chartText.textContent = r
    ? "From " +
      formatTime(r.from / 1000) +
      " to " +
      formatTime(r.to / 1000) +
      ": latest " +
      pct(r.latest) +
      " facing the screen, lowest " +
      pct(r.low) +
      ", highest " +
      pct(r.high) +
      " (one point per " +
      step +
      ", while this page is open)."
    : "Sampled every " + step + " while this page is open; nobody's head orientation observed yet.";
}

function draw() {
  if (!chartsAvailable()) return;
  const labels = series.points.map((p) => formatTime(p.t / 1000));
  const line = shareLine("share facing the screen", LINE_COLOR, series.points.map(shareOf));
  if (!chart) {
    chart = new window.Chart(document.getElementById("facing-chart"), {
      type: "line",
      data: { labels: labels, datasets: [line] },
      options: {
        animation: false,
        maintainAspectRatio: false,
        scales: { x: { ticks: { maxTicksLimit: 4, autoSkip: true } }, y: SHARE_AXIS },
        plugins: { legend: { display: false } },
      },
    });
    return;
  }
  chart.data.labels = labels;
  chart.data.datasets[0] = line;
  chart.update("none");
}

function sample() {
  if (!attentionShown()) return;
  addSample(series, Date.now(), countNow());
  describe();
  draw();
}

/** The policy stopped observing attention: what this page sampled goes too. */
export function forgetFacing() {
  series = newSeries(MAX_POINTS);
  describe();
  draw();
}

export function startFacing() {
  describe();
  setInterval(sample, SAMPLE_MS);
}
