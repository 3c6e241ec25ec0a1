/* Chart.js (vendored, the classic script web/static/vendor/chart.umd.js) as every page draws
 * with it; without it the pages still show their numbers and tables. */

export function chartsAvailable() {
  return typeof window.Chart === "function";
}

/** The legend under a chart with several labels. */
export const LEGEND_BOTTOM = { position: "bottom", labels: { boxWidth: 12 } };

/** One label's layer of a stacked area chart: the first fills down to the axis, each next one
 * down to the layer below. ``alpha``: the fill's opacity as two hex digits. */
export function areaLayer(label, i, color, data, alpha) {
  return {
    label: label,
    data: data,
    borderColor: color,
    backgroundColor: color + alpha,
    fill: i === 0 ? "origin" : "-1",
    pointRadius: 0,
    borderWidth: 1,
  };
}

/** A y axis of shares (0..1) labelled in percent. */
export const SHARE_AXIS = { min: 0, max: 1, ticks: { callback: (v) => Math.round(v * 100) + "%" } };

/** One share series (0..1 per point, null for a gap: nothing observed there) as a line. */
export function shareLine(label, color, data) {
  return {
    label: label,
    data: data,
    borderColor: color,
    backgroundColor: color,
    spanGaps: false,
    pointRadius: data.length > 60 ? 0 : 2, // a short series (or one point) still shows
    borderWidth: 2,
    tension: 0.2,
  };
}
