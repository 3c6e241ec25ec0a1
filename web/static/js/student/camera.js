/* The camera and the capture loop: one capture per 1/fps, sent as one binary message, with at
 * most max_in_flight unacknowledged; when the window is full the page skips the capture instead
 * of queueing frames. A capture is a JPEG (capture "frames") or the faces message edge.js builds
 * on this device (edge capture). */

import {
  cameraSize,
  EDGE_MAX_SIDE,
  edge,
  fallBack,
  noteDetectorTime,
  renderCapture,
  sendingFaces,
} from "../edge_capture.js";
import { setError, show } from "../lib/dom.js";
import { counts, renderCounts } from "./counts.js";
import { live, sendJson } from "./live.js";
import { $, analysing, state } from "./state.js";

const ACK_TIMEOUT_MS = 10000; // a full window with no ack this long means a stuck socket
const video = $("preview");
const canvas = document.createElement("canvas");
const streamError = $("stream-error");
let starting = null;
let captureTimer = null;

export function setButtons() {
  const stream = state.stream;
  $("start").disabled = Boolean(stream) || state.finished || !analysing();
  $("stop").disabled = !stream;
  $("withdraw").disabled = state.finished;
  $("camera-state").textContent = !analysing()
    ? "You're attending without analysis: the camera stays off and nothing is sent."
    : stream
      ? "Camera on."
      : "Camera off: nothing is sent.";
  show($("capture-mode"), analysing() && !state.finished);
}

export function startCamera() {
  if (state.stream || state.finished || !analysing()) return Promise.resolve();
  if (!starting)
    starting = openCamera().finally(() => {
      starting = null;
    });
  return starting;
}

// Browsers give the camera only to a secure context (HTTPS, or this computer itself): over
// plain HTTP say so as the page opens, with the HTTPS link the server knows, not at "Start".
const insecure = window.isSecureContext === false;
if (insecure) {
  $("insecure-url").textContent = location.origin;
  show($("insecure-context"), true);
}

async function openCamera() {
  if (insecure) {
    setError(
      streamError,
      "The camera is blocked: this page was opened over plain HTTP, not HTTPS. See the note at the top of the page.",
    );
    return;
  }
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    setError(streamError, "This browser can't share the camera on this page (it needs HTTPS).");
    return;
  }
  let media;
  try {
    const size = cameraSize();
    media = await navigator.mediaDevices.getUserMedia({
      audio: false,
      video: { width: { ideal: size.width }, height: { ideal: size.height }, facingMode: "user" },
    });
  } catch (err) {
    const denied = err && (err.name === "NotAllowedError" || err.name === "SecurityError");
    setError(
      streamError,
      denied
        ? "Camera permission was denied. You can follow the class without it, or allow the camera in the browser's site settings and press Start."
        : "Couldn't start the camera: " + (err?.message || err),
    );
    return;
  }
  if (state.finished) {
    media.getTracks().forEach((t) => {
      t.stop();
    });
    return;
  }
  state.stream = media;
  setError(streamError, "");
  renderCapture();
  video.srcObject = media;
  video.play().catch(() => {
    /* autoplay of a muted preview is allowed; ignore a rejected play() */
  });
  media.getVideoTracks().forEach((track) => {
    track.addEventListener("ended", () => stopCamera()); // unplugged or permission revoked
  });
  sendJson({ type: "camera", state: "on" });
  setButtons();
  scheduleCapture();
}

export function stopCamera(notify) {
  clearTimeout(captureTimer);
  if (state.stream) {
    state.stream.getTracks().forEach((t) => {
      t.stop();
    });
    state.stream = null;
    video.srcObject = null;
    if (notify !== false) sendJson({ type: "camera", state: "off" });
  }
  renderCapture();
}

// --- capture loop ----------------------------------------------------------------------------
function currentFps() {
  const fps = Number(state.config.fps);
  const max = Number(state.config.max_fps) || fps;
  return Math.min(fps, max);
}

export function scheduleCapture() {
  clearTimeout(captureTimer);
  if (!state.stream) return;
  const fps = currentFps();
  // fps 0 means the server paused this page: check again in a second for a new config.
  captureTimer = setTimeout(captureTick, fps > 0 ? 1000 / fps : 1000);
}

function captureTick() {
  scheduleCapture(); // keep the cadence independent of how long encoding takes
  const ws = live.open();
  const config = state.config;
  if (!state.stream || !ws || !state.configured || !(currentFps() > 0)) return;
  // Edge capture asked for and the detector still loading: nothing leaves the device yet.
  if (config.capture === "edge" && edge.state === "loading") return;
  // Edge capture required and this page can't run the detector: nothing leaves the device.
  if (!sendingFaces() && !config.frames_allowed) return;
  state.capturedSinceReport += 1; // a capture due now, whether it is sent or skipped below
  const inFlight = state.sentSeq - state.ackSeq;
  if (state.encoding || inFlight >= config.max_in_flight) {
    counts.skipped += 1;
    renderCounts();
    if (inFlight > 0 && Date.now() - state.lastAckAt > ACK_TIMEOUT_MS) live.drop(4000, "ack timeout");
    return;
  }
  if (video.readyState < 2 || !video.videoWidth) return;
  if (sendingFaces()) captureFaces(ws);
  else captureJpeg(ws);
}

/** The box JPEG frames are fitted into: under the policy "off" only what presence needs (the
 * server's face detector sees no more of a frame), else config.width x height. */
export function frameBox() {
  const config = state.config;
  return state.policyMode === "off"
    ? { width: config.presence_width, height: config.presence_height }
    : { width: config.width, height: config.height };
}

/** Capture "frames": the picture, fitted into frameBox(), as one JPEG. */
function captureJpeg(ws) {
  // Fit the camera picture into the box without distorting faces.
  const box = frameBox();
  const scale = Math.min(box.width / video.videoWidth, box.height / video.videoHeight, 1);
  canvas.width = Math.round(video.videoWidth * scale);
  canvas.height = Math.round(video.videoHeight * scale);
  canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
  state.encoding = true;
  canvas.toBlob(
    (blob) => {
      state.encoding = false;
      if (!blob || live.open() !== ws || !state.stream) return;
      sendCapture(ws, blob);
    },
    "image/jpeg",
    state.config.jpeg_quality,
  );
}

/** Edge capture: the faces found on this device, at the camera's own resolution, and their
 * grey crops (none under the policy "off"), as one faces message. */
function captureFaces(ws) {
  const Edge = window.ClassPulseEdge;
  const config = state.config;
  const scale = Math.min(EDGE_MAX_SIDE / Math.max(video.videoWidth, video.videoHeight), 1);
  const w = Math.round(video.videoWidth * scale);
  const h = Math.round(video.videoHeight * scale);
  if (edge.canvas.width !== w || edge.canvas.height !== h) {
    edge.canvas.width = w;
    edge.canvas.height = h;
  }
  edge.context.drawImage(video, 0, 0, w, h);
  const pixels = edge.context.getImageData(0, 0, w, h).data;
  const capturedAt = Date.now();
  const detector = edge.detector;
  state.encoding = true;
  let found = null;
  let crops = null;
  detector
    .detect(pixels, w, h)
    .then((result) => {
      found = result;
      if (edge.detector !== detector) return null; // fell back meanwhile
      crops =
        state.policyMode === "off"
          ? null
          : Edge.cropFaces(pixels, w, h, found.faces, config.crop_size, config.crop_scale);
      return Edge.packCrops(crops, config.crop_size);
    })
    .then((packed) => {
      state.encoding = false;
      if (edge.detector !== detector) return;
      const message = Edge.encodeFaces(w, h, found.faces, crops, config.crop_size, found.ms, capturedAt, packed);
      noteDetectorTime(found.ms);
      if (live.open() === ws && state.stream) sendCapture(ws, message);
    })
    .catch((err) => {
      state.encoding = false;
      fallBack("error", err);
    });
}

function sendCapture(ws, data) {
  if (state.sentSeq === state.ackSeq) state.lastAckAt = Date.now(); // window was empty: start the ack clock now
  ws.send(data); // one binary message per frame
  state.sentSeq += 1;
  counts.sent += 1;
  renderCounts();
}
