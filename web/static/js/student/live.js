/* The student's socket: the server's config, rate changes and acks in; camera state, stats
 * and the frames out (camera.js); this student's own live updates; expiry and take-over. */

import { edge, median, renderCapture, sendingFaces, startEdge, tuneDetector } from "../edge_capture.js";
import { setError, show } from "../lib/dom.js";
import { api } from "../lib/http.js";
import { reconnectingSocket, tokenProtocols, wsUrl } from "../lib/socket.js";
import { awayText, facingText, studentView } from "../lib/wording.js";
import { scheduleCapture, setButtons, stopCamera } from "./camera.js";
import { nextConfig } from "./config.js";
import { counts, renderCounts } from "./counts.js";
import { applyPolicy, loadSoFar } from "./privacy.js";
import { $, root, STORE_KEY, state } from "./state.js";

const STATS_EVERY_MS = 5000;
const PRESENCE_TEXT = {
  present: "connected",
  waiting: "not connected",
  no_face: "no face",
  camera_off: "camera off",
  disconnected: "disconnected",
  withdrawn: "withdrawn",
};
const connState = $("conn-state");
const streamError = $("stream-error");
const selfState = { presence: null, emotion: null }; // latest updates about this student

function setConn(connection, text) {
  connState.dataset.state = connection;
  connState.textContent = text;
}

export function sendJson(message) {
  const ws = live.open();
  if (ws) ws.send(JSON.stringify(message));
}

function applyConfig(msg) {
  state.config = nextConfig(state.config, msg);
  if (typeof msg.emotion_mode === "string") state.policyMode = msg.emotion_mode; // the newest word on it
  state.configured = true;
  state.configSeen = true;
  if (state.config.capture === "edge") startEdge();
  if (edge.detector) tuneDetector(edge.detector);
  renderCapture();
  scheduleCapture();
}

// Backpressure: the server asks for a lower rate while its workers are behind (or this page
// exceeds the cap), and for the normal rate again once they caught up.
function applyRate(msg) {
  const fps = Number(msg.fps);
  if (!Number.isFinite(fps) || fps < 0) return;
  state.config = Object.assign({}, state.config, { fps: fps });
  connState.title =
    msg.reason && msg.reason !== "normal" ? "server asked for " + fps + " frames/s (" + msg.reason + ")" : "";
  scheduleCapture();
}

setInterval(() => {
  const ws = live.open();
  if (!ws || state.capturedSinceReport === 0) return;
  // What this page sends (and, in edge capture, how long its detector takes; after a
  // fallback, why it sends frames instead).
  const stats = { type: "stats", captured: state.capturedSinceReport, capture: sendingFaces() ? "edge" : "frames" };
  if (sendingFaces() && edge.recent.length) stats.detector_ms = Math.round(median(edge.recent) * 100) / 100;
  if (edge.reason) stats.fallback = edge.reason;
  ws.send(JSON.stringify(stats));
  state.capturedSinceReport = 0;
}, STATS_EVERY_MS);

function renderSelf() {
  const v = studentView(selfState.presence, selfState.emotion, false);
  const emotion = $("self-emotion");
  emotion.dataset.emotion = v.emotion || "none";
  emotion.textContent = v.emotion || "—";
  $("self-confidence").textContent = v.emotion && v.confidence !== null ? Math.round(v.confidence * 100) + " %" : "—";
  const face = $("self-presence");
  face.dataset.presence = v.presence;
  if (v.presence === "present" && v.faces !== null) {
    face.textContent = v.faces > 0 ? "face seen" : "no face";
  } else if (v.presence === "present" && state.stream) {
    face.textContent = "waiting for the first result";
  } else {
    face.textContent = PRESENCE_TEXT[v.presence] || v.presence;
  }
  // The same words the teacher's tile shows.
  const e = selfState.emotion;
  const span = Number(root.dataset.attentionWindow) || null;
  const seen = v.presence === "present" && e ? [facingText(e.facing_share, span), awayText(e.away_s)] : [];
  $("self-facing").textContent = seen.filter(Boolean).join(", ") || "—";
}

function onSelf(msg) {
  // The gateway forwards this student's LiveUpdates with their own type moved to "kind".
  if (msg.kind === "presence") {
    if (!selfState.presence || msg.t >= selfState.presence.t) selfState.presence = msg;
  } else if (!selfState.emotion || msg.t >= selfState.emotion.t) {
    selfState.emotion = msg;
  }
  renderSelf();
  if (msg.presence === "withdrawn" && !state.finished) stopAll(true); // e.g. from another tab
}

function onAck(msg) {
  state.ackSeq = Math.max(state.ackSeq, Number(msg.seq) || 0);
  state.lastAckAt = Date.now();
  if (msg.ok) {
    counts.acked += 1;
  } else {
    counts.dropped += 1;
    const reason = String(msg.reason || "other");
    counts.droppedBy[reason] = (counts.droppedBy[reason] || 0) + 1;
    $("frames-dropped").title = msg.reason ? "last reason: " + msg.reason : "";
    if (msg.reason === "crops_not_allowed" || msg.reason === "presence_only") {
      applyPolicy({ emotion_mode: "off" }); // changed meanwhile
    } else if (msg.reason === "edge_required" && state.config.frames_allowed) {
      state.config = Object.assign({}, state.config, { frames_allowed: false }); // the server says so
      renderCapture();
    }
  }
  renderCounts();
}

export const live = reconnectingSocket({
  url: () => wsUrl("/ws/student"),
  protocols: () => tokenProtocols(state.join.token),
  ping: JSON.stringify({ type: "ping" }),
  onState: setConn,
  onOpen: (ws) => {
    state.configured = false;
    state.sentSeq = 0;
    state.ackSeq = 0;
    state.encoding = false;
    setError(streamError, "");
    sendJson({ type: "camera", state: state.stream ? "on" : "off" });
    // The server sends its config first; if it doesn't, go on with the defaults.
    setTimeout(() => {
      if (live.open() !== ws || state.configured) return;
      state.configured = true;
      state.configSeen = true;
      renderCapture();
    }, 2000);
  },
  onMessage: (event) => {
    if (typeof event.data !== "string") return;
    let msg;
    try {
      msg = JSON.parse(event.data);
    } catch {
      return;
    }
    if (msg.type === "ack") onAck(msg);
    else if (msg.type === "rate") applyRate(msg);
    else if (msg.type === "config") {
      live.recovered(); // the server accepted this connection
      applyConfig(msg);
    } else if (msg.type === "self") onSelf(msg);
    else if (msg.type === "policy") {
      applyPolicy(msg);
      loadSoFar(); // what is kept about the student may change with the policy
    } else if (msg.type === "session_ended") state.sessionOver = true;
    else if (msg.type === "error") setError(streamError, msg.message || "Server error.");
  },
  onClose: (event) => {
    state.encoding = false;
    if (state.finished) return false;
    if (event.reason === "withdrawn") {
      stopAll(true);
      return false;
    }
    if (state.sessionOver || event.reason === "session ended") {
      expire("This session has ended. Thank you for taking part.", "session ended");
      return false;
    }
    if (event.code === 4409) {
      // A newer socket of this student took over (another tab or window: app/students.py).
      // Stop without reconnecting, or two tabs would take the class from each other; the join
      // is kept, so reloading this tab continues the class here.
      state.finished = true;
      stopCamera(false);
      live.stop();
      setConn("closed", "open in another tab");
      setError(
        streamError,
        "This class is open in another tab or window, so this page stopped. Reload this page to continue here instead.",
      );
      setButtons();
      return false;
    }
    if (event.code === 4401 || event.code === 4403 || event.code === 4404) {
      expire("This join link has expired or is no longer valid. Rejoin to continue.", "link expired — rejoin");
      return false;
    }
    return true;
  },
});

export function connect() {
  if (!state.finished && state.join) live.start();
}

function expire(message, connection) {
  state.finished = true;
  stopCamera(false);
  live.stop();
  sessionStorage.removeItem(STORE_KEY);
  setConn("expired", connection);
  $("expired-text").textContent = message;
  show($("expired-step"), true);
  setButtons();
}

// --- withdraw --------------------------------------------------------------------------------
/** Camera off, socket closed for good, stored token gone: nothing more is sent. */
function stopAll(recorded) {
  state.finished = true;
  stopCamera(false);
  live.stop(1000, "withdrawn");
  sessionStorage.removeItem(STORE_KEY);
  setConn("closed", "analysis stopped");
  selfState.presence = { presence: "withdrawn", t: Date.now() / 1000 };
  renderSelf();
  setButtons();
  if (!recorded) {
    $("withdrawn-text").textContent =
      "Your camera is off and nothing more is sent. The server couldn't be reached to record the withdrawal: please tell your teacher.";
  }
  show($("withdrawn-step"), true);
}

export async function withdraw() {
  $("withdraw").disabled = true;
  let recorded = false;
  try {
    const result = await api("/api/student/withdraw", { method: "POST", token: state.join.token, body: {} });
    recorded = result.ok;
  } catch {
    recorded = false;
  }
  const ws = live.open();
  if (!recorded && ws) {
    ws.send(JSON.stringify({ type: "withdraw" }));
    recorded = true;
  }
  stopAll(recorded);
}
