/* Live teacher dashboard: one tile per student from the live WebSocket, the class's current
 * distribution, a five-minute timeline sampled from the tiles, and, while the policy observes
 * attention, how many face the screen now and over the session. The stored history is the
 * history page's (linked from the page head).
 * The page's entry module; each job lives in its own module beside it. */

import { applyAlert, loadAlerts } from "./dashboard/alerts.js";
import { scheduleDistribution, setupCharts, startTimeline } from "./dashboard/charts.js";
import { renderFacingPanel, startFacing } from "./dashboard/facing.js";
import { foldClassInfo } from "./dashboard/panels.js";
import { applyClassUpdate, applyPolicy } from "./dashboard/policy.js";
import { sessionId, sessionPath, state } from "./dashboard/state.js";
import { startStreamStats } from "./dashboard/stream_stats.js";
import {
  clearTiles,
  ensureStudent,
  refreshTiles,
  renderTile,
  showCalibration,
  updateCount,
} from "./dashboard/tiles.js";
import { copyText, setError, showQr } from "./lib/dom.js";
import { errorText, teacherApi, toLogin } from "./lib/http.js";
import { reconnectingSocket, wsUrl } from "./lib/socket.js";
import { formatTime } from "./lib/wording.js";

const connState = document.getElementById("conn-state");
const errorBox = document.getElementById("dashboard-error");

function applySnapshot(msg) {
  if (Array.isArray(msg.labels) && msg.labels.length) state.labels = msg.labels.slice();
  state.calibration = msg.calibration || null;
  showCalibration();
  clearTiles();
  (msg.students || []).forEach((st) => {
    const s = ensureStudent(st.student_id, st.display_name, foldClassInfo);
    s.withdrawn = Boolean(st.withdrawn);
    s.presence = st.presence || null;
    s.emotion = st.emotion || null;
    s.emotionAt = Date.now();
    renderTile(s);
  });
  updateCount();
  setupCharts();
  scheduleDistribution();
}

function applyUpdate(msg) {
  if (!msg.student_id) return;
  const s = ensureStudent(msg.student_id, msg.display_name, foldClassInfo);
  if (msg.type === "presence") {
    if (!s.presence || msg.t >= s.presence.t) s.presence = msg;
    if (msg.presence === "withdrawn") {
      s.withdrawn = true;
      s.emotion = null; // nothing of a withdrawn student's estimate is kept, even in memory
    }
  } else if (!s.withdrawn && (!s.emotion || msg.t >= s.emotion.t)) {
    s.emotion = msg;
    s.emotionAt = Date.now(); // this browser's clock: staleness must not depend on the server's
  }
  renderTile(s);
  scheduleDistribution();
}

// --- live socket -----------------------------------------------------------------------------
function setConn(connection, text) {
  connState.dataset.state = connection;
  connState.textContent = connection === "open" ? "live" : text;
}

function sessionEnded() {
  document.querySelector(".join-panel").hidden = true;
  const meta = document.getElementById("session-meta");
  if (!/ended/.test(meta.textContent)) meta.textContent += " · ended";
}

const live = reconnectingSocket({
  url: () => wsUrl("/ws/sessions/" + encodeURIComponent(sessionId) + "/live"),
  ping: "ping",
  onState: setConn,
  onMessage: (event) => {
    let msg;
    try {
      msg = JSON.parse(event.data);
    } catch {
      return; // "pong"
    }
    if (msg.type === "snapshot") {
      live.recovered(); // only a connection that delivered data counts as recovered
      setError(errorBox, "");
      applySnapshot(msg);
      applyPolicy(msg.policy, msg.class);
      loadAlerts();
    } else if (msg.type === "student" || msg.type === "presence") {
      applyUpdate(msg);
    } else if (msg.type === "alert") {
      applyAlert(msg);
    } else if (msg.type === "policy") {
      applyPolicy(msg);
    } else if (msg.type === "class") {
      applyClassUpdate(msg);
    } else if (msg.type === "session_ended") {
      sessionEnded();
    } else if (msg.type === "error") {
      setError(errorBox, msg.message || "Server error.");
    }
  },
  onClose: (event) => {
    if (event.code === 4401) {
      toLogin();
      return false;
    }
    if (event.code === 4403 || event.code === 4404) {
      setConn("closed", "no access");
      setError(
        errorBox,
        event.code === 4403 ? "You don't have access to this session's live data." : "This session doesn't exist.",
      );
      return false;
    }
    return true;
  },
});

// --- session details, join link and QR -------------------------------------------------------
async function loadSession() {
  let result;
  try {
    result = await teacherApi(sessionPath);
  } catch {
    setError(errorBox, "Can't reach the server.");
    return true; // the socket's backoff takes over
  }
  if (!result) return false;
  if (result.status === 403 || result.status === 404) {
    setError(errorBox, result.status === 404 ? "This session doesn't exist." : "This session isn't yours.");
    setConn("closed", "no access");
    return false;
  }
  if (!result.ok) {
    setError(errorBox, errorText(result, "Couldn't load the session."));
    return true;
  }
  const s = result.data;
  document.getElementById("session-title").textContent = s.title;
  document.title = s.title + " · ClassPulse";
  document.getElementById("session-meta").textContent =
    "Started " + formatTime(s.created_at, true) + (s.ended_at ? " · ended " + formatTime(s.ended_at, true) : "");
  const link = document.getElementById("join-link");
  link.href = s.join_url;
  link.textContent = s.join_url;
  document.getElementById("copy-join").onclick = (event) => {
    copyText(s.join_url, event.currentTarget);
  };
  document.getElementById("show-qr").onclick = () => {
    showQr(s.join_url);
  };
  const qr = document.getElementById("join-qr");
  qr.onload = () => {
    qr.hidden = false;
  };
  qr.onerror = () => {
    qr.hidden = true;
  };
  qr.src = "/qr.svg?data=" + encodeURIComponent(s.join_url);
  if (s.ended_at) sessionEnded();
  return true;
}

// --- start -----------------------------------------------------------------------------------
setInterval(() => {
  refreshTiles();
  renderFacingPanel();
}, 1000);
startTimeline();
startFacing();
setupCharts();
updateCount();
loadSession().then((go) => {
  if (go) live.start();
  if (go) startStreamStats();
});
