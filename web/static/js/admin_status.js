/* System status: polls GET /api/admin/status every few seconds (not while the tab is hidden
 * or paused) and shows health, workers, streams, counters per window and models. Only changes
 * of the overall state are announced to screen readers, not every refresh. */

import * as A from "./admin_common.js";
import * as CP from "./lib/all.js";

const EVERY_MS = 5000;
const alertEl = document.getElementById("status-alert");
const updated = document.getElementById("status-updated");
const pause = document.getElementById("status-pause");
let paused = false;
let timer = null;
let lastSummary = "";

function dl(el, pairs) {
  el.replaceChildren();
  pairs.forEach(function (pair) {
    const dt = document.createElement("dt");
    dt.textContent = pair[0];
    const dd = document.createElement("dd");
    dd.textContent = pair[1] === null || pair[1] === undefined ? "—" : String(pair[1]);
    if (pair[2]) dd.dataset.state = pair[2];
    el.append(dt, dd);
  });
}

function ms(value) {
  return value === null || value === undefined ? "—" : Math.round(value) + " ms";
}

function seconds(value) {
  return value === null || value === undefined ? "unknown" : value + " s ago";
}

function summary(s) {
  const problems = [];
  if (s.database !== "ok") problems.push("the database is unavailable");
  if (s.redis !== "ok") problems.push("Redis is unavailable");
  else if (!s.workers.length) problems.push("no inference worker is alive");
  if (s.redis === "ok" && !s.aggregators.length) problems.push("no aggregator is alive");
  return problems.length ? "Attention: " + problems.join("; ") + "." : "All services are up.";
}

function countersTable(s) {
  const windows = s.windows || [];
  const names = Object.keys(s.counters || {}).sort();
  const headers = ["Counter"].concat(
    windows.map(function (w) {
      const label = "Last " + Math.round(w.window_s / 60) + " min";
      return w.covered_s + 1 < w.window_s ? label + " (" + Math.round(w.covered_s) + " s so far)" : label;
    }),
    ["Total"],
  );
  const rows = names.map(function (name) {
    return A.row(
      [name].concat(
        windows.map(function (w) {
          return w.counts[name] === undefined ? 0 : w.counts[name];
        }),
        [s.counters[name]],
      ),
      true,
    );
  });
  if (!rows.length) rows.push(A.row(["No counters yet: no frame has been processed."], true));
  A.fill(document.getElementById("counters-table"), headers, rows);
}

function render(s) {
  dl(document.getElementById("health-list"), [
    ["Database", s.database + (s.database_ms !== null ? " (" + ms(s.database_ms) + ")" : ""), s.database],
    ["Schema revision", s.schema_revision],
    ["Redis", s.redis + (s.redis_ms !== null ? " (" + ms(s.redis_ms) + ")" : ""), s.redis],
    ["Inference workers alive", s.workers.length, s.workers.length ? "ok" : "unavailable"],
    ["Aggregators alive", s.aggregators.length, s.aggregators.length ? "ok" : "unavailable"],
  ]);
  const dropped = Object.keys(s.gateway_dropped)
    .filter(function (k) {
      return s.gateway_dropped[k] > 0;
    })
    .map(function (k) {
      return k + " " + s.gateway_dropped[k];
    });
  dl(document.getElementById("flow-list"), [
    ["Worker lag (slowest)", ms(s.worker_lag_ms)],
    ["Target frame rate", s.target_fps + " fps"],
    ["Backpressure", s.pressure],
    ["Refused by this gateway", dropped.length ? dropped.join(", ") : "none"],
  ]);
  const models = Object.keys(s.models)
    .sort()
    .filter(function (k) {
      return k !== "providers";
    })
    .map(function (k) {
      let value = s.models[k];
      if (k === "labels") {
        try {
          value = JSON.parse(value).join(", ");
        } catch (_err) {
          /* shown as published */
        }
      } else if (k === "calibration") {
        try {
          const c = JSON.parse(value); // worker/classifier.py published(): a summary, not the table
          value = c.calibrated
            ? "calibrated on " +
              c.dataset +
              " (" +
              c.size +
              " images): T = " +
              c.temperature +
              ", ECE " +
              c.ece_before.toFixed(3) +
              " → " +
              c.ece_after.toFixed(3) +
              ", accuracy " +
              Math.round(c.accuracy * 100) +
              " %"
            : "not calibrated (" + c.why + ")";
        } catch (_err) {
          /* shown as published */
        }
      }
      return [k, value];
    });
  models.push([
    "Execution providers",
    s.execution_providers ? s.execution_providers.join(", ") : "not published by the workers (see their logs)",
  ]);
  dl(document.getElementById("models-list"), models);

  const services = s.workers
    .map(function (w) {
      return A.row([w.name, "inference worker", seconds(w.last_beat_s_ago), ms(w.lag_ms)], true);
    })
    .concat(
      s.aggregators.map(function (w) {
        return A.row([w.name, "aggregator", seconds(w.last_beat_s_ago), "—"], true);
      }),
    );
  if (!services.length) services.push(A.row(["None alive", "", "", ""], true));
  A.fill(
    document.getElementById("services-table"),
    ["Name", "Kind", "Last heartbeat", "Frame age when read"],
    services,
  );

  A.fill(
    document.getElementById("streams-table"),
    ["Stream", "Length (backlog)", "Consumer group", "Pending (unacknowledged)", "Not yet read"],
    s.streams.map(function (st) {
      return A.row(
        [st.stream, st.length, st.group, st.pending === null ? "—" : st.pending, st.lag === null ? "—" : st.lag],
        true,
      );
    }),
  );
  countersTable(s);
  updated.textContent = "Updated " + CP.formatTime(s.at) + ".";
  const text = summary(s);
  if (text !== lastSummary) {
    alertEl.textContent = text;
    alertEl.dataset.state = text.indexOf("Attention") === 0 ? "problem" : "ok";
    lastSummary = text;
  }
}

async function poll() {
  clearTimeout(timer);
  if (paused || document.hidden) return;
  try {
    const r = await A.call("/api/admin/status");
    if (!r) return; // login or admins only: stop polling
    if (r.ok) render(r.data);
    else updated.textContent = CP.errorText(r, "Couldn't read the status (HTTP " + r.status + ").");
  } catch (_err) {
    const text = "Can't reach the gateway.";
    if (text !== lastSummary) alertEl.textContent = lastSummary = text;
  }
  timer = setTimeout(poll, EVERY_MS);
}

pause.addEventListener("click", function () {
  paused = !paused;
  pause.setAttribute("aria-pressed", paused ? "true" : "false");
  if (!paused) poll();
});
document.addEventListener("visibilitychange", function () {
  if (!document.hidden) poll();
});

poll();
