/* The open alerts (aggregator/alerts.py), opened and closed by live messages. */

import { show } from "../lib/dom.js";
import { teacherApi } from "../lib/http.js";
import { formatTime } from "../lib/wording.js";
import { sessionPath } from "./state.js";

const openAlerts = new Map(); // alert id -> alert

function renderAlerts() {
  const list = document.getElementById("alerts");
  const items = Array.from(openAlerts.values()).sort((a, b) =>
    String(a.started_at).localeCompare(String(b.started_at)),
  );
  list.replaceChildren(
    ...items.map((a) => {
      const li = document.createElement("li");
      li.className = "alert-item";
      li.dataset.rule = a.rule;
      li.dataset.alertId = String(a.id);
      const when = document.createElement("span");
      when.className = "muted";
      when.textContent = "since " + formatTime(a.started_at) + " · ";
      const text = document.createElement("span");
      text.textContent = a.message;
      li.append(when, text);
      return li;
    }),
  );
  document.getElementById("alert-count").textContent = String(items.length);
  show(document.getElementById("no-alerts"), items.length === 0);
}

/** A live "alert" message: opened or closed. */
export function applyAlert(msg) {
  if (!msg.alert) return;
  if (msg.state === "open") openAlerts.set(msg.alert.id, msg.alert);
  else openAlerts.delete(msg.alert.id);
  renderAlerts();
}

/** The open alerts as stored (after each snapshot: a reconnect may have missed messages). */
export async function loadAlerts() {
  let result;
  try {
    result = await teacherApi(sessionPath + "/alerts?open=1");
  } catch {
    return; // the next snapshot (reconnect) tries again
  }
  if (!result || !result.ok || !Array.isArray(result.data)) return;
  openAlerts.clear();
  result.data.forEach((a) => {
    openAlerts.set(a.id, a);
  });
  renderAlerts();
}
